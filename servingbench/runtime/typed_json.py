"""Dataclasses to and from JSON objects, and the JSON Schema of a dataclass, from its fields.

Written by hand (about a hundred lines) because the runtime may import only the standard
library (no pydantic, no dacite): servingbench.runtime.records declares the result files' types with
``record_field`` (each field's unit and one-line meaning in its metadata), and everything here
reads those declarations, so a field is spelled once.

Rules: a field whose default is ``dataclasses.MISSING`` is a required key; ``omit=True`` leaves the
key out of the JSON when the value is None (a key that exists only where it applies); a field
named ``extra`` keeps the keys a newer writer added that this version does not know, so reading
and writing a file loses nothing. Runtime module: standard library only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any, Literal, Union

EXTRA = "extra"


def record_field(unit: str, doc: str, *, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING,
                 omit: bool = False, summary: bool = False, metric: str | None = None,
                 schema: dict[str, Any] | None = None) -> Any:
    """A dataclass field with its ``unit`` ("" when it has none) and one-line ``doc``.

    ``omit``: absent from the JSON when None. ``summary``: aggregate makes it a summary.csv metric;
    ``metric``: that metric's name where it is not the field's. ``schema``: extra JSON Schema
    keywords (e.g. ``{"minimum": 0}``)."""
    meta = {"unit": unit, "doc": doc, "omit": omit, "summary": summary or metric is not None, "metric": metric,
            "schema": schema or {}}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


def extra_field() -> Any:
    """Keys this version does not know (a newer writer's): kept, written back at the top level."""
    return dataclasses.field(default_factory=dict, metadata={"unit": "", "doc": "", "extra": True}, repr=False)


@lru_cache(maxsize=None)
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields_of(cls: type) -> list[dataclasses.Field]:
    """The JSON fields of a record type (its ``extra`` catch-all left out), in declaration order."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("extra")]


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _non_null(tp: Any) -> Any:
    """X of ``X | None`` (tp itself otherwise)."""
    if _is_union(tp):
        rest = [a for a in _args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Union[tuple(rest)]
    return tp


def is_record(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


# -- to and from JSON ---------------------------------------------------------------------------
def to_json(value: Any) -> Any:
    """A record (or a list / dict of them) as plain JSON data."""
    if is_record(type(value)):
        out: dict[str, Any] = {}
        for f in fields_of(type(value)):
            v = getattr(value, f.name)
            if v is None and f.metadata.get("omit"):
                continue
            out[f.name] = to_json(v)
        out.update(getattr(value, EXTRA, None) or {})
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


class ShapeError(ValueError):
    """Data that does not have a record's shape; ``where`` is the JSON path (a/0/b)."""


def from_json(tp: Any, data: Any, where: str = "") -> Any:
    """``data`` (parsed JSON) as type ``tp``: records, lists and dicts of them are rebuilt."""
    if data is None:
        return None
    tp = _non_null(tp)
    if is_record(tp):
        if not isinstance(data, dict):
            raise ShapeError(f"{where or '(top level)'}: expected an object, found {type(data).__name__}")
        kw: dict[str, Any] = {}
        known = set()
        for f in fields_of(tp):
            known.add(f.name)
            if f.name in data:
                kw[f.name] = from_json(hints(tp)[f.name], data[f.name], f"{where}/{f.name}".lstrip("/"))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ShapeError(f"{where or '(top level)'}: no {f.name!r}")
        if any(f.name == EXTRA for f in dataclasses.fields(tp)):
            kw[EXTRA] = {k: v for k, v in data.items() if k not in known}
        return tp(**kw)
    origin = typing.get_origin(tp)
    if origin is list and isinstance(data, list):
        return [from_json(_args(tp)[0], v, f"{where}/{i}") for i, v in enumerate(data)]
    if origin is dict and isinstance(data, dict):
        return {k: from_json(_args(tp)[1], v, f"{where}/{k}") for k, v in data.items()}
    return data


# -- JSON Schema -------------------------------------------------------------------------------
_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}


def schema_of(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``tp``; record types go into ``defs`` (by class name) and are referenced."""
    nullable = _is_union(tp) and type(None) in _args(tp)
    inner = _non_null(tp)
    if is_record(inner):
        if inner.__name__ not in defs:
            defs[inner.__name__] = {}  # placeholder: a record may refer to itself
            defs[inner.__name__] = record_schema(inner, defs)
        ref = {"$ref": f"#/$defs/{inner.__name__}"}
        return {"oneOf": [{"type": "null"}, ref]} if nullable else ref
    if typing.get_origin(inner) is Literal:
        values = list(_args(inner))
        return {"enum": values + [None] if nullable else values}
    if inner in _SCALARS:
        # float accepts ints too: JSON does not tell 1 from 1.0
        return {"type": [_SCALARS[inner], "null"] if nullable else _SCALARS[inner]}
    origin = typing.get_origin(inner)
    out: dict[str, Any]
    if origin is list:
        out = {"type": "array", "items": schema_of(_args(inner)[0], defs)}
    elif origin is dict:
        value = _args(inner)[1]
        out = {"type": "object"} if value is Any else {"type": "object",
                                                         "additionalProperties": schema_of(value, defs)}
    else:
        return {}  # Any: whatever a writer put there
    if nullable:
        out["type"] = [out["type"], "null"]
    return out


def record_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    """An object schema of one record type: its documented properties; unknown keys allowed
    (a newer writer stays readable)."""
    props: dict[str, Any] = {}
    required = []
    for f in fields_of(cls):
        prop = schema_of(hints(cls)[f.name], defs)
        prop = {"description": describe(f), **prop, **f.metadata.get("schema", {})}
        props[f.name] = prop
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "description": first_line(cls.__doc__)}
    if required:
        out["required"] = required
    out["properties"] = props
    out.update(getattr(cls, "__schema_extra__", {}))
    return out


def describe(f: dataclasses.Field) -> str:
    unit = f.metadata.get("unit")
    return f"{f.metadata['doc']} [{unit}]" if unit else f.metadata["doc"]


def first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())
