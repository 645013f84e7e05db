"""Stage `prepare@<dataset>`: the raw files as the uint8 arrays every net reads.

    python stages/prepare.py --dataset imagenette      # what `dvc repro prepare@imagenette` runs

Writes data/prepared/<dataset>/: per split ``<split>_images.npy`` (uint8) and
``<split>_labels.npy`` (int64), and ``classes.json``. MNIST: the idx files decoded (47 MB).
An image folder (Imagenette, ImageNet, yours): the folder or archive read twice, never
extracted (unsafe or misplaced members refused before anything is written), every image
resized to ``size`` (256) on its short side and centre-cropped to a square (Krizhevsky et al.
2012, section 2), decoded on all cores; an image that does not decode is skipped and listed in
``report.json``. The folder appears whole or not at all.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.params import load_params
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import get_dataset
from cnn_internals.data.paths import prepared_dir, raw_dir
from cnn_internals.pipeline.cli import cli, stage_parser


@cli
def main(argv=None):
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="which dataset (a key of data in params.yaml)")
    parser.add_argument("--raw", type=user_path, help="raw data folder (default data/raw/<dataset>)")
    parser.add_argument("--out", type=user_path, help="output folder (default data/prepared/<dataset>)")
    args = parser.parse_args(argv)
    raw = args.raw or raw_dir(args.dataset)
    dataset = get_dataset(load_params(args.params), args.dataset)
    print(dataset.prepare(raw, args.out or prepared_dir(args.dataset)))


if __name__ == "__main__":
    sys.exit(main())
