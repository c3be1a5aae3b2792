"""The built-in strategies, registered: importing this module registers ``practise``, ``swd`` and ``udfc``.

Why it exists: the registry (:mod:`practise_plugin.core.registry`) is a leaf and knows no strategy; each
strategy registers itself when its module is imported, as timm's models do. Every entry point that
resolves names (the API, the CLI, the NNCF runner, the Torch-Pruning adapters) imports the registry's
functions from here, so the built-ins are always there. Cheap to import: the strategies' heavy code loads
only when one runs.
"""

from .core.registry import build_config, get_strategy, list_strategies, register_strategy
from .practise.strategy import PractiseStrategy
from .swd.strategy import SWDStrategy
from .udfc.strategy import UDFCStrategy

BUILTIN = (PractiseStrategy, SWDStrategy, UDFCStrategy)

__all__ = ["BUILTIN", "build_config", "get_strategy", "list_strategies", "register_strategy"]
