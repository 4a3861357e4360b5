"""Typed method configs: field docstrings become ``--help``; overrides are parsed and validated.

A config is a dataclass whose fields each carry a one-line docstring (the string literal right after
the field) and, where a value can be wrong, a constraint declared beside it::

    @dataclass
    class MyConfig(Config):
        tau: float = field(0.005, gt=0, le=1)
        '''Polyak coefficient.'''

``Config.__post_init__`` checks every declared constraint (and that ``int`` / ``float`` fields hold
numbers) when a config is built, so also after ``dataclasses.replace`` and ``apply_overrides``;
rules that relate two fields stay explicit ``check(...)`` calls in the subclass's ``__post_init__``,
after ``super().__post_init__()``. ``apply_overrides`` turns ``key=value`` strings or TOML tables into
a new, validated config; an unknown key or a wrong value raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import numbers
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from gendm.core.errors import ConfigError, suggest

C = TypeVar("C")

_RULE = "gendm.rule"  # the dataclasses.field metadata key of a Rule


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's value may be: a range (``gt``/``ge`` below, ``lt``/``le`` above) and/or a set of
    choices. On a tuple or list field the range applies to every item."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if (self.gt is not None and self.ge is not None) or (self.lt is not None and self.le is not None):
            raise TypeError("Give at most one lower bound (gt or ge) and one upper bound (lt or le).")

    def describe(self) -> str:
        """``in (0, 1]``, ``>= 1``, ``one of a, b``: the allowed values, as help and errors show them."""
        low = f"({self.gt}" if self.gt is not None else f"[{self.ge}" if self.ge is not None else ""
        high = f"{self.lt})" if self.lt is not None else f"{self.le}]" if self.le is not None else ""
        parts = []
        if low and high:
            parts.append(f"in {low}, {high}")
        elif low:
            parts.append(("> " if self.gt is not None else ">= ") + low[1:])
        elif high:
            parts.append(("< " if self.lt is not None else "<= ") + high[:-1])
        if self.choices is not None:
            parts.append("one of " + ", ".join(str(c) for c in self.choices))
        return " and ".join(parts)

    def admits(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        return not (
            (self.gt is not None and not value > self.gt)
            or (self.ge is not None and not value >= self.ge)
            or (self.lt is not None and not value < self.lt)
            or (self.le is not None and not value <= self.le)
        )


def field(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Iterable[Any] | None = None,
) -> Any:
    """A dataclass field with a constraint that ``Config`` checks on construction, e.g.
    ``gamma: float = field(0.99, ge=0, le=1)`` or ``selector: str = field("argmax", choices=SELECTORS)``."""
    rule = Rule(gt, ge, lt, le, None if choices is None else tuple(choices))
    metadata = {_RULE: rule} if rule != Rule() else {}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class _FieldCheck:
    name: str
    rule: Rule | None
    number: type | None  # int or float: the value (or each item) must be one
    optional: bool  # the type admits None
    items: bool  # a tuple or list field: rule and number apply to every item


def field_rules(cls: type) -> dict[str, Rule]:
    """Each constrained field's rule; a field redeclared without one keeps its base class's."""
    rules = {}
    for f in dataclasses.fields(cls):
        for klass in cls.__mro__:
            declared = getattr(klass, "__dataclass_fields__", {}).get(f.name)
            if declared is not None and _RULE in declared.metadata:
                rules[f.name] = declared.metadata[_RULE]
                break
    return rules


@functools.cache
def _field_checks(cls: type) -> tuple[_FieldCheck, ...]:
    hints, rules = typing.get_type_hints(cls), field_rules(cls)
    checks = []
    for f in dataclasses.fields(cls):
        tp, optional, items = hints[f.name], False, False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = len(args) < len(typing.get_args(tp))
            tp = args[0] if len(args) == 1 else Any
        if typing.get_origin(tp) in (tuple, list):
            items, tp = True, (typing.get_args(tp) or (Any,))[0]
        number = tp if tp in (int, float) else None
        if number is not None or f.name in rules:
            checks.append(_FieldCheck(f.name, rules.get(f.name), number, optional, items))
    return tuple(checks)


def _number_problem(number: type | None, value: Any) -> str | None:
    if number is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if number is int else numbers.Real):
        return f"expected {'an integer' if number is int else 'a number'}, got {value!r}."
    return None


def validate(config: Any) -> None:
    """Check every field of ``config`` against its declared rule and number type; ConfigError names it."""
    for fc in _field_checks(type(config)):
        value = getattr(config, fc.name)
        if value is None and fc.optional:
            continue
        values = tuple(value) if fc.items and isinstance(value, tuple | list) else (value,)
        for v in values:
            problem = _number_problem(fc.number, v)
            if problem is None and fc.rule is not None and not fc.rule.admits(v):
                each, none = "every item " if fc.items else "", " or None" if fc.optional else ""
                problem = f"{each}must be {fc.rule.describe()}{none}, got {value!r}."
                if fc.rule.choices and isinstance(v, str):
                    problem += suggest(v, [str(c) for c in fc.rule.choices])
            if problem is not None:
                raise ConfigError(f"Field {fc.name!r}: {problem}")


class Config:
    """Base of validated configs (a plain class, so frozen and ordinary dataclasses can both derive
    from it): construction checks every field's declared constraint (``field(..., ge=0)``) and number
    type. Subclasses with rules relating two fields call ``super().__post_init__()`` first, then
    ``check(...)``."""

    def __post_init__(self) -> None:
        validate(self)


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
    rules = field_rules(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kind = _type_name(hints[f.name]) + (f", {rules[f.name].describe()}" if f.name in rules else "")
        lines.append(f"  {f.name}={default!r}  ({kind})\n      {docs.get(f.name, '')}")
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
