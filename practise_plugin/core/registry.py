"""The one registry of strategies, shared by the Python API, the CLI, the NNCF runner and Torch-Pruning.

Why it exists: like ``timm.register_model``, a strategy class registers itself by name when its module is
imported, and every entry point resolves names here, so a typo fails the same way everywhere, with the
list of known names. This module is a leaf: it imports nothing above :mod:`practise_plugin.core`. The
built-in strategies are registered by importing :mod:`practise_plugin.strategies`, which every entry point does.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from .config import StrategyConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from .strategy import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} must set a class attribute 'name'")
    if not (isinstance(getattr(cls, "config_cls", None), type) and issubclass(cls.config_cls, StrategyConfig)):
        raise TypeError(f"{cls.__name__}.config_cls must be a StrategyConfig subclass")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy {cls.name!r} is already registered by {_REGISTRY[cls.name].__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def list_strategies() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """An instance of the strategy registered as ``name``."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown strategy {name!r}{hint}; known strategies: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def build_config(name: str, params: dict[str, Any] | StrategyConfig | None = None, **overrides: Any) -> StrategyConfig:
    """The config of strategy ``name`` from a mapping (JSON entry) and/or keyword overrides."""
    cls = get_strategy(name).config_cls
    if isinstance(params, StrategyConfig):
        if not isinstance(params, cls):
            raise ConfigError(f"strategy {name!r} takes a {cls.__name__}, got {type(params).__name__}")
        return params.replace(**overrides) if overrides else params
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"the options of strategy {name!r} must be a mapping (JSON object), got {type(params).__name__}")
    return cls.from_dict({**(params or {}), **overrides})
