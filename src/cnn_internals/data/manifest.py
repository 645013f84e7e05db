"""What a dataset's source holds now, cheaply: scan@<dataset>'s output, which prepare@<dataset>
and download@<dataset> depend on.

A local folder changes without DVC knowing (its path is a param, and DVC cannot make a
dependency of a param's value: treeverse/dvc#5167). scan@<dataset> runs on every `dvc repro`
(``always_changed``) and writes, for a folder source, the count and total size of its files
and a sha256 over every file's path, size and mtime (and every folder's path), in path order (hidden files, such as a
Finder's .DS_Store, left out, as prepare leaves them): an image added, removed,
replaced or touched changes it, so prepare@<dataset> reruns; nothing changed, the same bytes,
so nothing after it does. Contents are not read (ImageNet's 1.33 M files are listed in about
10 s, projected by benchmarks/scan.py; hashing them would read all 148 GB from disk on every
`dvc repro`). A local archive is described by its size and mtime
(download@<dataset> then copies it again and checks its hash).

The manifest also carries the dataset's download spec (``Kind.download_spec``: the source, an
archive's md5|sha256 and mirrors, MNIST's files and sample split), which is all download@<dataset>
reads: it declares no params, so an edit of a key that only prepare uses (``size``,
``val_fraction``, ``classes``, ...) does not fetch a 148 GB archive again. DVC cannot declare
just those keys, because a declared key must exist and an archive gives one of md5 and sha256.
"""

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from cnn_internals.core.atomic import write_json
from cnn_internals.core.errors import UserError


def hidden(name: str) -> bool:
    """A member no dataset holds: a dot-file or anything under a dot-folder (.DS_Store,
    .ipynb_checkpoints, macOS's ._ AppleDouble files) or under __MACOSX (Finder's zips)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def walk(folder: Path) -> Iterator[tuple[Path, list, list]]:
    """os.walk, links followed (a user's folder may be a tree of links: a reorganised ImageNet
    val), sorted, each real folder once (a link back up would loop forever), hidden ones skipped."""
    seen = set()
    for here, dirs, files in os.walk(folder, followlinks=True):
        info = os.stat(here)
        if (info.st_dev, info.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not hidden(d))
        yield Path(here), dirs, sorted(f for f in files if not hidden(f))


def manifest_path(dataset: str) -> Path:
    """scan@<dataset>'s output (re-exported by pipeline/artifacts.py, which lists every artifact)."""
    return Path("data/manifests") / f"{dataset}.json"


def folder_manifest(folder: Path) -> dict:
    """{"files", "bytes", "listing_sha256"} of every file under ``folder`` (links followed).
    String paths and os.stat, not pathlib: a 1.3 M-file folder is listed on every `dvc repro`,
    and pathlib's objects cost more than the stat itself (benchmarks/scan.py)."""
    digest = hashlib.sha256()
    files = total = 0
    entries = []
    top = os.fspath(folder)
    skip = len(top.rstrip(os.sep)) + 1                    # the relative path starts after "folder/"
    for here, dirs, names in walk(folder):
        base = os.fspath(here)
        # every folder too (size -1), so that an added empty class folder changes the manifest
        # and prepare@ runs, and refuses it, instead of waiting for the next edit
        entries.extend((os.path.join(base, d)[skip:] + "/", -1, 0) for d in dirs)
        for name in names:
            path = os.path.join(base, name)
            try:
                info = os.stat(path)
            except OSError as err:
                raise UserError(f"{path} cannot be read ({' '.join(str(err).split())}): fix the folder") from None
            entries.append((path[skip:], info.st_size, info.st_mtime_ns))
    for rel, size, mtime in sorted(entries):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        if size >= 0:
            files += 1
            total += size
    return {"files": files, "bytes": total, "listing_sha256": digest.hexdigest()}


def manifest(kind: str, source: str | None, key: str = "source") -> dict:
    """The manifest of a dataset of ``kind`` whose ``source`` is a folder, an archive path, a
    URL, or None (MNIST: its params say everything); ``key``: where the params give the source."""
    if source is None or "://" in source:
        return {"kind": kind, "source": source}
    path = Path(source).expanduser()
    if path.is_dir():
        return {"kind": kind, "source": source, "folder": folder_manifest(path)}
    if path.is_file():
        info = path.stat()
        return {"kind": kind, "source": source, "archive": {"bytes": info.st_size, "mtime_ns": info.st_mtime_ns}}
    raise UserError(f"{key}: {source} does not exist (a folder of class folders, or an archive ending in .tar, .tgz, "
                    ".tar.gz or .zip, was expected): fix the path (relative paths start at the project root)")


def write_manifest(path: Path, kind: str, source: str | None, download: dict, key: str = "source") -> dict:
    """scan@'s output: ``manifest`` of the source, with the ``download`` spec download@ reads."""
    found = {**manifest(kind, source, key), "download": download}
    write_json(path, found)
    return found


def read_download_spec(path: Path, dataset: str) -> tuple[str, dict]:
    """(kind, download spec) from scan@<dataset>'s manifest."""
    fix = (f"run `python stages/scan.py --dataset {dataset}` first (for a dataset in pipeline.datasets, "
           f"`dvc repro download@{dataset}` runs both)")
    try:
        found = json.loads(Path(path).read_text())
        return found["kind"], found["download"]
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {fix}") from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not scan@{dataset}'s manifest: {fix}") from None
