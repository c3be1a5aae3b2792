"""The one registry of strategies, shared by the Python API, the CLI, the NNCF runner and Torch-Pruning.

Like ``timm.register_model``: a strategy class registers itself by name at import, and every entry
point resolves names here, so a typo fails the same way everywhere, with the list of known names.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # strategies import this module to register themselves: no import cycle at run time
    from .strategies.base import Strategy, StrategyConfig

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} must set a class attribute 'name'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy {cls.name!r} is already registered by {_REGISTRY[cls.name].__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    from . import strategies  # noqa: F401 - importing registers the built-in strategies


def list_strategies() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """An instance of the strategy registered as ``name``."""
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown strategy {name!r}{hint}; known strategies: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def build_config(name: str, params: dict[str, Any] | StrategyConfig | None = None, **overrides: Any) -> StrategyConfig:
    """The config of strategy ``name`` from a mapping (JSON entry) and/or keyword overrides."""
    from .strategies.base import StrategyConfig

    cls = get_strategy(name).config_cls
    if isinstance(params, StrategyConfig):
        if not isinstance(params, cls):
            raise ConfigError(f"strategy {name!r} takes a {cls.__name__}, got {type(params).__name__}")
        return params.replace(**overrides) if overrides else params
    return cls.from_dict({**(params or {}), **overrides})
