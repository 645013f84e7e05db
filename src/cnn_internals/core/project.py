"""The project a stage belongs to: its root, and the last good outputs DVC recorded for it.

Every stage runs from the project root (the folder with dvc.yaml), whatever the current
directory: paths the user passes on the command line are taken relative to where they typed
them, every other path relative to the root.

When a stage run by `dvc repro` fails, DVC has already removed its outputs; ``restore_outputs``
puts back the ones dvc.lock records for the stage, from the local DVC cache (where DVC's
run-cache has also kept the ``cache: false`` metrics and pictures of every completed run), so
a failed run leaves the last good results in place.
"""

import json
import os
import shutil
import sys
from configparser import ConfigParser
from pathlib import Path

import yaml

from cnn_internals.core.atomic import atomic_dir, atomic_path
from cnn_internals.core.errors import UserError

_STARTED_IN = None


def find_root() -> Path:
    """The nearest folder holding dvc.yaml above the stage script (stages/<name>.py), else
    above the current directory (``python -m cnn_internals.x``).

    Not $DVC_ROOT: for a queued experiment DVC sets it to the user's main workspace while the
    stage runs in a copy under .dvc/tmp/exps, and the stage must write into that copy."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    stage_dir = script.parent if script is not None and script.parent.name == "stages" else None
    for start in filter(None, (stage_dir, Path.cwd())):
        for folder in (start, *start.parents):
            if (folder / "dvc.yaml").is_file():
                return folder
    raise UserError("no dvc.yaml here or above: run the stage inside a CNN Internals checkout")


def enter_root() -> Path:
    """chdir to the project root, remembering where the user was for ``user_path``."""
    global _STARTED_IN
    _STARTED_IN = Path.cwd()
    root = find_root()
    os.chdir(root)
    return root


def started_in() -> Path:
    """The directory the command was typed in (the root once ``enter_root`` ran, if never)."""
    return _STARTED_IN if _STARTED_IN is not None else Path.cwd()


def user_path(text: str | Path) -> Path:
    """A path given on the command line, relative to the directory the command was typed in."""
    path = Path(text)
    return path if path.is_absolute() else Path(os.path.relpath(started_in() / path))


def shown(path: str | Path) -> str:
    """``path`` (relative to the root, where stages run) as the user would type it from where
    they started the command."""
    if _STARTED_IN is None or Path(path).is_absolute():
        return str(path)
    return os.path.relpath(Path.cwd() / path, _STARTED_IN)


def _cache_dirs(root: Path) -> list:
    """The local cache's object folders: ``cache.dir`` from .dvc/config(.local) or the default."""
    cache = root / ".dvc" / "cache"
    for name in ("config", "config.local"):
        parser = ConfigParser()
        try:
            parser.read(root / ".dvc" / name, encoding="utf-8")
        except Exception:  # noqa: BLE001 -- a config DVC itself accepted; fall back to the default
            continue
        if parser.has_option("cache", "dir"):
            cache = (root / ".dvc" / parser.get("cache", "dir")).resolve()
    return [cache / "files" / "md5", cache]     # DVC 3 layout, then DVC 2's


def _cached(dirs, md5: str) -> Path | None:
    for folder in dirs:
        path = folder / md5[:2] / md5[2:]
        if path.is_file():
            return path
    return None


def _restore(out: dict, dirs) -> bool:
    path, md5 = Path(out["path"]), out.get("md5") or ""
    if md5.endswith(".dir"):
        listing = _cached(dirs, md5)
        if listing is None:
            return False
        entries = json.loads(listing.read_text())
        sources = [(_cached(dirs, e["md5"]), e["relpath"]) for e in entries]
        if any(src is None for src, _ in sources):
            return False
        with atomic_dir(path) as tmp:
            for src, rel in sources:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, tmp / rel)
        return True
    src = _cached(dirs, md5)
    if src is None:
        return False
    with atomic_path(path) as tmp:
        shutil.copyfile(src, tmp)
    return True


def restore_outputs() -> str:
    """Under `dvc repro`, put this stage's outputs as dvc.lock records them back from the local
    cache; returns a note for the error line ("" outside DVC or when the stage never ran)."""
    stage = os.environ.get("DVC_STAGE")
    if not stage or "DVC_ROOT" not in os.environ:
        return ""
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # A rank torchrun started: the stage process that launched torchrun restores, once,
        # after every rank has stopped (cnn_internals.distributed.launch).
        return ""
    root = find_root()
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}
        outs = lock["stages"][stage.split(":")[-1]]["outs"]
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return ""
    dirs = _cache_dirs(root)
    missing, failed = [], []
    for out in outs:
        try:
            if not _restore(out, dirs):
                missing.append(out["path"])
        except OSError as err:        # a full disk fails the copy back too: say so, not "not cached"
            failed.append(f"{out.get('path', '?')} ({err.strerror or os.strerror(err.errno or 0)})")
        except (ValueError, KeyError, TypeError):
            missing.append(out.get("path", "?"))
    notes = []
    if failed:
        notes.append(f"putting back {', '.join(failed)} failed too: make room, then `dvc checkout {stage}` brings "
                     "back what is tracked")
    if missing:
        notes.append(f"{', '.join(missing)} not in the local cache: `dvc checkout {stage}` or `dvc pull {stage}`"
                     " brings back what is tracked")
    if notes:
        return "; " + "; ".join(notes)
    return f"; the last good outputs of {stage} (dvc.lock) are back in place"
