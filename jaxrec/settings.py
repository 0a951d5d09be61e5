"""Typed settings: dataclass fields checked by their annotations and ``metadata`` bounds.

The run config (``jaxrec.train.config``) and the per-family model configs
(``jaxrec.models.base``) are nested dataclasses; this module is what makes them *typed* at
run time too: a value from a config file, a ``--set a.b=c`` override or an old run
directory's JSON is parsed and checked against the field's annotation, and a bad one is
answered with one line naming the key, the value and what was expected. Bounds live beside
the field: ``field(default=1, metadata=at_least(1))``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from jaxrec.errors import UserError


def at_least(lo, *, exclusive: bool = False) -> dict:
    return {"lo": lo, "lo_exclusive": exclusive}


def between(lo, hi, *, lo_exclusive: bool = False, hi_exclusive: bool = False) -> dict:
    return {"lo": lo, "hi": hi, "lo_exclusive": lo_exclusive, "hi_exclusive": hi_exclusive}


def one_of(*choices) -> dict:
    return {"choices": choices}


def describe(tp) -> str:
    args = typing.get_args(tp)
    if _is_optional(tp):
        return f"{describe(_non_none(tp))} or none"
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return f"a list of {describe(args[0])}s" if args else "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _non_none(tp):
    return next(a for a in typing.get_args(tp) if a is not type(None))


def parse_text(text: str, tp):
    """A ``--set`` value (always text) -> a value of type ``tp`` (raises ValueError)."""
    t = text.strip()
    if _is_optional(tp):
        return None if t.lower() in ("none", "null", "") else parse_text(t, _non_none(tp))
    origin = typing.get_origin(tp)
    if tp is bool:
        if t.lower() in ("true", "1", "yes"):
            return True
        if t.lower() in ("false", "0", "no"):
            return False
        raise ValueError
    if tp is int:
        return int(t)
    if tp is float:
        return float(t)
    if tp is str:
        return t
    if origin in (list, tuple) or tp in (list, tuple):
        inner = (typing.get_args(tp) or (str,))[0]
        items = json.loads(t) if t.startswith("[") else [x for x in t.split(",") if x.strip()]
        return [parse_text(str(x), inner) if isinstance(x, str) else coerce(x, inner) for x in items]
    if tp is dict or origin is dict:
        v = json.loads(t)
        if not isinstance(v, dict):
            raise ValueError
        return v
    raise ValueError


def coerce(value, tp):
    """A JSON-like value -> type ``tp`` (ints widen to floats, lists to tuples); ValueError if
    it is not one."""
    if _is_optional(tp):
        return None if value is None else coerce(value, _non_none(tp))
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError
        inner = (typing.get_args(tp) or (object,))[0]
        out = [v if inner is object else coerce(v, inner) for v in value]
        return tuple(out) if (origin or tp) is tuple else out
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ValueError
    return value


def check_bounds(key: str, value, meta) -> None:
    if value is None or not meta:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise UserError(f"{key}={value!r}: expected one of {', '.join(map(repr, meta['choices']))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta.get("lo_exclusive") else value < lo):
        raise UserError(f"{key}={value!r}: expected a value {'>' if meta.get('lo_exclusive') else '>='} {lo}")
    if hi is not None and (value >= hi if meta.get("hi_exclusive") else value > hi):
        raise UserError(f"{key}={value!r}: expected a value {'<' if meta.get('hi_exclusive') else '<='} {hi}")


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_field(cls, name: str, value, prefix: str = ""):
    """``value`` for field ``name`` of dataclass ``cls``, coerced and bounds-checked."""
    key = prefix + name
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    tp = hints(cls)[name]
    try:
        v = coerce(value, tp)
    except ValueError:
        raise UserError(f"{key}={value!r}: expected {describe(tp)}") from None
    check_bounds(key, v, f.metadata)
    return v


def from_text(cls, name: str, text: str, prefix: str = ""):
    """A ``--set`` value for field ``name`` of ``cls``, parsed, coerced and bounds-checked."""
    key = prefix + name
    tp = hints(cls)[name]
    try:
        value = parse_text(text, tp)
    except (ValueError, json.JSONDecodeError):
        raise UserError(f"{key}={text!r}: expected {describe(tp)}") from None
    return check_field(cls, name, value, prefix)


def unknown_key(prefix: str, name: str, cls) -> UserError:
    names = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    return UserError(f"unknown setting {prefix + name!r}; known: {', '.join(names)}")


def validate(obj, prefix: str = "") -> None:
    """Check every field of dataclass ``obj`` (and nested dataclasses) in place."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            validate(v, prefix + f.name + ".")
            continue
        object.__setattr__(obj, f.name, check_field(type(obj), f.name, v, prefix))
