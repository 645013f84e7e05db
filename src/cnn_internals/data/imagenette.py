"""Imagenette (fast.ai's ``imagenette2-320.tgz``): one image folder (``imagefolder.py``), named here.

The archive holds ``imagenette2-320/{train,val}/<wnid>/<name>.JPEG`` (320 px on the short side)
and ``imagenette2-320/noisy_imagenette.csv`` (ignored: not an image). params.yaml gives it as
``data.imagenette`` of kind imagefolder with ``root``, ``classes`` and ``wnid_aliases`` as
``LAYOUT`` below has them, so a wrong archive (another root, an eleventh class) is refused.
``prepare_imagenette`` is that preparation for an archive at any path (tests, benchmarks).
"""

from pathlib import Path

import numpy as np

from cnn_internals.core.errors import UserError
from cnn_internals.data.imagefolder import DEFAULT_SIZE, SPLITS, Layout, Source, decode_image, prepare_folder
from cnn_internals.data.prepared import read_split

ARCHIVE = "imagenette2-320.tgz"
ROOT = "imagenette2-320"
# (wnid, readable name), sorted by wnid: a label is an index into this tuple.
CLASSES: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench"),
    ("n02102040", "English springer"),
    ("n02979186", "cassette player"),
    ("n03000684", "chain saw"),
    ("n03028079", "church"),
    ("n03394916", "French horn"),
    ("n03417042", "garbage truck"),
    ("n03425413", "gas pump"),
    ("n03445777", "golf ball"),
    ("n03888605", "parachute"),
)
# Imagenette's parachute folder is named n03888605, which is ImageNet's "parallel bars"; its
# images are parachutes, ImageNet's n03888257 (logit 701), which is what scores them.
WNID_ALIASES = {"n03888605": "n03888257"}
LAYOUT = Layout(DEFAULT_SIZE, None, ROOT, tuple(wnid for wnid, _ in CLASSES), WNID_ALIASES)
_REPREPARE = "run `dvc repro prepare@imagenette`"

__all__ = ["ARCHIVE", "CLASSES", "DEFAULT_SIZE", "LAYOUT", "ROOT", "SPLITS", "WNID_ALIASES", "decode",
           "load_split", "prepare_imagenette"]


def decode(data: bytes, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One JPEG as the prepared split stores it (``imagefolder.decode_image`` without the mode)."""
    return decode_image(data, size)[0]


def prepare_imagenette(archive: Path, out_dir: Path, size: int = DEFAULT_SIZE, workers: int | None = None) -> dict:
    """Decode ``archive`` into ``out_dir`` as prepare@imagenette does; return report.json's
    content: {"size", split: {"images", "skipped": [{"path", "reason"}]}}."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    source = Source(Path(archive), "tgz", "delete data/raw/imagenette and rerun `dvc repro download@imagenette`",
                    "Imagenette", "imagenette")
    layout = Layout(size, None, LAYOUT.root, LAYOUT.classes, LAYOUT.wnid_aliases)
    return prepare_folder(source, Path(out_dir), layout, workers).report


def load_split(prepared_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images: read-only uint8 memory map (N, S, S, 3), labels: int64 (N,)) of a prepared
    split; a missing or malformed folder is a one-line UserError saying how to rebuild it."""
    if split not in SPLITS:
        raise UserError(f"unknown Imagenette split {split!r}: use one of {', '.join(SPLITS)}")
    data = read_split(Path(prepared_dir), split, _REPREPARE)
    shape = data.images.shape
    if data.images.ndim != 4 or shape[1] != shape[2] or shape[3] != 3 or len(data.classes) != len(CLASSES):
        raise UserError(
            f"{prepared_dir}: {split} images of shape {shape} with {len(data.classes)} classes are not "
            f"Imagenette's (N, S, S, 3) images of ten classes: {_REPREPARE}"
        )
    return data.images, data.labels
