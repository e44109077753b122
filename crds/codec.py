"""The one place where camelCase JSON meets snake_case dataclasses.

Each Workspace dataclass declares its JSON fields as a table of `Field`s; this module turns
a JSON mapping into the dataclass (collecting every type error with its field path) and
back. Unknown keys are kept in each object's `extra` so nothing a user wrote is lost on a
round trip. It must not know any Workspace business rule and must not do I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["str", "int", "bool", "object", "strlist", "strmap", "model", "modellist"]

ERROR_TYPES = frozenset(
    {"Required", "Invalid", "NotSupported", "Forbidden", "TooLong", "TooMany", "Duplicate"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldError:
    """One problem with one field, in the words of Kubernetes' `field.Error`."""

    path: str
    type: str
    message: str
    value: Any = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Field:
    """How one JSON key maps to one dataclass attribute."""

    json: str
    attr: str
    kind: Kind
    model: type[Any] | None = None


def join(path: str, key: str | int) -> str:
    """Extend a dotted field path: join("a", "b") == "a.b", join("a", 2) == "a[2]"."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _wrong(path: str, want: str, value: Any, errors: list[FieldError]) -> None:
    errors.append(
        FieldError(
            path=path,
            type="Invalid",
            message=f"must be {want}, got {_describe(value)}",
            value=value if not isinstance(value, Mapping | list) else None,
        )
    )


def _scalar(kind: Kind, raw: Any, path: str, errors: list[FieldError]) -> Any:
    if kind == "str":
        if isinstance(raw, str):
            return raw
        _wrong(path, "a string", raw, errors)
    elif kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        _wrong(path, "an integer", raw, errors)
    elif kind == "bool":
        if isinstance(raw, bool):
            return raw
        _wrong(path, "a boolean", raw, errors)
    elif kind == "object":
        if isinstance(raw, Mapping):
            return copy.deepcopy(dict(raw))
        _wrong(path, "an object", raw, errors)
    return None


def _strlist(raw: Any, path: str, errors: list[FieldError]) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        _wrong(path, "an array of strings", raw, errors)
        return None
    out: list[str] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            out.append(item)
        else:
            _wrong(join(path, i), "a string", item, errors)
    return tuple(out)


def _strmap(raw: Any, path: str, errors: list[FieldError]) -> dict[str, str] | None:
    if not isinstance(raw, Mapping):
        _wrong(path, "an object of strings", raw, errors)
        return None
    out: dict[str, str] = {}
    for key, item in raw.items():
        if isinstance(item, str):
            out[str(key)] = item
        else:
            _wrong(join(path, str(key)), "a string", item, errors)
    return out


def _value(field: Field, raw: Any, path: str, errors: list[FieldError]) -> Any:
    if field.kind == "strlist":
        return _strlist(raw, path, errors)
    if field.kind == "strmap":
        return _strmap(raw, path, errors)
    if field.kind == "model":
        assert field.model is not None
        return parse_model(field.model, raw, path, errors)
    if field.kind == "modellist":
        assert field.model is not None
        if not isinstance(raw, list):
            _wrong(path, "an array", raw, errors)
            return None
        items = [parse_model(field.model, x, join(path, i), errors) for i, x in enumerate(raw)]
        return tuple(x for x in items if x is not None)
    return _scalar(field.kind, raw, path, errors)


def parse_model(cls: type[Any], raw: Any, path: str, errors: list[FieldError]) -> Any:
    """Build `cls` from `raw`; append every type problem to `errors`; bad fields become None."""
    if not isinstance(raw, Mapping):
        _wrong(path or "<root>", "an object", raw, errors)
        return None
    fields: tuple[Field, ...] = cls.JSON_FIELDS
    known = {f.json for f in fields}
    kwargs: dict[str, Any] = {}
    for f in fields:
        if raw.get(f.json) is not None:
            kwargs[f.attr] = _value(f, raw[f.json], join(path, f.json), errors)
    kwargs["extra"] = {str(k): copy.deepcopy(v) for k, v in raw.items() if k not in known}
    return cls(**kwargs)


def dump_model(obj: Any) -> dict[str, Any]:
    """The JSON form of a dataclass built by `parse_model`: absent (None) fields are left out."""
    out: dict[str, Any] = {}
    for f in obj.JSON_FIELDS:
        value = getattr(obj, f.attr)
        if value is None:
            continue
        if f.kind == "model":
            out[f.json] = dump_model(value)
        elif f.kind == "modellist":
            out[f.json] = [dump_model(x) for x in value]
        elif f.kind == "strlist":
            out[f.json] = list(value)
        else:
            out[f.json] = copy.deepcopy(value)
    for key, value in obj.extra.items():
        out[key] = copy.deepcopy(value)
    return out
