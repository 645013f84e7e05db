"""params.yaml as typed sections: every section is a pydantic schema (types, choices, bounds,
finite numbers, cross-key rules), read by one function, and every bad value becomes one line.

A schema is a ``Section`` subclass declared where its keys are used: a net's own ``train.<net>``
keys in its model file (models/), the training recipe in training/recipe.py, ``mine``, the
pipeline lists and the composed ``train.<net>`` schema in pipeline/config.py, ``render`` and
``report`` in viz/, ``data.<dataset>`` and ``weights.<net>`` in data/. The validate stage reads
them all; each stage reads the sections it declares in dvc.yaml through ``read_section`` (or
one key of one through ``read_key``).

Errors keep the form every stage has always printed: the file, the dotted key, what is wrong
and the value, then the line in the file where YAML gives it:

    params.yaml: train.lenet5.lr must be > 0, got 0 (line 66)
    params.yaml: unknown key 'train.lenet5.epohcs'; did you mean 'train.lenet5.epochs'? (line 64)

A validator with a message of its own raises ``ValueError``; ``{key}`` in it is replaced by
the dotted key it concerns, and a message without ``{key}`` is put after the key.

Why strict: YAML already types its scalars, so ``lr: "0.1"`` or ``epochs: true`` is a typo,
not something to convert. An int is accepted where a float is wanted (``lr: 1``).
"""

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from cnn_internals.core.errors import UserError
from cnn_internals.core.params import params_name

# The types most keys use.
Count = Annotated[int, Field(ge=1)]            # a number of things: at least one
Natural = Annotated[int, Field(ge=0)]          # zero allowed (epochs 0: evaluate only)
Positive = Annotated[float, Field(gt=0)]       # learning rates, loss constants
NonNegative = Annotated[float, Field(ge=0)]    # decays, standard deviations, radii (0: off)


def _all_or_count(value: Any) -> Any:
    if value != "all" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"must be all or an int >= 1, got {value!r}")
    return value


AllOrCount = Annotated[int | str, BeforeValidator(_all_or_count)]   # all, or the first N (maps, units)


def first(n: int | str, total: int) -> int:
    """How many of ``total`` an AllOrCount keeps: all of them, or the first n."""
    return total if n == "all" else min(n, total)

_TYPE_NAMES = {"int_type": "int", "float_type": "a number", "bool_type": "bool (true or false)", "string_type": "str",
               "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
               "model_attributes_type": "a mapping", "none_required": "null"}
_MISSING = object()


class Section(BaseModel):
    """A params.yaml section: unknown keys refused (with the closest known one), YAML's types
    taken as they are, .nan and .inf refused, and the values frozen once read."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def node(params: Mapping, dotted: str, default: Any = _MISSING) -> Any:
    """The raw value at ``dotted`` ("train.lenet5"), or ``default`` where a part is missing;
    without a default a missing key is a UserError naming it."""
    value = params
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            if default is not _MISSING:
                return default
            raise UserError(f"{params_name(params)}: missing key {dotted!r}{line_of(params, dotted)}")
        value = value[part]
    return value


def _plain(value: Any) -> Any:
    """A plain copy, every key read one by one (so the params log of core/params.py sees them)."""
    if isinstance(value, Mapping):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def read_section(params: Mapping, dotted: str, schema: type[Section], context: dict | None = None) -> Section:
    """The section at ``dotted`` validated by ``schema`` (``context``: what its validators may
    need, e.g. the net's dataset); a bad or missing value is a one-line UserError."""
    raw = _plain(node(params, dotted))
    try:
        return schema.model_validate(raw, context=context)
    except ValidationError as err:
        raise UserError(message(params, dotted, schema, _first(err))) from None


def read_key(params: Mapping, dotted: str, schema: type[Section], key: str, context: dict | None = None) -> Any:
    """One key of the section at ``dotted``, validated as ``schema`` declares it (its type and
    its own validators; rules across keys are the whole section's): for a stage that declares
    only that key, so reads no other."""
    field = schema.model_fields[key]
    default = _MISSING if field.is_required() else field.get_default(call_default_factory=True)
    value = _plain(node(params, f"{dotted}.{key}", default))
    try:
        return getattr(schema.model_validate({key: value}, context=context), key)
    except ValidationError as err:
        own = [error for error in err.errors(include_url=False) if tuple(error["loc"])[:1] == (key,)]
        if own:
            raise UserError(message(params, dotted, schema, own[0])) from None
    # Valid, but the schema wants other keys this read leaves out: the value as its type makes it.
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    probe = type(f"{schema.__name__}_{key}", (Section,), {"__annotations__": {key: annotation}})
    return getattr(probe.model_validate({key: value}, context=context), key)


def check_keys(params: Mapping, dotted: str, known: Collection[str]) -> None:
    """The keys of the mapping at ``dotted`` ("" for the top level) are all in ``known``; the
    first that is not is a UserError naming the closest known one."""
    section = params if not dotted else node(params, dotted, None)
    if not isinstance(section, Mapping):
        return
    for key in section:
        if key not in known:
            full = f"{dotted}.{key}" if dotted else str(key)
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            where = f"{dotted}.{close[0]}" if dotted and close else close[0] if close else ""
            hint = f"did you mean {where!r}?" if close else f"{dotted or 'the file'} takes {', '.join(known)}"
            raise UserError(f"{params_name(params)}: unknown key {full!r}; {hint}{line_of(params, full)}")


def _first(err: ValidationError) -> dict:
    """The error to report: an unknown key before a missing one, since a misspelled key is both
    (``epohcs`` unknown, ``epochs`` missing) and the unknown one names the typo, its line and
    the key meant; otherwise pydantic's first."""
    errors = err.errors(include_url=False)
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _dotted(prefix: str, loc: tuple) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _known_keys(schema: type[BaseModel], loc: tuple) -> list:
    """The keys the schema allows where ``loc`` points (for an unknown key's suggestion)."""
    model = schema
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def line_of(params: Mapping, dotted: str) -> str:
    """" (line N)" where the key (or, if absent, its closest parent) is written in the file."""
    lines = getattr(params, "lines", None) or {}
    while dotted:
        if dotted in lines:
            return f" (line {lines[dotted]})"
        dotted = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", dotted) if re.search(r"[.\[]", dotted) else ""
    return ""


def message(params: Mapping, prefix: str, schema: type[BaseModel], first: dict) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as one line: the file, the
    dotted key, what is allowed, the value, the line."""
    kind, loc, value, ctx = first["type"], tuple(first["loc"]), first.get("input"), first.get("ctx") or {}
    key = _dotted(prefix, loc)
    if kind == "missing":
        text = f"missing key {key!r}"
    elif kind == "extra_forbidden":
        parent = _dotted(prefix, loc[:-1])
        known = _known_keys(schema, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        text = f"unknown key {key!r}; " + (f"did you mean {parent + '.' + close[0]!r}?" if close else
                                           f"{parent} takes {', '.join(known)}")
    elif kind in _TYPE_NAMES:
        text = f"{key} must be {_TYPE_NAMES[kind]}, got {value!r}"
    elif kind == "literal_error":
        choices = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
        text = f"{key} must be one of {', '.join(choices)}; got {value!r}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
                 "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}[kind]
        limit = ctx[bound[1]]
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        text = f"{key} must be {bound[0]} {limit}, got {value!r}"
    elif kind == "finite_number":
        text = f"{key} must be a finite number, got {value!r}"
    elif kind in ("value_error", "assertion_error"):
        own = str(ctx.get("error", first["msg"]))
        text = own.replace("{key}", key) if "{key}" in own else f"{key} {own}"
    else:
        text = f"{key}: {first['msg']}, got {value!r}"
    return f"{params_name(params)}: {text}{line_of(params, key)}"
