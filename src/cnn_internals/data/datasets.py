"""Datasets by name: each split as uint8 images and int64 labels, in dataset order."""

from . import mnist

# name -> (raw_dir, split) -> (images uint8 (N, H, W[, C]), labels int64 (N,))
LOADERS = {"mnist": mnist.load_mnist}
SPLITS = {"mnist": ("train", "test")}


def load_split(dataset, raw_dir, split):
    return LOADERS[dataset](raw_dir, split)
