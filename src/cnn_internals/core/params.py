"""params.yaml, loaded: its name as the user typed it and each key's line, for messages (the
sections are typed and checked by core/config.py).

Every stage reads its params through ``load_params``, and with ``$CNN_INTERNALS_PARAMS_LOG``
set each dotted key a stage reads is appended to that file ("stage<TAB>key" lines): the test
that holds dvc.yaml's ``params:`` lists to what each stage's code actually reads uses it.
"""

import atexit
import os
from collections.abc import Mapping
from pathlib import Path

from cnn_internals.core.errors import UserError
from cnn_internals.core.project import shown

PARAMS_LOG = "CNN_INTERNALS_PARAMS_LOG"


class Params(dict):
    """The parsed params file; ``name`` is the file as the user named it, for messages;
    ``lines``: {dotted key: its line in the file} ("data.mnist.files[0].url": 21)."""

    name = "params.yaml"
    lines: dict = {}


def _yaml():
    """A YAML 1.2 reader, the one DVC reads params.yaml with (ruamel.yaml's safe loader): so
    ``lr: 1e-3`` is the number DVC sees (YAML 1.1, PyYAML's, reads it as text) and ``yes`` is
    text, not a bool, for both."""
    from ruamel.yaml import YAML

    return YAML(typ="safe")


def key_lines(text: str) -> dict:
    """{dotted key: 1-based line} of every key and list item in the YAML ``text``."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    lines = {}

    def walk(node, prefix):
        if isinstance(node, MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[dotted] = key.start_mark.line + 1
                walk(value, dotted)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{prefix}[{i}]")

    walk(_yaml().compose(text), "")
    return lines


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


def params_name(params: Mapping) -> str:
    return getattr(params, "name", "params.yaml")


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    label = shown(path)      # as the user typed it, from where they typed it
    if path.is_dir():
        raise UserError(f"{label} is a folder: pass the params file itself (--params {Path(label) / 'params.yaml'})")
    if not path.is_file():
        raise UserError(f"{label} not found: pass --params with the params file")
    from ruamel.yaml import YAMLError

    try:
        text = path.read_bytes().decode("utf-8")
        params = _yaml().load(text)
    except UnicodeDecodeError:
        raise UserError(f"{label} is not UTF-8 text: restore it (git checkout {path.name})") from None
    except YAMLError as err:
        # The mark says where, the problem what ("found duplicate key", "expected ',' or ']'").
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{label} is not valid YAML{where}: {' '.join(str(what).split())}") from None
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
    params.lines = key_lines(text)
    return params
