"""Stage `scan@<dataset>`: what a dataset's source holds now, so that `dvc repro` sees a local
folder change (data/manifest.py), and what download@<dataset> is to fetch. Runs on every `dvc
repro` (always changed); it reads names, sizes and mtimes only, and writes the same bytes when
nothing changed, so nothing after it reruns then.

    python stages/scan.py --dataset imagenette

Writes data/manifests/<dataset>.json: for a local folder its file count, total size and a
sha256 over every file's path, size and mtime; for a local archive its size and mtime; and the
dataset's download spec (its source; an archive's md5|sha256 and mirrors; MNIST's files and
sample split), which is all download@<dataset> reads. It declares the whole data.<dataset>
block, which it checks, and runs every time anyway.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.params import load_params, params_name
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.manifest import manifest_path, write_manifest
from cnn_internals.pipeline.cli import cli, stage_parser


@cli
def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="which dataset (a key of data in params.yaml)")
    parser.add_argument("--out", type=user_path, help="the manifest (default data/manifests/<dataset>.json)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    dataset = get_dataset(params, args.dataset)
    source = dataset.config.source if dataset.kind.name == "imagefolder" else None
    found = write_manifest(args.out or manifest_path(args.dataset), dataset.kind.name, source, dataset.download_spec,
                           f"{params_name(params)}: data.{args.dataset}.source")
    folder = found.get("folder")
    print(f"{args.dataset}: " + (f"{folder['files']} files, {folder['bytes']} bytes in {source}" if folder else
                                  f"source {found['source'] or dataset.config.source}"))


if __name__ == "__main__":
    sys.exit(main())
