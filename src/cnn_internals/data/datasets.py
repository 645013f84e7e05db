"""Datasets by name: where each comes from and how it is prepared into the one format every
net reads (``prepared.py``).

A dataset is downloaded into data/raw/<name> (its files as published) and prepared into
data/prepared/<name>. Adding a dataset: a module with its ``download`` and ``prepare``, one
entry in DATASETS, its ``data.<name>`` params block, and its name in ``pipeline.datasets``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnn_internals.core.errors import UserError
from cnn_internals.data import imagenette, mnist
from cnn_internals.data.prepared import Split, read_split


@dataclass(frozen=True)
class Dataset:
    name: str
    splits: tuple                 # (training split, held-out split); test_* metrics are the latter
    read_params: Callable         # (params) -> its data.<name> section, typed and checked
    download: Callable            # (params, out dir) -> one-line summary
    prepare: Callable             # (raw dir, out dir) -> one-line summary
    photo: Callable               # (a decoded PIL image) -> (uint8 array as the splits store one, notes)
    photo_min_side: int           # a user's photo smaller than this (px, short side) is refused


DATASETS = {
    "mnist": Dataset("mnist", ("train", "test"), mnist.read_params, mnist.download, mnist.prepare,
                     mnist.fit_photo, 28),
    # 224: the nets' input crop; a smaller photo would be blown up to fill it
    "imagenette": Dataset("imagenette", ("train", "val"), imagenette.read_params, imagenette.download,
                          imagenette.prepare, imagenette.fit_photo, 224),
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def open_split(dataset: str, split: str, directory: Path) -> Split:
    """``split`` of ``dataset`` from its prepared folder: images memory-mapped, labels loaded."""
    spec = get_dataset(dataset)
    if split not in spec.splits:
        raise UserError(f"unknown {dataset} split {split!r}: use one of {', '.join(spec.splits)}")
    directory = Path(directory)
    fix = f"run `dvc repro prepare@{dataset}`"
    if not directory.exists():
        fix += f" ({dataset} must be listed in pipeline.datasets in params.yaml)"
    return read_split(directory, split, fix)
