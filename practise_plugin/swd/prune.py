"""The one hard prune at the end: zero the masked weights, or physically remove the masked channels.

Why it exists: SWD and the prune+fine-tune baseline must cut with the same criterion and report the
same measured numbers, so both call :func:`hard_prune`. Structured removal goes through
:func:`practise_plugin.surgery.channel_removal.remove_channels`, so the model really shrinks (and runs faster) and the
edit is recorded in the surgery log (:mod:`practise_plugin.surgery.log`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.torch_utils import count_params
from ..surgery.channel_removal import remove_channels
from .masks import ChannelCriterion, Decision, MagnitudeCriterion, prunable_weights


def param_stats(model: nn.Module) -> dict[str, int]:
    """Measured sizes: all parameters, and conv/linear weights with how many of them are exactly zero."""
    weights = prunable_weights(model)
    return {
        "params": count_params(model),
        "weights": sum(w.numel() for w in weights),
        "zero_weights": sum(int((w == 0).sum()) for w in weights),
    }


@torch.no_grad()
def removed_norm_fraction(params: list[nn.Parameter], masks: list[torch.Tensor]) -> float:
    """||w * (1 - m)|| / ||w|| over the criterion's parameters: how much the hard prune is about to cut.

    SWD's point is to drive this to ~0 before pruning; for one-shot pruning it is what fine-tuning
    must make up for.
    """
    cut = sum(float((p * ~m).pow(2).sum()) for p, m in zip(params, masks))
    whole = sum(float(p.pow(2).sum()) for p in params)
    return (cut / whole) ** 0.5 if whole > 0 else 0.0


def hard_prune(
    model: nn.Module, criterion: MagnitudeCriterion | ChannelCriterion, decision: Decision, example_input: torch.Tensor
) -> tuple[list[dict[str, Any]], list[tuple[nn.Parameter, torch.Tensor]] | None]:
    """Apply ``decision`` to ``model`` in place.

    Returns ``(surgery, fixed_masks)``: the replayable record of removed channels (empty when
    unstructured), and for unstructured pruning the (weight, mask) pairs that keep zeros at zero if the
    model is fine-tuned afterwards (``None`` when structured: removed channels cannot come back).
    """
    if isinstance(criterion, ChannelCriterion):
        plan = criterion.removal_plan(decision.removed)
        was_training = model.training
        model.eval()  # Torch-Pruning traces with a forward: keep BatchNorm running statistics untouched
        try:
            record = remove_channels(model, example_input, plan)
        finally:
            model.train(was_training)
        return [record], None
    pairs = list(zip(criterion.params, decision.masks))
    with torch.no_grad():
        for p, m in pairs:
            p.mul_(m)
    return [], pairs
