"""Datasets: downloads (mirrors, md5, retry, atomic), the readers of their formats, and the
uint8 arrays every net reads its batches from."""

from pathlib import Path


def raw_dir(dataset: str) -> Path:
    """Where download@<dataset> puts the raw files."""
    return Path("data/raw") / dataset


def prepared_dir(dataset: str) -> Path:
    """Where prepare@<dataset> puts the uint8 arrays, labels and class list."""
    return Path("data/prepared") / dataset


def stats_dir(dataset: str) -> Path:
    """Where stats@<dataset> puts the dataset statistics."""
    return Path("data/stats") / dataset
