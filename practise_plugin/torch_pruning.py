"""Torch-Pruning adapter: PRACTISE block dropping, UDFC and SWD as native Torch-Pruning importances and pruners.

The shape of a Torch-Pruning script stays as it is; only the importance and the pruner class change::

    import torch_pruning as tp
    from practise_plugin.torch_pruning import BlockDropPruner, RecoverabilityImportance

    imp = RecoverabilityImportance(tiny_set)               # lower = easier to recover = dropped first
    pruner = BlockDropPruner(model, example_inputs, imp, num_blocks=3, ignored_layers=[model.fc])
    pruner.step()                                          # blocks replaced by identity, in place
    # then Torch-Pruning channel pruning on the *edited* model, e.g. tp.pruner.BasePruner(model, ...).step()
    save_compressed("student.pt", model, spec, data_config, pruner.surgery() + channel_surgery(tp_pruner))

This module only re-exports :mod:`practise_plugin.tp`, where each piece lives in its own file.
"""

from .tp import (
    BlockDropPruner, BlockGroup, BlockImportance, BlockMagnitudeImportance, BlockTaylorImportance, CompensatedGroup,
    RecoverabilityImportance, SWDPruner, UDFCPruner, channel_surgery, pruner_class, pruner_strategies,
)

__all__ = [
    "BlockDropPruner", "BlockGroup", "BlockImportance", "BlockMagnitudeImportance", "BlockTaylorImportance",
    "CompensatedGroup", "RecoverabilityImportance", "SWDPruner", "UDFCPruner", "channel_surgery", "pruner_class",
    "pruner_strategies",
]
