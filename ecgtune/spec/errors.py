"""How a spec's problems are reported: `SpecError` (one 'key.path: what is wrong' line per problem,
each prefixed by the file), and pydantic's validation errors turned into such lines:

    sweeps/x.yaml: search.asha.grace_period: Input should be greater than or equal to 1 (got 0)
    sweeps/x.yaml: unknown key 'grace_perod' in search.asha; allowed: clock, grace_period, ...
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from pydantic import BaseModel, TypeAdapter, ValidationError

from ecgtune.spec.schema import Spec


class SpecError(ValueError):
    """A spec that cannot run. `problems` holds one 'key.path: what is wrong' line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__("\n".join(f"{self.source}: {p}" for p in self.problems))


class SpecProblem(Exception):
    """One problem found while reading a key path or value; the caller adds where it is."""


def format_validation_error(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc, union = _trim_loc(err["loc"])
        path = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            where = f"in {'.'.join(str(p) for p in parent)}" if parent else "at top level"
            line = f"unknown key {key!r} {where}{allowed_hint(key, _keys_at(parent))}"
        elif union is not None:
            line = f"{path}: expected {_type_name(union)}{_got(err['input'])}"
        elif err["type"] == "missing":
            parent = ".".join(str(p) for p in loc[:-1])
            line = f"missing required key {str(loc[-1])!r} " + (f"in {parent}" if parent else "at top level")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            line = f"{path}: {msg}" + ("" if err["type"] == "value_error" else _got(err["input"]))
        if line not in lines:
            lines.append(line)
    return lines


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _trim_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """Follow an error location through the schema. Pydantic appends the member tried ('int',
    'float') to a union's location; cut it off and return the union type to name in the message."""
    tp: Any = Spec
    for i, part in enumerate(loc):
        tp = _unwrap_optional(tp)
        origin = typing.get_origin(tp)
        if _is_model(tp):
            if part not in tp.model_fields:
                return loc, None
            tp = tp.model_fields[part].annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            return loc[:i], tp
        else:
            return loc, None
    return loc, None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    tp: Any = Spec
    for part in loc:
        tp = _unwrap_optional(tp)
        if _is_model(tp) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap_optional(tp)
    return list(tp.model_fields) if _is_model(tp) else []


def allowed_hint(name: str, allowed: list[str]) -> str:
    if not allowed:
        return ""
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f"; allowed: {', '.join(allowed)}" + (f" (did you mean {close[0]!r}?)" if close else "")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", repr(tp))


def strict_problem(tp: Any, value: Any) -> tuple[str, str] | None:
    """(where inside the value, why) `value` is not of type `tp` in pydantic's strict mode, or None.

    Strict: a float is no int (a float range over an int knob would fail mid-sweep), a string is no
    number. A YAML list stands for a tuple.
    """
    if typing.get_origin(_unwrap_optional(tp)) is tuple and isinstance(value, list):
        value = tuple(value)
    try:
        _adapter(tp).validate_python(value, strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        return ".".join(str(p) for p in err["loc"]), f"{err['msg']}{_got(err['input'])}"
    return None


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)
