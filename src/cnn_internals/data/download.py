"""Fetch files by URL with hash checks, bounded retries, mirrors and an all-or-nothing output.

Each entry names its file by ``url`` and carries one hash, ``md5`` or ``sha256`` (the params
say which; ``HASHES`` below), verified the same way. ``fetch`` downloads a dataset's
files into a temporary folder beside ``dest_dir``; only when all of them are verified (hash,
and for ``.gz`` a full decompression) does that folder replace ``dest_dir`` in one
``os.replace``. ``fetch_file`` downloads one file to a temporary name beside its destination,
renamed over it once verified. Any failure removes the temporary folder or file, so a failed or
killed download never leaves a partial dataset or file behind.

Per file the candidate URLs are, in order: ``$CNN_INTERNALS_MIRROR/<name>`` (or the ``mirror``
argument), the entry's ``url``, then each of its ``mirrors``. Transient failures (timeouts,
resets, truncated bodies, HTTP 408/429/5xx) are retried with bounded exponential backoff;
permanent ones (refused connection, unknown host, HTTP 4xx, missing local file, bad md5 or
gzip) move on to the next URL at once.

A retry of the same http(s) URL resumes: it asks for ``Range: bytes=<bytes on disk>-`` and
appends, carrying the hash of the bytes already written. The server's answer decides: 206 whose
``Content-Range`` starts where we are -> append; 200 (Range ignored) -> start over from byte 0;
416 -> the file is complete if its size is the total the server reports, else start over. The
next URL (another mirror) always starts from byte 0; ``file://`` URLs are read whole.
"""

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, model_validator
from tqdm import tqdm

from cnn_internals.core.atomic import atomic_dir, atomic_path
from cnn_internals.core.config import Section, read_key
from cnn_internals.core.errors import UserError
from cnn_internals.core.params import params_name

MIRROR_ENV = "CNN_INTERNALS_MIRROR"
CHUNK = 1 << 16
HASH_BLOCK = 1 << 20  # bytes read per step when hashing a file on disk (see file_hash)
MAX_BACKOFF = 8.0  # seconds: one wait never exceeds this, whatever ``backoff`` and ``tries`` are
_USER_AGENT = "cnn_internals (python urllib)"
_TRANSIENT_HTTP = {408, 425, 429}
_RESUMABLE_SCHEMES = {"http", "https"}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


# The hashes a download entry may carry, each with its hex length: exactly one per entry.
HASHES = {"md5": 32, "sha256": 64}


def _url(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a URL string, got {value!r}")
    return value


Url = Annotated[str, BeforeValidator(_url)]


class DownloadEntry(Section):
    """One file to download, as params.yaml lists it: ``url``, exactly one of ``md5`` and
    ``sha256`` (``hashes``: the ones accepted), and ``mirrors`` tried after ``$CNN_INTERNALS_MIRROR``
    and before ``url``. ``fetch_file`` takes it as a dict (``as_dict``)."""

    hashes: ClassVar[tuple] = tuple(HASHES)
    url: Url
    md5: str | None = None
    sha256: str | None = None
    mirrors: list[Url] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _one_hash(cls, entry):
        allowed = " or ".join(cls.hashes)
        if not isinstance(entry, dict):
            raise ValueError(f"must be a mapping with url and {allowed}, got {entry!r}")
        unknown = set(entry) - {"url", "mirrors", *HASHES}
        if unknown:
            raise ValueError(f"has unknown keys {sorted(unknown)}: use url, {allowed}, mirrors")
        given = [name for name in HASHES if name in entry]
        if len(given) != 1 or given[0] not in cls.hashes:
            wanted = " or ".join(f"{name} ({HASHES[name]} hex digits)" for name in cls.hashes)
            has = (f"both {' and '.join(given)}" if len(given) > 1 else
                   f"{given[0]}, not accepted here" if given else "none")
            raise ValueError(f"must carry one hash, {wanted}; it has {has}")
        name = given[0]
        digest = entry[name]
        if not isinstance(digest, str) or not re.fullmatch(f"[0-9a-fA-F]{{{HASHES[name]}}}", digest):
            raise ValueError(f"{{key}}.{name} must be {HASHES[name]} hex digits, got {digest!r}")
        mirrors = entry.get("mirrors")
        if mirrors is not None and (not isinstance(mirrors, list) or not all(isinstance(m, str) and m.strip()
                                                                           for m in mirrors)):
            raise ValueError(f"{{key}}.mirrors must be a list of URL strings, got {mirrors!r}")
        return {key: value for key, value in entry.items() if value is not None}

    def as_dict(self) -> dict:
        return self.model_dump(exclude_none=True)


class _Files(Section):
    files: list[DownloadEntry]


class _Transient(Exception):
    """A failure worth retrying on the same URL."""


class _Permanent(Exception):
    """A failure that the same URL will repeat: move on to the next one."""


def file_hash(path: str | Path, algorithm: str) -> str:
    """Hex digest (``algorithm``: md5, sha256) of the file at ``path``, streamed in 1 MiB blocks
    through one reused buffer: a file of any size costs 1 MiB of memory, and the time is the
    hash's own, not Python's (docs/benchmarks.md, 'The sha256 on every load')."""
    digest = hashlib.new(algorithm)
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(block):
            digest.update(view[:n])
    return digest.hexdigest()


def md5sum(path: str | Path) -> str:
    """Hex md5 of the file at ``path``."""
    return file_hash(path, "md5")


def sha256sum(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``."""
    return file_hash(path, "sha256")


def entry_hash(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(algorithm, expected hex digest) of a download entry: its one ``md5`` or ``sha256``."""
    given = [name for name in HASHES if name in entry]
    if len(given) != 1:   # DownloadEntry refuses these first; a bare dict may not have been checked
        raise UserError(f"download entry {entry.get('url')!r} must carry one of {', '.join(HASHES)}, got "
                        f"{', '.join(given) or 'none'}")
    return given[0], str(entry[given[0]]).lower()


def _one_line(text):
    return " ".join(str(text).split())


def _mirror_base(mirror):
    """A mirror URL base; a plain folder path becomes a ``file://`` URL."""
    mirror = mirror.strip()
    if "://" not in mirror:
        return Path(mirror).expanduser().resolve().as_uri()
    return mirror.rstrip("/")


def file_name(url: str) -> str:
    """The file name a URL is saved under: the last part of its path."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    name = urllib.parse.unquote(name)
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise UserError(f"cannot tell the file name from URL {url!r}: it must end in /NAME")
    return name


def _reason(err):
    """Classify a network/IO exception: (transient?, one-line reason)."""
    if isinstance(err, urllib.error.HTTPError):
        err.close()
        text = f"HTTP {err.code} {err.reason}".strip()
        return err.code >= 500 or err.code in _TRANSIENT_HTTP, text
    if isinstance(err, urllib.error.URLError):
        inner = err.reason
        if isinstance(inner, BaseException):
            return _reason(inner)
        return False, _one_line(inner)
    if isinstance(err, http.client.IncompleteRead):
        return True, f"connection closed early ({len(err.partial)} bytes short read)"
    if isinstance(err, ConnectionRefusedError):
        return False, "connection refused"
    if isinstance(err, socket.gaierror):
        return False, f"unknown host ({_one_line(err.strerror or err)})"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return True, "timed out"
    if isinstance(err, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return True, f"connection lost ({_one_line(err.strerror or type(err).__name__)})"
    if isinstance(err, http.client.HTTPException):
        return True, f"bad HTTP response ({type(err).__name__})"
    if isinstance(err, FileNotFoundError):
        return False, "no such file"
    if isinstance(err, OSError):
        return False, _one_line(err.strerror or err)
    return False, _one_line(f"{type(err).__name__}: {err}")


class _Partial:
    """The bytes of one URL already in its ``.part`` file: how many, and their running hash.

    Kept across the retries of one URL so a resumed download appends instead of starting over;
    updated chunk by chunk together with the write, so it always matches the file on disk.
    """

    def __init__(self, algorithm):
        self.algorithm = algorithm
        self.restart()

    def restart(self):
        self.received = 0
        self.digest = hashlib.new(self.algorithm)


def _content_range(headers):
    """(start, end, total) of a ``Content-Range: bytes start-end/total`` header, each an int or
    None where the header has ``*`` (or is missing or malformed)."""
    match = _CONTENT_RANGE.match(headers.get("Content-Range") or "")
    if not match:
        return None, None, None
    return tuple(int(v) if v and v != "*" else None for v in match.groups())


def _open(url, partial, timeout):
    """An open response whose body continues ``partial`` (resetting it when the server starts
    over), or None when a 416 says the bytes on disk already are the whole file."""
    start = partial.received
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if not start or err.code != 416:
            raise
        _, _, total = _content_range(err.headers)
        err.close()
        if total == start:
            return None
        partial.restart()  # the file on the server is not the one we have a prefix of
        return _open(url, partial, timeout)  # no Range now, so this recurses once at most
    if start and response.status == 206:
        got, _, _ = _content_range(response.headers)
        if got != start:  # a range we did not ask for: our prefix cannot be trusted with it
            response.close()
            partial.restart()
            return _open(url, partial, timeout)
    elif start:
        partial.restart()  # 200: the server ignored Range and sends the whole file
    return response


def _copy(response, part, name, partial):
    """Write ``response``'s body to ``part`` after the ``partial.received`` bytes already there."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    got = 0
    try:
        out = open(part, "r+b" if partial.received else "wb")
        out.seek(partial.received)
        out.truncate()  # drop anything past what the hash covers
    except OSError as err:  # our disk, not the network: no other URL will help
        raise UserError(f"cannot write {part}: {_one_line(err.strerror or err)}") from None
    with out, tqdm(
        total=None if length is None else partial.received + length, initial=partial.received,
        desc=name, unit="B", unit_scale=True, unit_divisor=1024, disable=None, leave=False,
    ) as bar:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as err:
                raise UserError(f"cannot write {part}: {_one_line(err.strerror or err)}") from None
            partial.digest.update(chunk)
            partial.received += len(chunk)
            got += len(chunk)
            bar.update(len(chunk))
    if length is not None and got < length:
        raise _Transient(f"connection closed early ({length - got} of {length} bytes missing)")


def _stream(url, part, name, timeout, partial):
    """Download ``url`` into ``part``, resuming after ``partial`` where the server allows;
    return the file's hash. Network errors become _Transient/_Permanent."""
    if urllib.parse.urlparse(url).scheme.lower() not in _RESUMABLE_SCHEMES:
        partial.restart()
    try:
        response = _open(url, partial, timeout)
        if response is not None:
            with response:
                _copy(response, part, name, partial)
    except (UserError, _Transient):
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        if isinstance(err, ValueError):  # e.g. "unknown url type"
            raise _Permanent(_one_line(err)) from None
        transient, text = _reason(err)
        raise (_Transient if transient else _Permanent)(text) from None
    return partial.digest.hexdigest()


def _check_gzip(path):
    """Raise _Permanent unless ``path`` holds a complete gzip stream."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error):
        raise _Permanent("not a valid gzip file (truncated or corrupt)") from None


def _fetch_url(url, part, name, expected, tries, backoff, timeout):
    """Try one URL up to ``tries`` times, each retry resuming where the last one stopped;
    return None on success or the failure reason. ``expected``: (algorithm, hex digest)."""
    algorithm, want = expected
    partial = _Partial(algorithm)  # a new URL starts from byte 0, whatever ``part`` holds
    for attempt in range(1, tries + 1):
        try:
            got = _stream(url, part, name, timeout, partial)
        except _Transient as err:
            if attempt == tries:
                return f"{err} after {tries} tries" if tries > 1 else str(err)
            time.sleep(min(backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            continue
        except _Permanent as err:
            return str(err)
        if got != want:
            return f"{algorithm} mismatch: expected {want}, got {got}"
        if name.endswith(".gz"):
            try:
                _check_gzip(part)
            except _Permanent as err:
                return str(err)
        return None
    return "not tried"  # tries < 1 is refused by fetch() and fetch_file()


def candidate_urls(entry: Mapping[str, Any], mirror: str | None = None) -> list[str]:
    """The URLs tried for one params entry, in order (mirror first when one is set)."""
    name = file_name(entry["url"])
    urls = []
    if mirror:
        urls.append(f"{_mirror_base(mirror)}/{urllib.parse.quote(name)}")
    urls.append(entry["url"])
    urls.extend(entry.get("mirrors") or [])
    seen = set()
    return [u for u in urls if not (u in seen or seen.add(u))]


def _plan(entry, mirror):
    """(file name, (algorithm, hex digest), candidate URLs) of one entry."""
    return file_name(entry["url"]), entry_hash(entry), candidate_urls(entry, mirror)


def _settings(mirror, tries):
    """The mirror to try first (the argument, else ``$CNN_INTERNALS_MIRROR``), ``tries`` checked."""
    if tries < 1:
        raise ValueError("tries must be >= 1")
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    return mirror


def _fetch_verified(name, expected, urls, part, tries, backoff, timeout):
    """Put the first of ``urls`` whose bytes have the ``expected`` hash into ``part``; else a
    UserError with one line listing every URL tried and why it failed."""
    failures = []
    for url in urls:
        reason = _fetch_url(url, part, name, expected, tries, backoff, timeout)
        if reason is None:
            return
        failures.append(f"{url} ({reason})")
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    raise UserError(
        f"could not fetch {name}: {'; '.join(failures)} — check the network or set "
        f"{MIRROR_ENV} to a folder/URL holding {name}"
    )


def fetch(entries: Iterable[Mapping[str, Any]], dest_dir: str | Path, mirror: str | None = None, tries: int = 3,
          backoff: float = 0.5, timeout: float = 30) -> list[Path]:
    """Download every ``{url, md5 or sha256, mirrors?}`` entry into ``dest_dir`` (named after
    the URL).

    ``mirror`` (default: ``$CNN_INTERNALS_MIRROR``) is a base URL or folder tried first for
    each file. Either every file ends up verified in ``dest_dir``, which is replaced as a whole,
    or a UserError is raised with one line listing every URL tried and why it failed, and
    nothing is written. Returns the list of written paths.
    """
    mirror = _settings(mirror, tries)
    plan = []
    for entry in entries:
        step = _plan(entry, mirror)
        if any(step[0] == other for other, _, _ in plan):
            raise UserError(f"two download entries are both named {step[0]}")
        plan.append(step)

    dest_dir = Path(dest_dir)
    with atomic_dir(dest_dir) as tmp:
        for name, expected, urls in plan:
            part = tmp / f".{name}.part"
            _fetch_verified(name, expected, urls, part, tries, backoff, timeout)
            os.replace(part, tmp / name)
    return [dest_dir / name for name, _, _ in plan]


def fetch_file(entry: Mapping[str, Any], dest_path: str | Path, mirror: str | None = None, tries: int = 3,
               backoff: float = 0.5, timeout: float = 30, check: Callable[[Path], object] | None = None) -> Path:
    """Download one ``{url, md5 or sha256, mirrors?}`` entry to ``dest_path`` (any name).

    As ``fetch``, for a single file: the same URLs in the same order, retries, resumption and
    one-line failure. The bytes go to a temporary name beside ``dest_path`` that replaces it
    only once verified, and ``check(path)`` (optional: a content check raising UserError) has
    passed on it; on any failure the temporary file is removed and ``dest_path`` is left as it
    was. Returns ``dest_path``.
    """
    name, expected, urls = _plan(entry, _settings(mirror, tries))
    dest_path = Path(dest_path)
    with atomic_path(dest_path) as part:
        _fetch_verified(name, expected, urls, part, tries, backoff, timeout)
        if check is not None:
            check(part)
    return dest_path


def check_listed(files: list, needed: list, hint: str = "") -> list:
    """``files`` (DownloadEntry) as dicts, checked to name every file in ``needed``; a ValueError
    for the params schema otherwise (``{key}``: the section's key)."""
    if not files:
        raise ValueError("{key}.files must be a non-empty list of {url, md5} entries")
    names = {file_name(entry.url) for entry in files}
    missing = [name for name in needed if name not in names]
    if missing:
        raise ValueError(f"{{key}}.files must list a URL for each of {', '.join(needed)}{hint}; "
                         f"missing {', '.join(missing)}")
    return [entry.as_dict() for entry in files]


def listed_entries(params: dict, key: str, needed: list, hint: str = "") -> list:
    """The {url, md5 or sha256, mirrors?} entries at ``key`` of the params, checked to name
    every file in ``needed`` (a one-line UserError otherwise)."""
    parent, _, last = key.rpartition(".")
    if last != "files":
        raise ValueError(f"listed_entries reads a 'files' key, not {key!r}")
    files = [entry.as_dict() for entry in read_key(params, parent, _Files, "files")]
    if not files:
        raise UserError(f"{params_name(params)}: {key} must be a non-empty list of {{url, md5}} entries")
    names = {file_name(entry["url"]) for entry in files}
    missing = [name for name in needed if name not in names]
    if missing:
        raise UserError(f"{params_name(params)}: {key} must list a URL for each of {', '.join(needed)}{hint}; "
                        f"missing {', '.join(missing)}")
    return files

