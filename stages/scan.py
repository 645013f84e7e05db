"""Stage `scan@<dataset>`: what a dataset's source holds now, so that `dvc repro` sees a local
folder change (data/manifest.py). Runs on every `dvc repro` (always changed); it reads names,
sizes and mtimes only, and writes the same bytes when nothing changed, so nothing after it
reruns then.

    python stages/scan.py --dataset imagenette

Writes data/manifests/<dataset>.json: for a local folder its file count, total size and a
sha256 over every file's path, size and mtime; for a local archive its size and mtime; for a
URL or MNIST only the source, which download@<dataset> declares anyway.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.config import node
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import load_params, params_name
from cnn_internals.data.manifest import manifest_path, write_manifest
from cnn_internals.pipeline.cli import cli, stage_parser


@cli
def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="which dataset (a key of data in params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    # only the two keys this stage declares (validate has checked the whole block)
    kind, source = node(params, f"data.{args.dataset}.kind", None), node(params, f"data.{args.dataset}.source", None)
    if kind is None:
        raise UserError(f"{params_name(params)}: no dataset {args.dataset!r} under data")
    found = write_manifest(manifest_path(args.dataset), kind, source if kind == "imagefolder" else None,
                           f"{params_name(params)}: data.{args.dataset}.source")
    folder = found.get("folder")
    print(f"{args.dataset}: " + (f"{folder['files']} files, {folder['bytes']} bytes in {source}" if folder else
                                  f"source {found['source'] or kind}"))


if __name__ == "__main__":
    sys.exit(main())
