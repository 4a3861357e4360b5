"""Typed method configs: field docstrings become ``--help``; overrides are parsed and validated.

A config is a dataclass whose fields each carry a one-line docstring (the string literal right after
the field). ``apply_overrides`` turns ``key=value`` strings or TOML tables into a new, validated
config; an unknown key or a wrong type raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from gendm.core.errors import ConfigError, suggest

C = TypeVar("C")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each dataclass field to the docstring written under it (walks base classes too)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type) -> str:
    """A help text: one line per field with its type, default and docstring."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  {f.name}={default!r}  ({_type_name(hints[f.name])})\n      {docs.get(f.name, '')}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (a string from the command line or a TOML value) to field type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, arg, value)
            except ConfigError:
                pass
        raise ConfigError(f"Field {name!r}: {value!r} matches none of {_type_name(tp)}.")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"Field {name!r}: {value!r} is not one of {list(allowed)}.")
        return value
    if origin in (tuple, list):
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"Field {name!r}: expected a list, got {value!r}.")
        items = [_coerce(name, item_tp, v) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"Field {name!r}: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"Field {name!r}: expected an integer, got {value!r}.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                pass
            else:
                if f.is_integer():
                    return int(f)
        raise ConfigError(f"Field {name!r}: expected an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"Field {name!r}: expected a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"Field {name!r}: expected a string, got {value!r}.")
    return value


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a pair without '=' is an error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"Override {pair!r} is not of the form key=value (e.g. --set learning_rate=1e-3)."
            )
        out[key.strip()] = value.strip()
    return out


def apply_overrides(config: C, overrides: Mapping[str, Any] | Iterable[str]) -> C:
    """Return a copy of ``config`` with overrides applied, type-checked and validated."""
    if not isinstance(overrides, Mapping):
        overrides = parse_assignments(overrides)
    cls = type(config)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(
                f"{cls.__name__} has no field {key!r}.{suggest(key, names)} Fields: {', '.join(names)}."
            )
        changes[key] = _coerce(key, hints[key], value)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def to_dict(config: Any) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def check(condition: bool, field: str, message: str) -> None:
    """Validation helper for ``__post_init__``: raise ConfigError naming the field."""
    if not condition:
        raise ConfigError(f"Field {field!r}: {message}")
