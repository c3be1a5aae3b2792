"""What every compression strategy is: a config dataclass plus ``apply``.

Why it exists: the CLI, the NNCF-style config runner and the Torch-Pruning adapters must drive every
strategy the same way. A strategy declares its options once, as dataclass fields with help text; the
same fields become CLI flags, JSON config keys and keyword arguments of ``practise_plugin.compress``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..data import DataConfig, ImageSet
from ..errors import ConfigError


def option(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" mirrors argparse
    """A config field with help text (shown by ``practise strategies NAME`` and ``--help``)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class StrategyConfig:
    """Base of all strategy configs; ``seed`` drives every random step."""

    seed: int = option(0, "seed for every random step (data order, sampling, initialisation)")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> StrategyConfig:
        """Build from a JSON-style mapping, rejecting unknown keys and values of the wrong type."""
        params = dict(params or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                f"valid options: {', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in params.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> StrategyConfig:
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) for each option, for help screens and docs."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
        return rows


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Accept JSON/CLI values for a field, converting ints to floats and lists to tuples as declared."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"option {name!r}: {value!r} does not fit {_type_name(hint)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"option {name!r} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"option {name!r} expects a list, got {value!r}")
        inner = args[0] if args else Any
        items = [v if inner is Any else _coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"option {name!r} expects true/false, got {value!r}")
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if hint is str and isinstance(value, str):
        return value
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint) and not isinstance(value, bool)):
        return value
    raise ConfigError(f"option {name!r} expects {_type_name(hint)}, got {value!r}")


@dataclass
class CompressionContext:
    """Everything a strategy needs besides the model, data and its own options."""

    data_config: DataConfig
    device: str = "cpu"
    work_dir: Path | None = None  # checkpoints and caches; None: no resume, no cache
    progress: bool = True
    model_spec: str | None = None  # how to rebuild the uncompressed model (for checkpoints)
    latency_backend: str = "openvino"  # "openvino" | "torch" | "cuda" | "macs"
    latency_batch_size: int = 1
    num_threads: int | None = None


@dataclass
class CompressionResult:
    """The compressed model, what was done to it (replayable), and what was measured."""

    model: nn.Module
    strategy: str
    config: dict[str, Any]
    surgery: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """A named compression method. Subclasses set the class attributes and implement ``apply``."""

    name: ClassVar[str]
    config_cls: ClassVar[type[StrategyConfig]]
    description: ClassVar[str]
    needs_data: ClassVar[bool] = True  # False: works data-free (no images needed at all)

    @abstractmethod
    def apply(
        self, model: nn.Module, data: ImageSet | None, config: StrategyConfig, ctx: CompressionContext
    ) -> CompressionResult:
        """Return a compressed copy of ``model``; ``model`` itself is never modified."""
