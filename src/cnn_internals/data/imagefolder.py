"""Image-folder datasets (``data.<name>.kind: imagefolder``): a folder of class folders, local or
in an archive, as the uint8 arrays every net reads.

``source`` is a local folder, or an archive (``.tar``, ``.tgz``/``.tar.gz``, ``.zip``) by path
or URL, fetched by download@<name> through the same code as every download (mirrors,
``$CNN_INTERNALS_MIRROR``, resume, the ``md5`` or ``sha256`` it must give). A folder is read
where it is: download@<name> writes only a note saying so, and scan@<name> (run on every
`dvc repro`) writes a manifest of its files' paths, sizes and mtimes, so that an added or
changed image makes prepare@<name> stale (docs/datasets.md).

Layout, under the folder that holds every image (``root``: found, or given): ``train/<class>/...``
and ``val/<class>/...``, or one folder of class folders, split by ``val_fraction``: an image is
in val iff ``int(sha256(<its path relative to that folder, POSIX>)[:16], 16) / 2**64 <
val_fraction``, so adding images never moves the others. Classes are the class folders' names,
sorted (``classes`` pins the list and its order, and refuses any other folder). A class folder
may hold sub-folders; files that are not images (by suffix) are ignored and counted.

``prepare_folder`` reads the source twice and extracts nothing: pass 1 reads only names (an
archive's headers), refuses unsafe or misplaced members before anything is written, and lists
the images; pass 2 decodes them on all cores into ``<split>_images.npy`` memory maps, each
image resized to ``size`` on its short side and centre-cropped to ``size`` x ``size``
(Krizhevsky et al. 2012, section 2: 256, then 224 crops at training time). Rows are in path
order, so the same images give the same bytes whatever order an archive stores them in and
however many processes decode them. An image that does not decode is skipped and listed in
``report.json``; a grey, CMYK or palette image is converted to RGB, and the stage says how many.

Classes that are all ImageNet wnids (``imagenet.py``; Imagenette's ten, all 1,000 of ImageNet)
are named by ImageNet's class names in ``classes.json`` ({"wnid", "name"}), and a net on
``weights: imagenet`` is scored at those wnids' logits. ``wnid_aliases`` maps a folder named
with one wnid to the ImageNet class that scores it (Imagenette's parachute folder is
``n03888605``, which is ImageNet's parallel bars; its parachute is ``n03888257``): such a class
is named in classes.json by the ImageNet class that scores it.
"""

import collections
import gzip
import hashlib
import io
import itertools
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image, ImageFile
from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from cnn_internals.core.atomic import atomic_dir, write_json, write_text
from cnn_internals.core.config import Count, Section
from cnn_internals.core.errors import UserError
from cnn_internals.data.download import HASHES, Url, fetch, file_name
from cnn_internals.data.manifest import hidden, walk
from cnn_internals.data.prepared import write_classes
from cnn_internals.data.wnids import imagenet_names

SPLITS = ("train", "val")
DEFAULT_SIZE = 256
# Pillow-readable suffixes, as torchvision's ImageFolder (IMG_EXTENSIONS), compared lower-case.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"})
ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".zip")
# Top folders that name splits: a layout of train/ + val/ is read as splits; any of these in a
# folder of class folders is refused rather than read as a class.
SPLIT_NAMES = frozenset({"train", "val", "test", "valid", "validation", "training", "eval", "testing"})
SOURCE_NOTE = "source.txt"      # download@<name>'s output for a local folder, read in place
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_READ_CHUNK = 1 << 20
_BATCH = 8  # images per task sent to a decoding process: fewer, larger messages
_BATCHES_PER_WORKER = 2  # tasks in flight per decoding process: one decoding, one waiting
_TRIM_ROWS = 64  # rows copied at a time when dropping skipped images (64 x 192 KiB at 256 px)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def archive_suffix(source: str) -> str | None:
    """The archive suffix ``source`` (a path or URL) ends in, or None (a folder)."""
    name = source.lower().rstrip("/")
    return next((s for s in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def is_url(source: str) -> bool:
    return "://" in source


# --- params ---------------------------------------------------------------------------------

class ImageFolderConfig(Section):
    """``data.<name>`` of kind imagefolder (docs/datasets.md has every key with an example)."""

    kind: Literal["imagefolder"]
    source: str                     # a local folder, or an archive (.tar, .tgz, .tar.gz, .zip) by path or URL
    md5: str | None = None          # an archive: exactly one of md5 and sha256
    sha256: str | None = None
    mirrors: list[Url] = Field(default_factory=list)
    # px: short side resized to this, then the central square (256: the papers'). Required, as
    # prepare@ declares it on its own: DVC's run cache ignores keys named size inside a block.
    size: Count
    val_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None   # one folder of class folders
    root: str | None = None         # the folder (inside source) holding the layout; default: found
    classes: list[str] | None = None            # the class folders, in label order; default: found, sorted
    wnid_aliases: dict[str, str] = Field(default_factory=dict)   # folder wnid -> ImageNet wnid scoring it
    channels: Literal[1, 3] = 3     # 3: RGB; 1: grey (LeNet-5's), every image converted to it

    @field_validator("source")
    @classmethod
    def _a_source(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("must name a folder, or an archive (.tar, .tgz, .tar.gz, .zip) by path or URL")
        if is_url(source) and archive_suffix(source) is None:
            raise ValueError(f"is a URL, so must name an archive ending in {', '.join(ARCHIVE_SUFFIXES)}; got "
                             f"{source!r}")
        return source

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list | None) -> list | None:
        if classes is not None and (len(classes) < 2 or len(set(classes)) != len(classes)):
            raise ValueError(f"must list at least two distinct class folders, got {classes!r}")
        return classes

    @field_validator("wnid_aliases")
    @classmethod
    def _imagenet_wnids(cls, aliases: dict) -> dict:
        names = imagenet_names()
        bad = [target for target in aliases.values() if target not in names]
        if bad:
            raise ValueError(f"must map folder names to ImageNet wnids; {bad[0]!r} is not one of the 1,000")
        return aliases

    @model_validator(mode="after")
    def _hash_for_archives(self):
        given = [name for name in HASHES if getattr(self, name) is not None]
        for name in given:
            digest = getattr(self, name)
            if len(digest) != HASHES[name] or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"{{key}}.{name} must be {HASHES[name]} hex digits, got {digest!r}")
        if archive_suffix(self.source) is None:
            if given or self.mirrors:
                raise ValueError(f"{{key}}.source {self.source!r} is a folder (no archive suffix): "
                                 "md5, sha256 and mirrors are for archives")
        elif len(given) != 1:
            raise ValueError(f"{{key}}.source is an archive: give exactly one of md5 and sha256 (it has "
                             f"{' and '.join(given) or 'none'})")
        return self

    def layout(self) -> "Layout":
        return Layout(self.size, self.val_fraction, self.root, tuple(self.classes or ()), dict(self.wnid_aliases),
                      "L" if self.channels == 1 else "RGB")

    @property
    def is_folder(self) -> bool:
        return archive_suffix(self.source) is None

    def download_spec(self) -> dict:
        """What download@ fetches, and nothing else: ``source`` and, for an archive, its
        ``md5``/``sha256`` and ``mirrors`` (scan@ writes it into the manifest download@ reads,
        so that an edit of ``size``, ``val_fraction``, ``classes``, ... fetches nothing again)."""
        spec = {"source": self.source}
        if not self.is_folder:
            spec.update({name: getattr(self, name) for name in HASHES if getattr(self, name) is not None})
            spec["mirrors"] = list(self.mirrors)
        return spec

    def download_entry(self) -> dict:
        return download_entry(self.download_spec())


def download_entry(spec: dict) -> dict:
    """An archive's download spec as a download entry ({url, md5|sha256, mirrors}): a local
    path as a file:// URL."""
    source = spec["source"]
    url = source if is_url(source) else Path(source).expanduser().resolve().as_uri()
    return {"url": url, "mirrors": list(spec.get("mirrors", [])),
            **{name: spec[name] for name in HASHES if spec.get(name) is not None}}


@dataclass(frozen=True)
class Layout:
    """How a source's images become the prepared splits (the keys of ``ImageFolderConfig`` that say so)."""

    size: int = DEFAULT_SIZE
    val_fraction: float | None = None
    root: str | None = None
    classes: tuple = ()                 # pinned class folders, in label order; () = found, sorted
    wnid_aliases: dict = field(default_factory=dict)
    mode: str = "RGB"                   # what every image becomes: "RGB", or "L" for a grey dataset


# --- sources: a folder, a tar (plain or gzip), a zip --------------------------------------

@dataclass(frozen=True)
class Member:
    name: str         # POSIX path in the source (an archive member's name; a file's path under the folder)
    is_dir: bool


@dataclass(frozen=True)
class Source:
    """Where the images are, and what to say when they are unusable (``fix``)."""

    path: Path
    kind: str                  # folder | tar | tgz | zip
    fix: str                   # the end of every error about the source: how to get a good one
    title: str                 # the dataset, as errors name it
    name: str = ""             # its key under data (stage names: prepare@<name>); default: the title

    def key(self, field: str) -> str:
        """``data.<name>.<field>``: a key of this dataset's block in params.yaml, as errors name it."""
        return f"data.{self.name or self.title}.{field}"

    def members(self) -> Iterator[Member]:
        """Every folder and file, names only (an archive's headers); unsafe ones refused."""
        if self.kind == "folder":
            yield from self._folder_members()
        elif self.kind == "zip":
            with self._zip() as archive:
                for info in archive.infolist():
                    self._check_zip(info)
                    yield Member(info.filename.rstrip("/"), info.is_dir())
        else:
            for member, _ in self._tar(lambda member: False):
                yield Member(member.name.rstrip("/"), member.isdir())

    def read(self, wanted: set) -> Iterator[tuple[str, bytes | Path]]:
        """(name, its bytes, or its path for a folder: the decoding process reads it) of every
        member named in ``wanted``."""
        if self.kind == "folder":
            for name in sorted(wanted):
                yield name, self.path / name
        elif self.kind == "zip":
            with self._zip() as archive:
                for name in sorted(wanted):
                    try:
                        yield name, archive.read(name)
                    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError) as err:
                        raise self._corrupt(err) from None
                    except (RuntimeError, NotImplementedError) as err:      # encrypted, or a method zipfile lacks
                        raise UserError(f"{self.path}: member {name!r} cannot be read ({_one_line(err)}): store it "
                                        f"unencrypted, deflated or stored: {self.fix}") from None
        else:
            for member, data in self._tar(lambda member: member.name.rstrip("/") in wanted):
                if data is not None:
                    yield member.name.rstrip("/"), data

    # -- each kind

    def _corrupt(self, err: BaseException) -> UserError:
        what = {"tgz": ".tgz", "tar": ".tar", "zip": ".zip"}[self.kind]
        reason = _one_line(err) or type(err).__name__
        return UserError(f"{self.path} is not a readable {what} ({reason}); the file is truncated or corrupt: {self.fix}")

    def _missing(self) -> UserError:
        return UserError(f"{self.path} not found: {self.fix}")

    def _unsafe(self, name: str, problem: str) -> UserError:
        return UserError(f"{self.path}: member {name!r} is {problem}; the archive is unsafe or corrupt: {self.fix}")

    def _tar(self, wanted: Callable) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        """(member, its bytes if ``wanted(member)`` else None) in tar order, every member checked.

        tarfile alone stops at the end-of-archive blocks and never reads the gzip trailer, so a
        .tgz cut in its last bytes would pass; reading the gzip stream to its end makes gzip
        check the CRC and length. Errors of the file become one-line UserErrors; the caller's
        own errors (raised while it handles a member) pass through untouched."""
        try:
            with (gzip.open(self.path, "rb") if self.kind == "tgz" else open(self.path, "rb")) as stream, \
                    tarfile.open(fileobj=stream, mode="r|", bufsize=_READ_CHUNK) as tar:
                for member in tar:
                    problem = _unsafe_tar(member)
                    if problem:
                        raise self._unsafe(member.name, problem)
                    yield member, tar.extractfile(member).read() if member.isfile() and wanted(member) else None
                while stream.read(_READ_CHUNK):
                    pass
        except FileNotFoundError:
            raise self._missing() from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise self._corrupt(err) from None

    def _zip(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise self._missing() from None
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise self._corrupt(err) from None

    def _check_zip(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        problem = _unsafe_path(name)
        # The high 16 bits hold a Unix mode only where the zip was made on Unix (create_system 3),
        # and then its file type only where the writer set one (zipfile.writestr stores 0o600 alone).
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        if problem is None and stat.S_ISLNK(mode):
            problem = "a symbolic link"
        elif problem is None and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            problem = "a special file"
        if problem:
            raise self._unsafe(name, problem)

    def _folder_members(self) -> Iterator[Member]:
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a folder: {self.fix}")
        for here, dirs, files in walk(self.path):
            for name in dirs:
                yield Member((here / name).relative_to(self.path).as_posix(), True)
            for name in files:
                path = here / name
                rel = path.relative_to(self.path).as_posix()
                try:
                    regular = stat.S_ISREG(path.stat().st_mode)
                except OSError as err:         # a dangling link, a file removed meanwhile
                    raise UserError(f"{path} cannot be read ({_one_line(err)}): {self.fix}") from None
                if not regular:
                    raise UserError(f"{path} is not a regular file (a fifo or device?): {self.fix}")
                yield Member(rel, False)


def _unsafe_path(name: str) -> str | None:
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a path with a '..' component"
    return None


def _unsafe_tar(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could touch anything outside its folder, or None when it cannot."""
    problem = _unsafe_path(member.name)
    if problem:
        return problem
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


def open_source(config: ImageFolderConfig, raw_dir: Path, name: str, title: str) -> Source:
    """The dataset's images: the folder it names, or the archive download@<name> put in ``raw_dir``."""
    if config.is_folder:
        return Source(Path(config.source).expanduser(), "folder",
                      f"fix the folder (data.{name}.source) and rerun `dvc repro prepare@{name}`", title, name)
    suffix = archive_suffix(config.source)
    kind = {".tar": "tar", ".tgz": "tgz", ".tar.gz": "tgz", ".zip": "zip"}[suffix]
    return Source(Path(raw_dir) / file_name(config.download_entry()["url"]), kind,
                  f"delete data/raw/{name} and rerun `dvc repro download@{name}`", title, name)


# --- the layout -----------------------------------------------------------------------------

def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def in_val(relative: str, val_fraction: float) -> bool:
    """Whether the image at ``relative`` (POSIX, under the folder of class folders) is in val:
    a hash of its path alone, so adding or removing other images never moves it."""
    return int(hashlib.sha256(relative.encode("utf-8")).hexdigest()[:16], 16) / 2 ** 64 < val_fraction


@dataclass
class Index:
    """What pass 1 found: the images of each split as (member name, label), sorted by name."""

    classes: list
    splits: dict
    layout: str                # "train/val" or "one folder, val_fraction f"
    ignored: int               # files that are not images, or outside train/ and val/


def _common_folder(names: list) -> tuple:
    """The deepest folder holding every one of ``names`` (as parts)."""
    folders = [PurePosixPath(name).parts[:-1] for name in names]
    common = []
    for parts in zip(*folders):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return tuple(common)


def index_source(source: Source, config: Layout) -> Index:
    """Pass 1, names only: every member checked, then the images of each split with their
    labels. Raises (one line) before anything is written."""
    members, seen = [], set()
    for member in source.members():
        if hidden(member.name):
            continue
        if member.name in seen and not member.is_dir:   # a second copy would silently replace the first
            raise UserError(f"{source.path}: member {member.name!r} appears twice; the archive is corrupt: {source.fix}")
        seen.add(member.name)
        members.append(member)
    images = sorted(m.name for m in members if not m.is_dir and is_image(m.name))
    if not images:
        raise UserError(f"{source.path}: no images in it (files ending in {', '.join(sorted(IMAGE_SUFFIXES))}): "
                        f"{source.fix}")
    root = tuple(PurePosixPath(config.root).parts) if config.root else _common_folder(images)
    if config.root and not any(PurePosixPath(n).parts[:len(root)] == root for n in images):
        raise UserError(f"{source.path}: no images under root {config.root!r}: {source.fix}")
    under = {}     # member -> its parts under root, for members under root
    for member in members:
        parts = PurePosixPath(member.name).parts
        if parts[:len(root)] == root and len(parts) > len(root):
            under[member.name] = (parts[len(root):], member.is_dir)
        elif not member.is_dir and is_image(member.name):
            raise _misplaced(source, member.name, root, config)
    tops = {parts[0] for parts, is_dir in under.values() if is_dir or len(parts) > 1}
    split_layout = set(SPLITS) <= tops
    if split_layout and config.val_fraction is not None:
        raise UserError(f"{source.path} has train/ and val/ folders: {source.key('val_fraction')} is for one folder "
                        f"of class folders; remove it (the folders say which image is in which split)")
    split_like = sorted(tops & SPLIT_NAMES) if not split_layout else []
    if split_like:      # train/ + test/, training/ + validation/: splits, which would be read as classes
        raise UserError(f"{source.path}: {'/'.join(root) or 'its top'} holds {', '.join(f'{t}/' for t in split_like)}, "
                        "split folders, not classes: name them train/ and val/, or give one of them as root "
                        f"({source.key('root')}) with val_fraction to split its class folders")
    if not split_layout and config.val_fraction is None:
        raise UserError(f"{source.path}: {'/'.join(root) or 'its top'} holds no train/ and val/ folders: set "
                        "val_fraction (e.g. 0.1) to split its class folders, or give both folders")
    if not split_layout and not any(len(parts) > 1 and is_image(name) for name, (parts, _) in under.items()):
        raise UserError(f"{source.path}: {'/'.join(root) or 'its top'} holds images but no class folders: put each "
                        f"class's images in a folder named after the class: {source.fix}")
    pinned = set(config.classes or ())
    found = collections.defaultdict(lambda: collections.Counter())   # class -> {split: images}
    items, ignored = [], 0
    for name, (parts, is_dir) in sorted(under.items()):
        if split_layout:
            if parts[0] not in SPLITS:
                ignored += not is_dir
                continue
            split, rest = parts[0], parts[1:]
        else:
            split, rest = None, parts
        if not rest:
            continue                                   # train/ or val/ itself
        if len(rest) == 1 and not is_dir:              # a file beside the class folders
            if is_image(name):
                raise _misplaced(source, name, root, config)
            ignored += 1
            continue
        cls = rest[0]
        if pinned and cls not in pinned:
            raise _misplaced(source, name, root, config)
        found[cls]                                     # a class folder, with or without images
        if is_dir:
            continue
        if not is_image(name):
            ignored += 1
            continue
        if split is None:
            split = "val" if in_val(PurePosixPath(*parts).as_posix(), config.val_fraction) else "train"
        found[cls][split] += 1
        items.append((name, split, cls))
    empty = sorted(cls for cls, counts in found.items() if not sum(counts.values()))
    if empty:
        raise UserError(f"{source.path}: class folder {empty[0]!r} holds no images: add some or remove it, then "
                        f"rerun `dvc repro prepare@{source.name or source.title}`")
    classes = list(config.classes) or sorted(found)
    untrained = [cls for cls in classes if not found.get(cls, {}).get("train")]
    if untrained:     # a pinned class with no folder, or one whose images all went to val
        raise UserError(f"{source.path}: class {untrained[0]!r} has no training images"
                        + (" (val_fraction put all of its images in val: add images)" if not split_layout else "")
                        + f": {source.fix}")
    if len(classes) < 2:
        raise UserError(f"{source.path}: found {len(classes)} class folder{'s' if len(classes) != 1 else ''} under "
                        f"{'/'.join(root) or 'its top'}; a dataset needs at least two (one folder per class)")
    labels = {cls: label for label, cls in enumerate(classes)}
    splits = {split: sorted((name, labels[cls]) for name, s, cls in items if s == split) for split in SPLITS}
    for split, listed in splits.items():
        if not listed:
            raise UserError(f"{source.path}: no {split} images" + (
                f" (val_fraction {config.val_fraction} put none there: raise it or add images)"
                if not split_layout else f" under {'/'.join(root + (split,))}/") + f": {source.fix}")
    layout = "train/ and val/" if split_layout else f"one folder of class folders, val_fraction {config.val_fraction}"
    return Index(classes, splits, layout, ignored)


def known_classes(config: ImageFolderConfig) -> list | None:
    """The classes prepare@ will find, in label order, where they are known before it runs:
    ``classes`` where pinned; for a local folder, its class folders' names, sorted, as
    ``index_source`` finds them (``root``, or the deepest folder holding every image; ``train/``
    and ``val/``, or one folder of class folders). None for an archive (download@ fetches it
    later), a folder that is not there, and a layout prepare@ refuses in its own words.

    ``index_source`` finds the classes from every file's path, since it reads every image
    anyway. validate, which runs before every `dvc repro`, must not walk ImageNet's 1.33 M files
    to learn 1,000 names, so this lists folders only: those on the way down to the root and the
    class folders, and in a few of them as many files as it takes to find one image (to tell
    where the images are when ``root`` is not given). No image is read."""
    if config.classes:
        return list(config.classes)
    if not config.is_folder:
        return None
    folder = Path(config.source).expanduser()
    try:
        root = folder / config.root if config.root else _image_root(folder)
        if root is None or not root.is_dir():
            return None
        tops = _listing(root)[0]
        if set(SPLITS) <= set(tops):
            if config.val_fraction is not None:
                return None
            classes = sorted({cls for split in SPLITS for cls in _listing(root / split)[0]})
        elif set(tops) & SPLIT_NAMES or config.val_fraction is None:
            return None
        else:
            classes = tops
    except OSError:               # not there, not readable: scan@ and prepare@ say so
        return None
    return classes if len(classes) >= 2 else None


def _listing(folder: Path) -> tuple[list, bool]:
    """(the folders in ``folder``, sorted; whether it holds an image file), hidden ones left
    out, links followed: one directory listing, no file opened."""
    folders, images = [], False
    with os.scandir(folder) as entries:
        for entry in entries:
            if hidden(entry.name):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif is_image(entry.name):
                images = True
    return sorted(folders), images


def _holds_an_image(folder: Path) -> bool:
    """Whether any file under ``folder`` is an image: the walk stops at the first one."""
    return any(is_image(name) for _, _, names in walk(folder) for name in names)


def _image_root(folder: Path) -> Path | None:
    """``_common_folder`` of every image under ``folder`` (None: no image), from listings: go
    down while the images are all in one sub-folder; stop at a folder holding an image itself,
    or two sub-folders that hold images."""
    while True:
        folders, images = _listing(folder)
        if images:
            return folder
        holding = list(itertools.islice((name for name in folders if _holds_an_image(folder / name)), 2))
        if len(holding) != 1:
            return folder if holding else None
        folder = folder / holding[0]


def _misplaced(source: Source, name: str, root: tuple, config: Layout) -> UserError:
    where = "/".join(root) + "/" if root else ""
    classes = f"<one of the classes listed in {source.key('classes')}>" if config.classes else "<class>"
    return UserError(
        f"{source.path}: member {name!r} is outside the {source.title} layout ({where}train|val/{classes}/<image>, "
        f"or {where}{classes}/<image>); the source is not the dataset it should be, or is corrupt: {source.fix}")


def class_entries(classes: list, aliases: dict, dataset: str) -> list:
    """classes.json's entries: {"wnid": the folder, "name": the ImageNet class that scores it}
    where every class is an ImageNet wnid after ``aliases`` (``data.<dataset>.wnid_aliases``),
    else {"name": the folder}. ImageNet's 1,000 names are distinct (``wnids.py``), so a name says
    which logit scores the class: an aliased folder (Imagenette's n03888605) is named by the
    class it is scored as (parachute)."""
    names = imagenet_names()
    if not all(aliases.get(cls, cls) in names for cls in classes):
        return [{"name": cls} for cls in classes]
    targets = [aliases.get(cls, cls) for cls in classes]
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise UserError(f"two classes are scored as ImageNet's {twice[0]} ({names[twice[0]]}) through "
                        f"data.{dataset}.wnid_aliases: each class needs its own ImageNet class")
    return [{"wnid": cls, "name": names[target]} for cls, target in zip(classes, targets)]


# --- decoding -------------------------------------------------------------------------------

def decode_image(data: bytes | Path, size: int = DEFAULT_SIZE, mode: str = "RGB") -> tuple[np.ndarray, str]:
    """One image file as the AlexNet paper's input (``fit_image``) and the mode it was stored
    in ('RGB', 'L', 'CMYK', ...). Bad data raises (Pillow's errors)."""
    # Pillow's default, stated here because a cut-off JPEG must fail, not come out half grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if isinstance(data, Path):
        data = data.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return fit_image(image, size, mode), image.mode


def fit_image(image: Image.Image, size: int = DEFAULT_SIZE, mode: str = "RGB") -> np.ndarray:
    """A decoded image as the prepared split stores it: RGB, resized so its short side is
    ``size`` (bilinear, antialiased), then the central ``size`` x ``size`` crop; uint8
    (size, size, 3). Also how ``cnn_internals.explain`` brings a user's photo to the nets."""
    rgb = image.convert(mode)  # "RGB": grey, CMYK and palette images too; "L": a grey dataset
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


def _decode_rows(images: dict, batch: list, size: int, mode: str = "RGB") -> list[tuple[str | None, str | None]]:
    """Decode each (split, row, data) of ``batch`` into ``images[split][row]``; per item
    (None or a one-line reason it does not decode (the row is then dropped), its stored mode)."""
    results = []
    for split, row, data in batch:
        if isinstance(data, Path):        # a folder's file: a read error is the disk's, not a bad image
            try:
                data = data.read_bytes()
            except OSError as err:
                raise UserError(f"{data} cannot be read ({_one_line(err)}): fix the folder and rerun the stage") from None
        try:
            images[split][row], stored = decode_image(data, size, mode)
            results.append((None, stored))
        except Exception as err:  # Pillow raises many kinds on bad data (OSError, SyntaxError, ValueError...)
            # without the object's address Pillow names (<_io.BytesIO object at 0x7f...>): report.json's
            # bytes must not depend on the run
            reason = _ADDRESS.sub("", _one_line(f"{type(err).__name__}: {err}"))
            results.append((reason, None))
    return results


_worker_images = {}  # in a decoding process: {split: its own writable map of <split>_images.npy}


def _open_worker_images(paths: dict) -> None:
    """Pool initializer: each decoding process maps the output files itself, so an image goes
    straight to its row instead of back through a pipe (192 KiB each at 256 px)."""
    _worker_images.update({split: np.load(path, mmap_mode="r+") for split, path in paths.items()})


def _decode_rows_in_worker(batch: list, size: int, mode: str) -> list:
    return _decode_rows(_worker_images, batch, size, mode)


def _batches(items, n: int):
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, n)):
        yield batch


def _decoded(jobs, images: dict, size: int, workers: int, name: str, mode: str = "RGB"):
    """Decode each (split, row, data) of ``jobs`` into ``images[split][row]``; yield
    ((split, row, data), (reason or None, mode)) for each, in the order of ``jobs``.

    With several workers the images go to a pool of processes (concurrent.futures, which
    reports a worker that died where multiprocessing.Pool would wait forever) in small batches,
    at most two per worker in flight: however large the source, memory holds only those few."""
    batches = _batches(jobs, _BATCH)
    if workers == 1:
        for batch in batches:
            yield from zip(batch, _decode_rows(images, batch, size, mode))
        return
    paths = {split: images[split].filename for split in images}
    with ProcessPoolExecutor(workers, initializer=_open_worker_images, initargs=(paths,)) as pool:
        pending = collections.deque()
        try:
            for batch in batches:
                pending.append((batch, pool.submit(_decode_rows_in_worker, batch, size, mode)))
                if len(pending) >= _BATCHES_PER_WORKER * workers:
                    batch, future = pending.popleft()
                    yield from zip(batch, future.result())
            while pending:
                batch, future = pending.popleft()
                yield from zip(batch, future.result())
        except BrokenProcessPool:
            raise UserError(
                "an image-decoding process died (out of memory?): free some memory and rerun "
                f"`dvc repro prepare@{name}`"
            ) from None
        finally:
            pool.shutdown(cancel_futures=True)


def _trim(path: Path, full: np.ndarray, kept: np.ndarray) -> int:
    """Drop the rows of skipped images from the .npy at ``path`` (``full`` is its memory map),
    copying a few rows at a time so memory stays bounded; return the rows left.

    No ``flush`` (msync): the page cache already shows the written rows to every reader, and
    forcing gigabytes to disk here would only make the stage wait for what the kernel writes
    back anyway (no output of the pipeline is fsynced)."""
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


def _decode_into(source: Source, index: Index, images: dict, size: int, workers: int,
                 mode: str = "RGB") -> tuple[dict, collections.Counter]:
    """Pass 2: decode every image of ``index`` into its row of ``images``; return the skipped
    ones per split as [{"path", "reason"}] and how many were stored in each non-RGB mode."""
    rows = {name: (split, row) for split, items in index.splits.items() for row, (name, _) in enumerate(items)}
    skipped = {split: [] for split in index.splits}
    modes = collections.Counter()
    jobs = ((*rows[name], data) for name, data in source.read(set(rows)))
    done = 0
    with tqdm(total=len(rows), desc=f"decoding {source.title}", unit="img", disable=None) as bar:
        for (split, row, _), (reason, stored) in _decoded(jobs, images, size, workers, source.name or source.title, mode):
            if reason is not None:
                skipped[split].append({"path": index.splits[split][row][0], "reason": reason})
            elif stored != mode:
                modes[stored] += 1
            done += 1
            bar.update()
    if done != len(rows):
        raise UserError(f"{source.path} changed while it was read ({done} of {len(rows)} images found): rerun the stage")
    return skipped, modes


def _write_splits(source: Source, index: Index, out: Path, size: int, workers: int,
                  mode: str = "RGB") -> tuple[dict, collections.Counter]:
    """Both splits' image and label arrays in folder ``out``; the report of what was kept."""
    images = {split: open_memmap(out / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                 shape=(len(items), size, size) + ((3,) if mode == "RGB" else ()))
              for split, items in index.splits.items()}
    skipped, modes = _decode_into(source, index, images, size, workers, mode)
    report = {"size": size}
    for split, items in index.splits.items():
        bad = {entry["path"] for entry in skipped[split]}
        kept = np.array([name not in bad for name, _ in items])
        count = _trim(out / f"{split}_images.npy", images.pop(split), kept)
        if count == 0:
            raise UserError(f"{source.path}: none of the {split} images decodes; the source is corrupt: {source.fix}")
        labels = np.array([label for _, label in items], dtype=np.int64)[kept]
        np.save(out / f"{split}_labels.npy", labels, allow_pickle=False)
        report[split] = {"images": count, "skipped": sorted(skipped[split], key=lambda e: e["path"])}
    return report, modes


@dataclass(frozen=True)
class Prepared:
    report: dict               # report.json: {"size", split: {"images", "skipped": [{"path", "reason"}]}}
    classes: list              # classes.json's entries
    layout: str
    ignored: int
    converted: dict            # {stored mode: images converted to RGB}


def prepare_folder(source: Source, out_dir: Path, config: Layout, workers: int | None = None) -> Prepared:
    """Decode ``source`` into ``out_dir`` (replaced as a whole, or left as it was on failure):
    ``<split>_images.npy`` (uint8 (N, size, size, 3)), ``<split>_labels.npy`` (int64),
    ``classes.json`` and ``report.json``. ``workers`` decoding processes (default: every CPU)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    index = index_source(source, config)
    workers = min(workers or os.cpu_count() or 1, sum(len(items) for items in index.splits.values()))
    entries = class_entries(index.classes, config.wnid_aliases, source.name or source.title)
    with atomic_dir(out_dir) as tmp:
        report, modes = _write_splits(source, index, tmp, config.size, workers, config.mode)
        write_classes(tmp, entries)
        write_json(tmp / "report.json", report)
    return Prepared(report, entries, index.layout, index.ignored, dict(sorted(modes.items())))


# --- the pipeline's stage entry points (see datasets.py) -----------------------------------

def download(spec: dict, name: str, out: Path) -> str:
    """download@<name>, from ``ImageFolderConfig.download_spec``: the archive fetched (mirrors
    first) and checked; for a folder, a note that prepare reads it in place (nothing is copied:
    ImageNet's train split is 148 GB)."""
    # 148 GB: ILSVRC2012_img_train.tar is 147,897,477,120 bytes, the size CompVis's
    # taming-transformers checks (taming/data/imagenet.py, ImageNetTrain.SIZES) and users' `ls -l`
    # show; image-net.org's "138GB" is the same in GiB. Its JPEGs unpacked take about as much.
    source = spec["source"]
    if archive_suffix(source) is None:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise UserError(f"data.{name}.source: {folder} is not a folder (or an archive ending in "
                            f"{', '.join(ARCHIVE_SUFFIXES)})")
        with atomic_dir(out) as tmp:
            write_text(tmp / SOURCE_NOTE, f"{name}: read in place from {source} by prepare@{name}; "
                                          f"scan@{name} lists its files\n")
        return f"{name}: a local folder, {folder}, read in place by prepare@{name}"
    paths = fetch([download_entry(spec)], out)
    return f"fetched {', '.join(path.name for path in paths)} into {out}"


def prepare(config: ImageFolderConfig, name: str, raw_dir: Path, out_dir: Path, title: str | None = None,
            workers: int | None = None) -> str:
    """prepare@<name>: the images as ``size`` x ``size`` uint8 arrays, decoded on every core."""
    source = open_source(config, raw_dir, name, title or name)
    done = prepare_folder(source, out_dir, config.layout(), workers)
    report = done.report
    skipped = sum(len(report[split]["skipped"]) for split in SPLITS)
    notes = []
    if skipped:
        notes.append(f"{skipped} image{'s' if skipped != 1 else ''} did not decode, listed in report.json")
    if done.converted:
        notes.append(f"converted to {'grey' if config.channels == 1 else 'RGB'}: "
                     + ", ".join(f"{n} {mode}" for mode, n in done.converted.items()))
    if done.ignored:
        notes.append(f"{done.ignored} file{'s' if done.ignored != 1 else ''} ignored (not images, or outside train/ and val/)")
    return (f"{title or name}: {report['train']['images']} train and {report['val']['images']} val images of "
            f"{len(done.classes)} classes at {report['size']}x{report['size']} in {out_dir} ({done.layout})"
            + "".join(f"; {note}" for note in notes))
