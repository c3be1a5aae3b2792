"""Torch-Pruning's pruning history as a checkpoint surgery record.

Why it exists: :func:`practise_plugin.models.checkpoint.save_compressed` rebuilds a compressed model from its base
spec plus replayable edits, loaded with ``weights_only=True``. A Torch-Pruning pruner's
``DG.pruning_history()`` is such an edit once its indices are plain ints; this turns any pruner's (ours or
Torch-Pruning's own) into the ``{"op": "torch_pruning", ...}`` record that :mod:`practise_plugin.surgery.log`
replays, so block drops and channel pruning chain in one list: ``blocks.surgery() + channel_surgery(pruner)``.
"""

from __future__ import annotations

from typing import Any

import torch_pruning as tp

from ..surgery.channel_removal import history_record


def channel_surgery(pruner: tp.pruner.BasePruner | tp.DependencyGraph) -> list[dict[str, Any]]:
    """``[record]`` for the channels ``pruner`` (or a dependency graph) removed so far; ``[]`` if none."""
    dg = pruner.DG if isinstance(pruner, tp.pruner.BasePruner) else pruner
    return [history_record(dg)] if dg.pruning_history() else []
