"""The prepared format every net reads: per split ``<split>_images.npy`` (uint8, (N, H, W) or
(N, H, W, 3)) and ``<split>_labels.npy`` (int64), and ``classes.json`` (a list of
{"name", ...} in label order). Images are memory-mapped on reading, so a split of any size
costs no memory until batches are gathered from it."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_internals.core.atomic import atomic_path, write_json
from cnn_internals.core.errors import UserError


@dataclass(frozen=True)
class Split:
    images: np.ndarray            # uint8 (N, H, W) or (N, H, W, C), memory-mapped
    labels: np.ndarray            # int64 (N,)
    classes: tuple                # readable class names, in label order

    def __len__(self) -> int:
        return len(self.labels)


def write_split(out_dir: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``<split>_images.npy`` and ``<split>_labels.npy`` in ``out_dir``, for data small enough
    to hold in memory (a large dataset fills a ``numpy.lib.format.open_memmap`` instead)."""
    for suffix, array, dtype in (("images", images, np.uint8), ("labels", labels, np.int64)):
        with atomic_path(Path(out_dir) / f"{split}_{suffix}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=dtype))


def write_classes(out_dir: Path, classes: list) -> None:
    write_json(Path(out_dir) / "classes.json", classes)


def read_classes(directory: Path) -> list:
    """classes.json's entries ({"name", ...} in label order); FileNotFoundError, ValueError as json raises."""
    entries = json.loads((Path(directory) / "classes.json").read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise ValueError("not a list of {\"name\", ...}")
    return entries


def read_split(directory: Path, split: str, fix: str) -> Split:
    """``split`` from a prepared folder; every problem is a UserError ending in ``fix``."""
    directory = Path(directory)
    try:
        images = np.load(directory / f"{split}_images.npy", mmap_mode="r")
        labels = np.load(directory / f"{split}_labels.npy")
        classes = tuple(c["name"] for c in json.loads((directory / "classes.json").read_text()))
    except FileNotFoundError as err:
        raise UserError(f"{err.filename} missing: {fix}") from None
    except (ValueError, OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise UserError(f"{directory} is unreadable ({' '.join(str(err).split())}): {fix}") from None
    if (images.dtype != np.uint8 or labels.dtype != np.int64 or images.ndim not in (3, 4)
            or labels.ndim != 1 or len(images) != len(labels)):
        raise UserError(f"{directory}: the {split} arrays have the wrong type or shape: {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise UserError(f"{directory}: {split} labels outside the {len(classes)} classes: {fix}")
    return Split(images=images, labels=labels, classes=classes)


def splits_in(directory: Path) -> tuple:
    """The splits a prepared folder holds, by its ``<split>_labels.npy`` files: the training
    split first, then the held-out one (MNIST's test, an image folder's val)."""
    found = sorted(path.name.removesuffix("_labels.npy") for path in Path(directory).glob("*_labels.npy"))
    return tuple(sorted(found, key=lambda split: split != "train"))


def fingerprint(directory: Path) -> str:
    """sha256 over every file of a prepared folder: what a checkpoint's tag records of the
    data, so a resumed run never mixes epochs over different data."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()
