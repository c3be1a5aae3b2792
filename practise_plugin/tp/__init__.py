"""Torch-Pruning integration, implemented here; import it as :mod:`practise_plugin.torch_pruning`.

``importance`` scores whole blocks, ``block_pruner`` drops them, ``udfc_pruner`` and ``swd_pruner`` extend
Torch-Pruning's own channel pruner, ``by_name`` resolves strategy names through the registry, and
``surgery`` turns any pruner's history into a checkpoint record.
"""

from .block_pruner import BlockDropPruner, BlockGroup
from .by_name import pruner_class, pruner_strategies
from .importance import BlockImportance, BlockMagnitudeImportance, BlockTaylorImportance, RecoverabilityImportance
from .surgery import channel_surgery
from .swd_pruner import SWDPruner
from .udfc_pruner import CompensatedGroup, UDFCPruner

__all__ = [
    "BlockDropPruner", "BlockGroup", "BlockImportance", "BlockMagnitudeImportance", "BlockTaylorImportance",
    "CompensatedGroup", "RecoverabilityImportance", "SWDPruner", "UDFCPruner", "channel_surgery", "pruner_class",
    "pruner_strategies",
]
