"""Options declared once, as dataclass fields, and read the same way by every surface that takes them.

Why it exists: a strategy's options arrive as keyword arguments, as CLI flags and as JSON config keys.
Each field's type hint is read once, into a :class:`FieldType`, which then converts JSON/CLI values to
the declared type, writes the field's JSON schema and gives its argparse settings, so the three views
cannot disagree. This module imports nothing heavy: ``practise <command> --help`` builds its flags from it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

_SIMPLE = {bool: "boolean", int: "integer", float: "number", str: "string"}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def option(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" mirrors argparse
    """A config field with help text (shown by ``practise strategies NAME``, ``--help`` and the JSON schema)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class FieldType:
    """What a type hint allows, in one normal form: a scalar ``base`` (None: anything), or ``choices``
    (a ``Literal``), possibly as a ``sequence`` (tuple/list) of them, possibly ``nullable`` (``X | None``)."""

    base: type | None = None
    choices: tuple[Any, ...] = ()
    sequence: type | None = None
    nullable: bool = False

    @classmethod
    def of(cls, hint: Any) -> FieldType:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if len(inner) != 1:
                raise TypeError(f"config fields take one type or 'X | None', not {hint}")
            return dataclasses.replace(cls.of(inner[0]), nullable=type(None) in args)
        if origin in (tuple, list):
            item = cls.of(args[0]) if args else cls()
            return dataclasses.replace(item, sequence=origin)
        if origin is typing.Literal:
            return cls(choices=tuple(args))
        if hint is Any:
            return cls()
        if hint in _SIMPLE:
            return cls(base=hint)
        raise TypeError(f"config fields take bool, int, float, str, Literal, tuple/list of those or X | None; got {hint}")

    @property
    def name(self) -> str:
        one = " | ".join(map(repr, self.choices)) if self.choices else getattr(self.base, "__name__", "any")
        text = f"{self.sequence.__name__}[{one}, ...]" if self.sequence else one
        return f"{text} | None" if self.nullable else text

    # -- values ---------------------------------------------------------------------------------------
    def coerce(self, name: str, value: Any) -> Any:
        """``value`` (from JSON, the CLI or Python) as this type; a clear :class:`ConfigError` otherwise."""
        if value is None and self.nullable:
            return None
        if self.sequence is not None:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"option {name!r} expects a list, got {value!r}")
            item = dataclasses.replace(self, sequence=None, nullable=False)
            return self.sequence(item.coerce(name, v) for v in value)
        if self.choices:
            if value not in self.choices:
                raise ConfigError(f"option {name!r} must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
            return value
        return self._scalar(name, value)

    def _scalar(self, name: str, value: Any) -> Any:
        base = self.base
        if base is None:
            return value
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
        elif isinstance(value, bool):
            pass  # True is not 1 for a config: refuse it below
        elif base is float and isinstance(value, (int, float, str)):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                pass
            else:
                if math.isfinite(number):
                    return number
                raise ConfigError(f"option {name!r} expects a finite number, got {value!r}")
        elif base is int:
            if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif base is str and isinstance(value, str):
            return value
        expected = "true/false" if base is bool else self.name
        raise ConfigError(f"option {name!r} expects {expected}, got {value!r}")

    # -- surfaces -------------------------------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema fragment for a value of this type."""
        one: dict[str, Any] = {"enum": list(self.choices)} if self.choices else (
            {"type": _SIMPLE[self.base]} if self.base is not None else {})
        if self.sequence is not None:
            one = {"type": "array", "items": one} if one else {"type": "array"}
        if not self.nullable:
            return one
        if "type" in one and "enum" not in one:
            return {**one, "type": [one["type"], "null"]}
        return {"anyOf": [one, {"type": "null"}]} if one else {}

    def argparse_kwargs(self) -> dict[str, Any]:
        """argparse settings for a flag of this type (values are checked again by :meth:`coerce`)."""
        if self.sequence is not None:
            return {"nargs": "+", "metavar": "VALUE"}
        if self.choices:
            return {"choices": list(self.choices)}
        if self.base is bool:
            return {"choices": ["true", "false"], "metavar": "{true,false}"}
        if self.base in (int, float):
            return {"type": self.base}
        return {}


@dataclass
class StrategyConfig:
    """Base of all strategy configs; ``seed`` drives every random step."""

    seed: int = option(0, "seed for every random step (data order, sampling, initialisation)")

    @classmethod
    def field_types(cls) -> dict[str, FieldType]:
        hints = typing.get_type_hints(cls)
        return {f.name: FieldType.of(hints[f.name]) for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> StrategyConfig:
        """Build from a JSON-style mapping, rejecting unknown keys and values of the wrong type."""
        params = dict(params or {})
        kinds = cls.field_types()
        unknown = sorted(set(params) - set(kinds))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                f"valid options: {', '.join(sorted(kinds))}"
            )
        return cls(**{k: kinds[k].coerce(k, v) for k, v in params.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> StrategyConfig:
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) for each option, for help screens and docs."""
        kinds = cls.field_types()
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, kinds[f.name].name, default, f.metadata.get("help", "")))
        return rows

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The ``params`` object of an NNCF-style entry for this config: its fields, types and help texts."""
        kinds = cls.field_types()
        props = {f.name: {**kinds[f.name].json_schema(), "description": f.metadata.get("help", "")}
                 for f in dataclasses.fields(cls)}
        return {"type": "object", "additionalProperties": False, "properties": props}
