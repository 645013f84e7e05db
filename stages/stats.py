"""Stage `stats@<dataset>`: mean image, per-channel mean/std and the PCA of pixel values of a
dataset's training split, in one streaming pass with exact integer sums.

    python stages/stats.py --dataset mnist

Writes data/stats/<dataset>/ (mean_image.npy, stats.json) and metrics/<dataset>_stats.json,
a small git-tracked summary that `git diff` and `dvc metrics diff` show.
"""

import _bootstrap  # noqa: F401 -- first: this checkout's src/ on sys.path

import sys

from cnn_internals.core.atomic import atomic_dir, write_json
from cnn_internals.core.project import user_path
from cnn_internals.data.datasets import TRAIN, open_split
from cnn_internals.data.paths import prepared_dir, stats_dir, stats_metrics_path
from cnn_internals.data.statistics import image_statistics, save_statistics, summary
from cnn_internals.pipeline.cli import cli, stage_parser


@cli
def main(argv=None):
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("--dataset", required=True, help="which dataset (a key of data in params.yaml)")
    parser.add_argument("--prepared", type=user_path, help="prepared data folder (default data/prepared/<dataset>)")
    parser.add_argument("--out", type=user_path, help="output folder (default data/stats/<dataset>)")
    args = parser.parse_args(argv)
    split = open_split(args.dataset, TRAIN, args.prepared or prepared_dir(args.dataset))
    stats = image_statistics(split.images)
    with atomic_dir(args.out or stats_dir(args.dataset)) as tmp:
        save_statistics(stats, tmp)
    write_json(stats_metrics_path(args.dataset), summary(stats))
    print(f"{args.dataset}: {stats['count']} training images, pixel mean {stats['channel_mean'].round(4).tolist()}, "
          f"std {stats['channel_std'].round(4).tolist()}")


if __name__ == "__main__":
    sys.exit(main())
