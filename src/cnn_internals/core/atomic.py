"""Atomic, deterministic writes: a killed stage never leaves a half-written output."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnn_internals.core.errors import WRITE_ERRNOS


def _named(err: OSError, path: Path) -> OSError:
    """A write error (full disk, no permission) as the user's output ``path`` failing: the
    temporary file it happened in, or no file at all (torch, numpy), says nothing to them."""
    if err.errno in WRITE_ERRNOS:
        return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))
    return err


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, default_mode())  # mkstemp's 0600 is for the temp name only
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and _named(err, path) is not err:
            raise _named(err, path) from err
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_all(files: dict) -> None:
    """Write {path: bytes} all or nothing: every file is written in full beside its target
    first (a full disk fails here, with the old outputs untouched), then each is renamed over
    its target, which cannot fail for lack of space."""
    with contextlib.ExitStack() as stack:
        staged = [(stack.enter_context(atomic_path(path)), data) for path, data in files.items()]
        for tmp, data in staged:
            tmp.write_bytes(data)
    # atomic_path renames each temp file over its target as the stack unwinds; on an error
    # while writing, every temp file is removed instead and no target has changed.


def torch_bytes(obj: object) -> bytes:
    """torch.save through a buffer: saved to a file path, torch names the archive's records
    after the (temporary, random) file name, and equal weights would differ in bytes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write_torch(path: str | Path, obj: object) -> None:
    write_bytes(path, torch_bytes(obj))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """Sorted keys and a trailing newline, so equal content means equal bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_bytes(path, json_bytes(obj))


def default_mode(kind: str = "file") -> int:
    """Permission bits a plain ``open``/``mkdir`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if kind == "dir" else 0o666) & ~umask


def _replace_dir(src, dest):
    """Make folder ``src`` become ``dest``, removing whatever ``dest`` was first."""
    src, dest = Path(src), Path(dest)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        # Move the old folder aside first, so ``dest`` is missing for one rename at most.
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, trash / dest.name)
        os.replace(src, dest)
        shutil.rmtree(trash, ignore_errors=True)
        return
    os.replace(src, dest)


@contextlib.contextmanager
def atomic_dir(dest_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest_dir``; on success it replaces ``dest_dir``.

    On any exception the temporary folder is removed and ``dest_dir`` is left as it was.
    """
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
    try:
        os.chmod(tmp, default_mode("dir"))  # mkdtemp's 0700 is for the temp name only
        yield tmp
        _replace_dir(tmp, dest_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and _named(err, dest_dir) is not err:
            raise _named(err, dest_dir) from err
        raise
