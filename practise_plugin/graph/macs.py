"""Multiply-accumulates per module, counted once per model.

Why it exists: discovery reports what each candidate costs, the latency table's prior is MAC-proportional,
and the report compares teacher and student. One pass of torch's FLOP counter gives every module's share;
a residual branch's cost is the sum over the modules it owns (:func:`~practise_plugin.graph.structure.branch_modules`),
so nothing is recounted per candidate (deep transformers used to pay a full counted forward per branch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.torch_utils import eval_mode


def module_macs(model: nn.Module, x: torch.Tensor,
                forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> dict[str, int]:
    """MACs of one forward pass per module path ("" is the whole model): FLOPs / 2, in eval mode.

    Runs with autograd enabled on purpose: under no_grad, nn.MultiheadAttention takes a fused fast path
    that the FLOP counter cannot see."""
    from torch.utils.flop_counter import FlopCounterMode

    with eval_mode(model), FlopCounterMode(display=False) as fc:
        model(x) if forward_fn is None else forward_fn(model, x)
    root = type(model).__name__
    out: dict[str, int] = {}
    for key, ops in fc.get_flop_counts().items():
        if key == "Global":
            out[""] = int(sum(ops.values()) // 2)
        elif key.startswith(root + "."):
            out[key[len(root) + 1 :]] = int(sum(ops.values()) // 2)
    out.setdefault("", 0)
    return out


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2)."""
    return module_macs(model, x)[""]
