"""Torch-Pruning adapter: PRACTISE block dropping, UDFC and SWD as native Torch-Pruning importances and pruners.

The shape of a Torch-Pruning script stays as it is; only the importance and the pruner class change::

    import torch_pruning as tp
    from practise_plugin.torch_pruning import BlockDropPruner, RecoverabilityImportance

    imp = RecoverabilityImportance(tiny_set)               # lower = easier to recover = dropped first
    pruner = BlockDropPruner(model, example_inputs, imp, num_blocks=3, ignored_layers=[model.fc])
    pruner.step()                                          # blocks replaced by identity, in place
    # then Torch-Pruning channel pruning on the *edited* model, e.g. tp.pruner.BasePruner(model, ...).step()
    save_compressed("student.pt", model, spec, data_config, pruner.surgery() + channel_surgery(tp_pruner))

``importance`` scores whole blocks, ``block_pruner`` drops them, ``udfc_pruner`` and ``swd_pruner`` extend
Torch-Pruning's own channel pruner, ``strategy_pruners`` resolves strategy names through the registry, and
``history`` turns any pruner's history into a surgery record. No algorithm lives here: each piece
translates Torch-Pruning's interface to the library's own modules.
"""

from .block_pruner import BlockDropPruner, BlockGroup
from .history import channel_surgery
from .importance import BlockImportance, BlockMagnitudeImportance, BlockTaylorImportance, RecoverabilityImportance
from .strategy_pruners import pruner_class, pruner_strategies
from .swd_pruner import SWDPruner
from .udfc_pruner import CompensatedGroup, UDFCPruner

__all__ = [
    "BlockDropPruner", "BlockGroup", "BlockImportance", "BlockMagnitudeImportance", "BlockTaylorImportance",
    "CompensatedGroup", "RecoverabilityImportance", "SWDPruner", "UDFCPruner", "channel_surgery", "pruner_class",
    "pruner_strategies",
]
