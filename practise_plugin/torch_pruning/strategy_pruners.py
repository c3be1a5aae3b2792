"""Strategy name -> Torch-Pruning pruner, through the one strategy registry.

Why it exists: a strategy name must mean the same thing in every tool. Scripts resolve ``--method`` here,
so an unknown name fails with the registry's list of known names, exactly as ``practise compress
--strategy`` and an NNCF config entry do, and a registered strategy without a Torch-Pruning pruner says so.
"""

from __future__ import annotations

from ..core.errors import ConfigError
from ..strategies import get_strategy, list_strategies
from .block_pruner import BlockDropPruner
from .swd_pruner import SWDPruner
from .udfc_pruner import UDFCPruner

PRUNERS: dict[str, type] = {"practise": BlockDropPruner, "swd": SWDPruner, "udfc": UDFCPruner}


def pruner_class(name: str) -> type:
    """The Torch-Pruning-style pruner class of the registered strategy ``name``."""
    get_strategy(name)  # unknown names: the registry's error, listing what is registered
    if name not in PRUNERS:
        raise ConfigError(f"strategy {name!r} has no Torch-Pruning pruner; these do: {', '.join(pruner_strategies())}")
    return PRUNERS[name]


def pruner_strategies() -> list[str]:
    """Registered strategies that have a Torch-Pruning pruner, in registry order."""
    return [n for n in list_strategies() if n in PRUNERS]
