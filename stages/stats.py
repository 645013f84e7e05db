"""Stage `stats@<dataset>`: mean image, per-channel mean/std and the PCA of pixel values of a
dataset's training split, into data/stats/<dataset>/ (mean_image.npy, stats.json).

    python stages/stats.py --dataset mnist
"""

from pathlib import Path

from cnn_internals.atomic import atomic_dir
from cnn_internals.data import raw_dir, stats_dir
from cnn_internals.data.datasets import LOADERS, load_split
from cnn_internals.errors import ArgumentParser, cli
from cnn_internals.stats import image_statistics, save_statistics


@cli
def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(LOADERS))
    parser.add_argument("--raw", type=Path, help="raw data folder (default data/raw/<dataset>)")
    parser.add_argument("--out", type=Path, help="output folder (default data/stats/<dataset>)")
    args = parser.parse_args(argv)
    raw = args.raw or raw_dir(args.dataset)
    out = args.out or stats_dir(args.dataset)
    images, _ = load_split(args.dataset, raw, "train")
    stats = image_statistics(images)
    with atomic_dir(out) as tmp:
        save_statistics(stats, tmp)
    print(f"{args.dataset}: {stats['count']} training images, pixel mean {stats['channel_mean'].round(4).tolist()}, "
          f"std {stats['channel_std'].round(4).tolist()}")


if __name__ == "__main__":
    main()
