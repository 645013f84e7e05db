"""Datasets: downloads (mirrors, md5, retry, atomic) and the readers of their formats."""

from pathlib import Path


def raw_dir(dataset):
    """Where download@<dataset> puts the raw files."""
    return Path("data/raw") / dataset


def stats_dir(dataset):
    """Where stats@<dataset> puts the dataset statistics."""
    return Path("data/stats") / dataset
