"""A tiny ``imagenette2-320.tgz`` in the real archive's layout, built in a few milliseconds.

Importable from tests (tests/ is on sys.path under pytest). The layout is written out here
rather than taken from ``cnn_internals.data.imagenette``, so a mistake there cannot hide in both:

    imagenette2-320/                          (directory members included)
    imagenette2-320/noisy_imagenette.csv      path,noisy_labels_0,...,noisy_labels_50,is_valid
    imagenette2-320/{train,val}/<wnid>/<wnid>_<number>.JPEG

Each class has its own colour and stripe direction (so a net can tell them apart); images
come in several sizes, landscape and portrait, odd and even; the first image of class 1 is a
grayscale ('L') JPEG and the first of class 2 a CMYK one, as Imagenette has both. Members are
stored in a shuffled order (val before train, classes reversed, numbers unsorted) so a reader
that relies on tar order is caught. The bytes are deterministic (gzip mtime 0, fixed tar
metadata, Pillow's deterministic JPEG encoder).
"""

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

ROOT = "imagenette2-320"
WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
         "n03394916", "n03417042", "n03425413", "n03445777", "n03888605")
# (width, height): landscape, portrait, square, odd sizes, so crops have odd leftovers.
SIZES = ((96, 72), (60, 90), (81, 81), (121, 67), (67, 101), (77, 58))
# Image numbers whose string order differs from their numeric and insertion order.
NUMBERS = (9036, 10026, 517, 23, 1204, 88)
MTIME = 1_570_000_000
CSV_HEADER = "path,noisy_labels_0,noisy_labels_1,noisy_labels_5,noisy_labels_25,noisy_labels_50,is_valid"
UNSAFE_KINDS = ("absolute", "dotdot", "symlink", "hardlink", "chardev", "blockdev", "fifo")
MISPLACED_KINDS = ("unknown_wnid_folder", "unknown_wnid_file", "file_under_train", "outside_root")


class Entry(NamedTuple):
    path: str            # member path in the archive
    label: int           # index into the ten wnids (sorted)
    image: Image.Image   # the JPEG decoded back (what a reader of the archive sees), mode L, RGB or CMYK
    data: bytes          # the JPEG bytes stored in the archive


def class_image(label: int, index: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3): stripes in the class's direction over the class's colour."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = np.pi * label / 10
    phase = 0.7 * index
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / 12 + phase)
    hue = np.array([np.cos(2 * np.pi * label / 10 + k * 2 * np.pi / 3) for k in range(3)])
    colour = 128 + 100 * hue  # (3,)
    pixels = colour * (0.35 + 0.65 * stripes[..., None]) + 20 * (x / width)[..., None]
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode = kind, size, MTIME, 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def bad_member(kind: str) -> tuple[tarfile.TarInfo, bytes | None]:
    """A member for ``extra_members``: one of UNSAFE_KINDS or MISPLACED_KINDS. Unsafe ones sit
    inside the layout, so only their kind (not their place) is wrong."""
    folder = f"{ROOT}/train/{WNIDS[0]}"
    jpeg = encode(class_image(0, 99, (40, 30)), "RGB")
    specs = {
        "absolute": (f"/{folder}/evil.JPEG", tarfile.REGTYPE, {}),
        "dotdot": (f"{folder}/../../../evil.JPEG", tarfile.REGTYPE, {}),
        "symlink": (f"{folder}/link.JPEG", tarfile.SYMTYPE, {"linkname": "/etc/passwd"}),
        "hardlink": (f"{folder}/hard.JPEG", tarfile.LNKTYPE, {"linkname": f"{folder}/{WNIDS[0]}_{NUMBERS[0]}.JPEG"}),
        "chardev": (f"{folder}/null.JPEG", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}),
        "blockdev": (f"{folder}/sda.JPEG", tarfile.BLKTYPE, {"devmajor": 8, "devminor": 0}),
        "fifo": (f"{folder}/pipe.JPEG", tarfile.FIFOTYPE, {}),
        "unknown_wnid_folder": (f"{ROOT}/train/n99999999", tarfile.DIRTYPE, {}),
        "unknown_wnid_file": (f"{ROOT}/val/n99999999/n99999999_1.JPEG", tarfile.REGTYPE, {}),
        "file_under_train": (f"{ROOT}/train/stray.JPEG", tarfile.REGTYPE, {}),
        "outside_root": ("elsewhere/n01440764_1.JPEG", tarfile.REGTYPE, {}),
    }
    name, kind_byte, fields = specs[kind]
    data = jpeg if kind_byte == tarfile.REGTYPE else None
    return _info(name, kind_byte, len(data) if data else 0, **fields), data


def _images(per_class: dict) -> dict:
    """{split: [Entry]} in insertion (not sorted) order."""
    entries = {"train": [], "val": []}
    seen = set()  # classes whose first image is made: class 1's is grayscale, class 2's CMYK
    count = 0
    for split in ("train", "val"):
        offset = 0 if split == "train" else per_class["train"]
        for label, wnid in enumerate(WNIDS):
            for j in range(offset, offset + per_class[split]):
                number = NUMBERS[j % len(NUMBERS)] + 100_000 * (j // len(NUMBERS)) + 7 * label
                mode = "RGB" if label in seen else {1: "L", 2: "CMYK"}.get(label, "RGB")
                seen.add(label)
                data = encode(class_image(label, j, SIZES[count % len(SIZES)]), mode)
                count += 1
                image = Image.open(io.BytesIO(data))
                image.load()
                entries[split].append(Entry(f"{ROOT}/{split}/{wnid}/{wnid}_{number}.JPEG", label, image, data))
    return entries


def _csv(entries: dict, corrupt: str | None) -> bytes:
    lines = [CSV_HEADER]
    rows = [(e.path, WNIDS[e.label], split == "val") for split in ("train", "val") for e in entries[split]]
    if corrupt:
        rows.append((corrupt, WNIDS[3], False))
    for path, wnid, valid in rows:
        noisy_50 = WNIDS[(WNIDS.index(wnid) + 1) % 10] if path.endswith("7.JPEG") else wnid
        lines.append(f"{path.removeprefix(ROOT + '/')},{wnid},{wnid},{wnid},{wnid},{noisy_50},{valid}")
    return ("\n".join(lines) + "\n").encode()


def _members(entries: dict, corrupt: tuple[str, bytes] | None, csv: bytes) -> list:
    """(TarInfo, bytes or None) in the shuffled order described in the module docstring."""
    members = [(_info(ROOT, tarfile.DIRTYPE), None)]
    for split in ("val", "train"):
        members.append((_info(f"{ROOT}/{split}", tarfile.DIRTYPE), None))
        for wnid in reversed(WNIDS):
            members.append((_info(f"{ROOT}/{split}/{wnid}", tarfile.DIRTYPE), None))
            files = [(e.path, e.data) for e in entries[split] if e.path.split("/")[2] == wnid]
            if corrupt and corrupt[0].split("/")[1:3] == [split, wnid]:
                files.insert(len(files) // 2, corrupt)
            members.extend((_info(path, size=len(data)), data) for path, data in files)
        if split == "val":
            members.append((_info(f"{ROOT}/noisy_imagenette.csv", size=len(csv)), csv))
    return members


def build_archive(path: Path, per_class: dict | None = None, corrupt: bool = True,
                  extra_members: list | None = None) -> dict:
    """Write the archive at ``path``; return {"path", "md5", "train": [Entry], "val": [Entry],
    "corrupt": member path of the one truncated JPEG (None without it), "order": every member
    path in tar order}.

    ``per_class``: images per class, default {"train": 2, "val": 1}. ``corrupt``: add one JPEG
    cut to 60% of its bytes, in train/<4th wnid> (it must be skipped, not kept). ``extra_members``:
    (TarInfo, bytes or None) pairs appended at the end, e.g. ``bad_member("symlink")``.
    """
    per_class = {"train": 2, "val": 1, **(per_class or {})}
    entries = _images(per_class)
    bad = None
    if corrupt:
        whole = encode(class_image(3, 50, (90, 70)), "RGB")
        bad = (f"{ROOT}/train/{WNIDS[3]}/{WNIDS[3]}_777.JPEG", whole[: len(whole) * 6 // 10])
    members = _members(entries, bad, _csv(entries, bad and bad[0])) + list(extra_members or [])
    path = Path(path)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return {
        "path": path,
        "md5": hashlib.md5(path.read_bytes()).hexdigest(),
        "train": entries["train"],
        "val": entries["val"],
        "corrupt": bad and bad[0],
        "order": [info.name for info, _ in members],
    }
