"""The whole UDFC pass: prune and compensate, remove the channels, then quantize and compensate.

Why it exists: the order of the steps is part of the method. We prune first, on full-precision weights,
in forward order (a Bottleneck's conv2 is selected after conv1's compensation landed in it), remove the
channels through Torch-Pruning, and only then quantize, again in forward order, each layer's scale being
folded into its consumer *before* that consumer is itself quantized. The consumer therefore ends up with
``W' = s~_i * (W[:, i] + sum_j s_ij W[:, j])`` (METHODS.md), quantized on its own per-tensor grid, and
every quantizer sees exactly the weights that survive.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.torch_utils import copy_model, count_params
from ..surgery.channel_removal import remove_channels
from .chains import LayerInfo, analyse
from .compensate import (
    Criterion,
    Method,
    absorb,
    coefficients,
    quantize_layer,
    scale_batchnorm,
    scale_input_channels,
    select_filters,
)


@dataclass
class PassReport:
    """What one pass did, for ``CompressionResult.stats`` and the benchmark tables."""

    pruned_layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    quantized_layers: int = 0
    scale_targets: dict[str, int] = field(default_factory=lambda: {"consumer": 0, "batchnorm": 0, "none": 0})
    params_before: int = 0
    params_after: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(model: nn.Module, path: str | None) -> nn.Module | None:
    return None if path is None else model.get_submodule(path)


def prune_and_compensate(
    model: nn.Module, layers: list[LayerInfo], ratio: float, criterion: Criterion, method: Method,
    a1: float, nm_threshold: float, report: PassReport,
) -> dict[str, list[int]]:
    """Fold every prunable conv's pruned filters into its consumer (in place); return the removal plan."""
    plan: dict[str, list[int]] = {}
    for info in layers:
        if not info.prunable:
            report.skipped[info.path] = info.reason
            continue
        conv, bn, nxt = model.get_submodule(info.path), _get(model, info.bn), model.get_submodule(info.consumer)
        pruned, kept = select_filters(conv.weight, ratio, criterion)
        if len(pruned) == 0:
            continue
        S, solver = coefficients(conv, bn, pruned, kept, method, a1, nm_threshold)
        absorb(nxt, S, pruned, kept, conv.weight.shape[0])
        plan[info.path] = pruned.tolist()
        report.pruned_layers[info.path] = {
            "consumer": info.consumer, "filters": conv.weight.shape[0], "pruned": len(pruned), "solver": solver,
            "homogeneous": info.homogeneous,
        }
    return plan


def quantize_and_compensate(
    model: nn.Module, layers: list[LayerInfo], bits: int, compensate: bool, a2: float, fold_into_bn: bool,
    report: PassReport,
) -> None:
    """Quantize every Conv2d/Linear weight to ``bits`` in forward order, folding each scale s~ forward.

    The scale goes where METHODS.md puts it, into the input slice of the one layer that reads the
    channel. A layer without such a consumer (block outputs and shortcut convs feeding a residual add,
    the stem, the classifier) stays uncompensated unless ``fold_into_bn``: then its own BN output is
    scaled, our extension of the rule to residual streams (see the benchmark for its measured effect).
    A consumer behind a non-homogeneous activation (SiLU, GELU) cannot carry the scale after it; the BN,
    before the activation, does."""
    for info in layers:
        layer, bn = model.get_submodule(info.path), _get(model, info.bn)
        scales = quantize_layer(layer, bn, bits, a2)
        report.quantized_layers += 1
        if not compensate:
            continue
        if info.consumer is not None and info.homogeneous:
            scale_input_channels(model.get_submodule(info.consumer), scales)
            report.scale_targets["consumer"] += 1
        elif (info.consumer is not None or fold_into_bn) and bn is not None and scale_batchnorm(bn, scales):
            report.scale_targets["batchnorm"] += 1
        else:
            report.scale_targets["none"] += 1


def run_pass(
    model: nn.Module, example_input: torch.Tensor, *, ratio: float, criterion: Criterion, bits: int | None,
    method: Method, a1: float, a2: float, nm_threshold: float = 0.0, fold_into_bn: bool = False,
) -> tuple[nn.Module, list[dict[str, Any]], PassReport]:
    """Return ``(compressed copy, surgery records, report)``; ``model`` is left untouched."""
    t0 = time.perf_counter()
    model = copy_model(model).eval()
    report = PassReport(params_before=count_params(model))
    layers = analyse(model, example_input)  # Torch-Pruning traces autograd: no torch.no_grad() here
    t1 = time.perf_counter()
    surgery: list[dict[str, Any]] = []
    plan: dict[str, list[int]] = {}
    if ratio > 0:
        plan = prune_and_compensate(model, layers, ratio, criterion, method, a1, nm_threshold, report)
    t2 = time.perf_counter()
    if plan:
        surgery.append(remove_channels(model, example_input, plan))
    t3 = time.perf_counter()
    if bits is not None:
        quantize_and_compensate(model, layers, bits, method == "udfc", a2, fold_into_bn, report)
    t4 = time.perf_counter()
    report.params_after = count_params(model)
    report.seconds = {"analyse": t1 - t0, "compensate": t2 - t1, "remove": t3 - t2, "quantize": t4 - t3, "total": t4 - t0}
    return model, surgery, report
