"""params.yaml access with validation: a bad or missing key is a UserError naming the file and
the key.

Every stage reads its params through ``load_params``, and with ``$CNN_INTERNALS_PARAMS_LOG``
set each dotted key a stage reads is appended to that file ("stage<TAB>key" lines): the test
that holds dvc.yaml's ``params:`` lists to what each stage's code actually reads uses it.
"""

import atexit
import math
import os
import re
from pathlib import Path

import yaml

from cnn_internals.core.errors import UserError
from cnn_internals.core.project import shown

_MISSING = object()
PARAMS_LOG = "CNN_INTERNALS_PARAMS_LOG"


class Params(dict):
    """The parsed params file; ``name`` is the file as the user named it, for messages."""

    name = "params.yaml"


class _Recorded(dict):
    """A params section that notes every key read from it (only with $CNN_INTERNALS_PARAMS_LOG)."""

    def __init__(self, data, prefix, seen):
        super().__init__({k: _recorded(v, f"{prefix}{k}.", seen) for k, v in data.items()})
        self._prefix, self._seen = prefix, seen

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self._seen.add(f"{self._prefix}{key}")
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default


class _RecordedParams(_Recorded, Params):
    pass


def _recorded(value, prefix, seen):
    return _Recorded(value, prefix, seen) if isinstance(value, dict) else value


def _log_reads(seen, log):
    stage = os.environ.get("DVC_STAGE", "-")
    with open(log, "a", encoding="utf-8") as f:
        f.writelines(f"{stage}\t{key}\n" for key in sorted(seen))


def params_name(params) -> str:
    return getattr(params, "name", "params.yaml")


def load_params(path="params.yaml") -> Params:
    path = Path(path)
    label = shown(path)      # as the user typed it, from where they typed it
    if path.is_dir():
        raise UserError(f"{label} is a folder: pass the params file itself (--params {Path(label) / 'params.yaml'})")
    if not path.is_file():
        raise UserError(f"{label} not found: pass --params with the params file")
    try:
        params = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{label} is not UTF-8 text: restore it (git checkout {path.name})") from None
    except yaml.YAMLError as err:
        # PyYAML's first line names the problem, the "line N, column M" mark comes after it.
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{label} is not valid YAML{where}: {str(err).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise UserError(f"{label} must be a mapping of sections")
    log = os.environ.get(PARAMS_LOG)
    if log:
        seen = set()
        atexit.register(_log_reads, seen, os.path.abspath(log))
        params = _RecordedParams(params, "", seen)
    else:
        params = Params(params)
    params.name = label
    return params


def get(params, dotted, kind=None, choices=None, minimum=None, above=None, default=_MISSING):
    """The value at ``dotted`` (e.g. "train.lenet5.lr"), checked; UserError names the key."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise UserError(f"{params_name(params)}: missing key {dotted!r}")
        node = node[part]
    where = params_name(params)
    if kind is not None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a YAML `true` must not pass as a count.
        if isinstance(node, bool) and bool not in kinds or not isinstance(node, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise UserError(f"{where}: {dotted} must be {names}, got {node!r}")
    # YAML reads .nan and .inf as floats: no knob of this pipeline means anything there.
    if isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{where}: {dotted} must be a finite number, got {node!r}")
    if choices is not None and node not in choices:
        raise UserError(f"{where}: {dotted} must be one of {', '.join(map(str, choices))}; got {node!r}")
    if minimum is not None and node < minimum:
        raise UserError(f"{where}: {dotted} must be >= {minimum}, got {node!r}")
    if above is not None and node <= above:
        raise UserError(f"{where}: {dotted} must be > {above}, got {node!r}")
    return node


# The hashes a download entry may carry, each with its hex length: exactly one per entry.
HASHES = {"md5": 32, "sha256": 64}


def download_entry(entry, where: str, hashes=tuple(HASHES)) -> dict:
    """One download entry ({url, md5 or sha256, mirrors?}) checked; ``where`` names it in the
    one-line UserError (e.g. "params.yaml: data.mnist.files[0]"). ``hashes``: the ones allowed."""
    allowed = " or ".join(hashes)
    if not isinstance(entry, dict):
        raise UserError(f"{where} must be a mapping with url and {allowed}, got {entry!r}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"{where}.url must be a URL string, got {url!r}")
    given = [name for name in HASHES if name in entry]
    if len(given) != 1 or given[0] not in hashes:
        wanted = " or ".join(f"{name} ({HASHES[name]} hex digits)" for name in hashes)
        has = (f"both {' and '.join(given)}" if len(given) > 1 else
               f"{given[0]}, not accepted here" if given else "none")
        raise UserError(f"{where} must carry one hash, {wanted}; it has {has}")
    name = given[0]
    digest = entry[name]
    if not isinstance(digest, str) or not re.fullmatch(f"[0-9a-fA-F]{{{HASHES[name]}}}", digest):
        raise UserError(f"{where}.{name} must be {HASHES[name]} hex digits, got {digest!r}")
    mirrors = entry.get("mirrors") or []
    if not isinstance(mirrors, list) or not all(isinstance(m, str) and m.strip() for m in mirrors):
        raise UserError(f"{where}.mirrors must be a list of URL strings, got {mirrors!r}")
    unknown = set(entry) - {"url", "mirrors", *HASHES}
    if unknown:
        raise UserError(f"{where} has unknown keys {sorted(unknown)}: use url, {allowed}, mirrors")
    return entry


def download_entries(params: dict, key: str) -> list:
    """The list at ``key`` as download entries ({url, md5 or sha256, mirrors?}), validated."""
    files = get(params, key, kind=list)
    name = params_name(params)
    if not files:
        raise UserError(f"{name}: {key} must be a non-empty list of {{url, md5}} entries")
    for i, entry in enumerate(files):
        download_entry(entry, f"{name}: {key}[{i}]")
    return files
