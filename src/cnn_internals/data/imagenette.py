"""Imagenette (fast.ai's ``imagenette2-320.tgz``) as the uint8 arrays every net reads.

The archive holds ``imagenette2-320/{train,val}/<wnid>/<name>.JPEG`` (320 px on the short
side) and ``imagenette2-320/noisy_imagenette.csv``. ``prepare_imagenette`` reads it as a stream
twice and never extracts a file: pass 1 reads only the headers, refuses unsafe or unexpected
members before anything is written, and lists the images; pass 2 decodes them on all cores
into ``<split>_images.npy`` memory maps, each JPEG resized to ``size`` on its short side and
centre-cropped to ``size`` x ``size`` (Krizhevsky et al. 2012, section 2: 256, then 224 crops
at training time). Rows are in member-path order, so the same archive gives the same bytes
whatever order its members are in and however many workers decode it.
"""

import collections
import gzip
import io
import itertools
import os
import tarfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageFile
from pydantic import model_validator
from tqdm import tqdm

from cnn_internals.core.atomic import atomic_dir, write_json
from cnn_internals.core.config import Section, read_section
from cnn_internals.core.errors import UserError
from cnn_internals.data.download import DownloadEntry, check_listed, fetch
from cnn_internals.data.prepared import read_split, write_classes

ARCHIVE = "imagenette2-320.tgz"
ROOT = "imagenette2-320"
CSV_NAME = "noisy_imagenette.csv"
SPLITS = ("train", "val")
DEFAULT_SIZE = 256
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
_LABELS = {wnid: label for label, (wnid, _) in enumerate(CLASSES)}
_READ_CHUNK = 1 << 20
_BATCH = 8  # JPEGs per task sent to a decoding process: fewer, larger messages
_BATCHES_PER_WORKER = 2  # tasks in flight per decoding process: one decoding, one waiting
_TRIM_ROWS = 64  # rows copied at a time when dropping skipped images (64 x 192 KiB at 256 px)
_REDOWNLOAD = "delete data/raw/imagenette and rerun `dvc repro download@imagenette`"
_REPREPARE = "run `dvc repro prepare@imagenette`"


def _one_line(text) -> str:
    return " ".join(str(text).split())


# --- Reading the archive -------------------------------------------------------------------

def _read_archive(archive: Path, wanted):
    """Yield (member, its bytes if ``wanted(member)`` else None) for every member, in tar order.

    tarfile alone stops at the end-of-archive blocks and never reads the gzip trailer, so a
    .tgz cut in its last bytes would pass; reading the gzip stream to its end makes gzip check
    the CRC and length. Errors of the file itself become one-line UserErrors; errors of the
    caller (raised while it handles a member) pass through untouched.
    """
    try:
        with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r|", bufsize=_READ_CHUNK) as tar:
            for member in tar:
                data = tar.extractfile(member).read() if wanted(member) else None
                yield member, data
            while gz.read(_READ_CHUNK):
                pass
    except FileNotFoundError:
        raise UserError(f"{archive} not found: run `dvc repro download@imagenette`") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        reason = _one_line(err) or type(err).__name__
        raise UserError(
            f"{archive} is not a readable .tgz ({reason}); the file is truncated or corrupt: {_REDOWNLOAD}"
        ) from None


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could touch anything outside its folder, or None when it cannot."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a path with a '..' component"
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if member.ischr():
        return "a character device"
    if member.isblk():
        return "a block device"
    if member.isfifo():
        return "a fifo"
    if not (member.isfile() or member.isdir()):
        return f"a special file (tar type {member.type!r})"
    return None


def _in_layout(parts: tuple[str, ...], is_dir: bool) -> bool:
    """Whether a folder or a non-image file with these path parts belongs to imagenette2-320."""
    rest = parts[1:]
    if parts[:1] != (ROOT,):
        return False
    if not is_dir:
        return rest == (CSV_NAME,)
    return not rest or (rest[0] in SPLITS and (len(rest) == 1 or (len(rest) == 2 and rest[1] in _LABELS)))


def _check_member(archive: Path, member: tarfile.TarInfo) -> tuple[str, int] | None:
    """(split, label) of an image member, None for a folder of the layout or the CSV (both
    skipped); a one-line UserError naming the member when it is unsafe or misplaced."""
    problem = _unsafe(member)
    if problem:
        raise UserError(
            f"{archive}: member {member.name!r} is {problem}; the archive is unsafe or corrupt: {_REDOWNLOAD}"
        )
    parts = PurePosixPath(member.name).parts
    if member.isfile() and len(parts) == 4 and parts[0] == ROOT and parts[1] in SPLITS and parts[2] in _LABELS:
        return parts[1], _LABELS[parts[2]]
    if _in_layout(parts, member.isdir()):
        return None
    raise UserError(
        f"{archive}: member {member.name!r} is outside the Imagenette layout "
        f"({ROOT}/train|val/<one of the ten wnids>/<image>); the archive is not "
        f"imagenette2-320 or is corrupt: {_REDOWNLOAD}"
    )


def _index_archive(archive: Path) -> dict[str, list[tuple[str, int]]]:
    """Pass 1, headers only: every member checked, then {split: [(member path, label), ...]}
    sorted by path. Raises before the caller has written anything."""
    found = {split: [] for split in SPLITS}
    seen = set()
    for member, _ in _read_archive(archive, wanted=lambda member: False):
        place = _check_member(archive, member)
        if place is None:
            continue
        if member.name in seen:  # a second copy would silently replace the first on extraction
            raise UserError(f"{archive}: member {member.name!r} appears twice; the archive is corrupt: {_REDOWNLOAD}")
        seen.add(member.name)
        split, label = place
        found[split].append((member.name, label))
    for split, items in found.items():
        if not items:
            raise UserError(
                f"{archive}: no images under {ROOT}/{split}/; the archive is not imagenette2-320: {_REDOWNLOAD}"
            )
        items.sort()
    return found


# --- Decoding ------------------------------------------------------------------------------

def decode_image(data: bytes, size: int = DEFAULT_SIZE) -> np.ndarray:
    """One JPEG as the AlexNet paper's input: RGB, resized so its short side is ``size``, then
    the central ``size`` x ``size`` crop; uint8 (size, size, 3). Bad data raises (Pillow's errors)."""
    # Pillow's default, stated here because a cut-off JPEG must fail, not come out half grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return fit_image(image, size)


def fit_image(image: Image.Image, size: int = DEFAULT_SIZE) -> np.ndarray:
    """A decoded image as the prepared split stores it (``decode_image``); also how
    ``cnn_internals.explain`` brings a user's photo to the nets of this dataset."""
    rgb = image.convert("RGB")  # Imagenette holds grayscale and CMYK JPEGs too
    width, height = rgb.size
    short = min(width, height)
    # The long side is floored, as torchvision's Resize(256) does: 320x427 -> 256x341.
    new_width, new_height = size * width // short, size * height // short
    # Pillow's BILINEAR widens its filter to the whole footprint of an output pixel when it
    # shrinks (antialiased, as torchvision's antialias=True); reducing_gap=None: no JPEG draft
    # or box pre-reduction, so the pixels depend on the decoded image alone.
    resized = rgb.resize((new_width, new_height), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_width - size) // 2, (new_height - size) // 2  # odd leftover: floor
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def fit_photo(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """A user's photo for the nets of this dataset (``fit_image``), and no notes."""
    return fit_image(image), []


def _decode_rows(images: dict, batch: list, size: int) -> list[str | None]:
    """Decode each (split, row, JPEG bytes) of ``batch`` into ``images[split][row]``; per item
    None, or a one-line reason when the JPEG does not decode (that row is then dropped)."""
    reasons = []
    for split, row, data in batch:
        try:
            images[split][row] = decode_image(data, size)
            reasons.append(None)
        except Exception as err:  # Pillow raises many kinds on bad data (OSError, SyntaxError, ValueError...)
            reasons.append(_one_line(f"{type(err).__name__}: {err}"))
    return reasons


_worker_images = {}  # in a decoding process: {split: its own writable map of <split>_images.npy}


def _open_worker_images(paths: dict) -> None:
    """Pool initializer: each decoding process maps the output files itself, so an image goes
    straight to its row instead of back through a pipe (192 KiB each at 256 px)."""
    _worker_images.update({split: np.load(path, mmap_mode="r+") for split, path in paths.items()})


def _decode_rows_in_worker(batch: list, size: int) -> list[str | None]:
    return _decode_rows(_worker_images, batch, size)


def _batches(items, n: int):
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, n)):
        yield batch


def _decoded(jobs, images: dict, size: int, workers: int):
    """Decode each (split, row, bytes) of ``jobs`` into ``images[split][row]``; yield
    ((split, row, bytes), None or the reason it failed) for each, in the order of ``jobs``.

    With several workers the JPEGs go to a pool of processes (multiprocessing's, through
    concurrent.futures, which reports a worker that died where multiprocessing.Pool would wait
    forever) in small batches, at most two per worker in flight: however large the archive,
    memory holds only those few JPEGs.
    """
    batches = _batches(jobs, _BATCH)
    if workers == 1:
        for batch in batches:
            yield from zip(batch, _decode_rows(images, batch, size))
        return
    paths = {split: images[split].filename for split in images}
    with ProcessPoolExecutor(workers, initializer=_open_worker_images, initargs=(paths,)) as pool:
        pending = collections.deque()
        try:
            for batch in batches:
                pending.append((batch, pool.submit(_decode_rows_in_worker, batch, size)))
                if len(pending) >= _BATCHES_PER_WORKER * workers:
                    batch, future = pending.popleft()
                    yield from zip(batch, future.result())
            while pending:
                batch, future = pending.popleft()
                yield from zip(batch, future.result())
        except BrokenProcessPool:
            raise UserError(
                "a JPEG-decoding process died (out of memory?): free some memory and rerun "
                "`dvc repro prepare@imagenette`"
            ) from None
        finally:
            pool.shutdown(cancel_futures=True)


# --- Writing -------------------------------------------------------------------------------

def _trim(path: Path, full: np.ndarray, kept: np.ndarray) -> int:
    """Drop the rows of skipped images from the .npy at ``path`` (``full`` is its memory map),
    copying a few rows at a time so memory stays bounded; return the rows left.

    No ``flush`` (msync): the page cache already shows the written rows to every reader, and
    forcing gigabytes to disk here would only make the stage wait for what the kernel writes
    back anyway (no output of the pipeline is fsynced).
    """
    if kept.all():
        return len(kept)
    rows = np.flatnonzero(kept)
    trimmed = path.with_name(f".trim.{path.name}")
    out = open_memmap(trimmed, mode="w+", dtype=np.uint8, shape=(len(rows),) + full.shape[1:])
    for start in range(0, len(rows), _TRIM_ROWS):
        out[start:start + _TRIM_ROWS] = full[rows[start:start + _TRIM_ROWS]]
    del out
    os.replace(trimmed, path)
    return len(rows)


def _decode_into(archive, index, images, size, workers) -> dict[str, list[dict]]:
    """Pass 2: decode every image of ``index`` into its row of ``images``; return the skipped
    ones per split as [{"path", "reason"}]."""
    rows = {name: (split, row) for split, items in index.items() for row, (name, _) in enumerate(items)}
    skipped = {split: [] for split in index}
    jobs = ((*rows[member.name], data) for member, data in _read_archive(archive, lambda m: m.name in rows)
            if data is not None)
    done = 0
    with tqdm(total=len(rows), desc="decoding Imagenette", unit="img", disable=None) as bar:
        for (split, row, _), reason in _decoded(jobs, images, size, workers):
            if reason is not None:
                skipped[split].append({"path": index[split][row][0], "reason": reason})
            done += 1
            bar.update()
    if done != len(rows):
        raise UserError(f"{archive} changed while it was read ({done} of {len(rows)} images found): rerun the stage")
    return skipped


def _write_splits(archive, index, out, size, workers) -> dict:
    """Both splits' image and label arrays in folder ``out``; the report of what was kept."""
    images = {split: open_memmap(out / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                 shape=(len(items), size, size, 3))
              for split, items in index.items()}
    skipped = _decode_into(archive, index, images, size, workers)
    report = {"size": size}
    for split, items in index.items():
        bad = {entry["path"] for entry in skipped[split]}
        kept = np.array([name not in bad for name, _ in items])
        count = _trim(out / f"{split}_images.npy", images.pop(split), kept)
        if count == 0:
            raise UserError(f"{archive}: none of the {split} JPEGs decodes; the archive is corrupt: {_REDOWNLOAD}")
        labels = np.array([label for _, label in items], dtype=np.int64)[kept]
        np.save(out / f"{split}_labels.npy", labels, allow_pickle=False)
        report[split] = {"images": count, "skipped": sorted(skipped[split], key=lambda e: e["path"])}
    return report


def prepare_imagenette(archive: Path, out_dir: Path, size: int = DEFAULT_SIZE,
                       workers: int | None = None) -> dict:
    """Decode ``archive`` into ``out_dir`` (replaced as a whole, or left as it was on failure).

    Writes ``<split>_images.npy`` (uint8 (N, size, size, 3)), ``<split>_labels.npy`` (int64
    indices into CLASSES), ``classes.json`` and ``report.json``, and returns the report:
    {"size", split: {"images", "skipped": [{"path", "reason"}]}}. An unsafe, misplaced or
    unreadable member is a UserError before anything is written; a JPEG that does not decode
    is skipped and reported. ``workers`` decoding processes (default: every CPU).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    archive, out_dir = Path(archive), Path(out_dir)
    index = _index_archive(archive)
    workers = min(workers or os.cpu_count() or 1, sum(len(items) for items in index.values()))
    with atomic_dir(out_dir) as tmp:
        report = _write_splits(archive, index, tmp, size, workers)
        write_classes(tmp, [{"wnid": wnid, "name": name} for wnid, name in CLASSES])
        write_json(tmp / "report.json", report)
    return report


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


# --- The pipeline's stage entry points (see datasets.py) -----------------------------------

class ImagenetteConfig(Section):
    """``data.imagenette``: the archive's {url, md5, mirrors?} entry."""

    files: list[DownloadEntry]

    @model_validator(mode="after")
    def _names_the_archive(self):
        check_listed(self.files, [ARCHIVE], " (160 px is too small for 224 crops)")
        return self


def read_params(params: dict) -> ImagenetteConfig:
    """``data.imagenette``, checked."""
    return read_section(params, "data.imagenette", ImagenetteConfig)


def download(params: dict, out: Path) -> str:
    """download@imagenette: ``imagenette2-320.tgz`` from ``data.imagenette.files``, mirrors first."""
    paths = fetch([entry.as_dict() for entry in read_params(params).files], out)
    return f"fetched {', '.join(path.name for path in paths)} into {out}"


def prepare(raw_dir: Path, out_dir: Path) -> str:
    """prepare@imagenette: the archive in ``raw_dir`` as 256x256 uint8 arrays, on every core."""
    report = prepare_imagenette(Path(raw_dir) / ARCHIVE, out_dir)
    skipped = sum(len(report[split]["skipped"]) for split in SPLITS)
    note = f"; {skipped} JPEGs did not decode, listed in report.json" if skipped else ""
    return (f"Imagenette: {report['train']['images']} train and {report['val']['images']} val "
            f"images of {report['size']}x{report['size']} in {out_dir}{note}")
