"""Find where UDFC may act: prunable (conv, BN, [act], next layer) chains and the layers to quantize.

Why it exists: UDFC's compensation rewrites the *single* layer that consumes a pruned channel, so a conv
qualifies only when its output reaches exactly one dense layer through per-channel operations (BN,
activation, pooling, flatten). Convs whose outputs meet a residual add (ResNet block outputs, shortcut
convs), feed several layers, or feed/are grouped or depthwise convs do not. We read that from
Torch-Pruning's dependency graph, the same graph that later removes the channels, instead of from lists
of layer names, so any torchvision/timm/custom network is handled the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn

log = logging.getLogger(__name__)

BatchNorms = nn.modules.batchnorm._BatchNorm
# Autograd names of per-channel maps allowed between a conv and its consumer. The first group is
# positively homogeneous (f(c*y) = c*f(y) for c > 0), which the compensation argument needs; the
# others are accepted, the compensation is then an approximation (noted per chain).
HOMOGENEOUS_OPS = ("Relu", "LeakyRelu", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "Mean", "Clone")
OTHER_ACTIVATIONS = ("Hardtanh", "Elu", "Silu", "Gelu", "Hardswish", "Mish")


@dataclass(frozen=True)
class LayerInfo:
    """One Conv2d or Linear, what directly follows it, and whether UDFC may prune it.

    ``bn``: the BatchNorm reading this layer's output directly (its affine makes the channel's scale
    ``a`` and shift ``K``). ``consumer``: the one dense layer reading the output through per-channel ops
    (None when there is no such single consumer). ``prunable``: a chain head; otherwise ``reason`` says why
    not (a consumer may still exist: it then only carries quantization scales). ``homogeneous``: only positively homogeneous ops lie on the path (compensation is exact in the
    linear regime). ``flatten``: features per channel where the consumer is a Linear after a flatten.
    """

    path: str
    bn: str | None
    consumer: str | None
    prunable: bool
    reason: str
    homogeneous: bool = True
    flatten: int = 1


def _op_name(node) -> str:
    return node.grad_fn.name() if node.grad_fn is not None else type(node.module).__name__


def _is_dense(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def _follow(dg: tp.DependencyGraph, module: nn.Module, names: dict[nn.Module, str]) -> LayerInfo:
    """Walk forward from ``module`` along its single output path until the next weighted layer."""
    path = names[module]
    node = dg.module2node[module]
    bn: str | None = None
    homogeneous, reshaped = True, False
    first = True
    while True:
        if len(node.outputs) != 1:
            what = "is a network output" if not node.outputs else f"is read by {len(node.outputs)} operations"
            return LayerInfo(path, bn, None, False, f"its output {what} (residual stream or branch point)", homogeneous)
        node = node.outputs[0]
        m = node.module
        if isinstance(m, BatchNorms):
            if not first:
                return LayerInfo(path, bn, None, False, f"{names[m]} is not directly after it", homogeneous)
            if not m.track_running_stats or m.running_var is None:
                return LayerInfo(path, None, None, False, f"{names.get(m, 'its BatchNorm')} has no running statistics", homogeneous)
            bn = names[m]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            if not _is_dense(m):
                return LayerInfo(path, bn, None, False, f"it feeds the grouped/depthwise conv {names[m]}", homogeneous)
            if isinstance(m, nn.Conv2d) and reshaped:
                return LayerInfo(path, bn, None, False, "a reshape lies between it and the next conv", homogeneous)
            width = module.weight.shape[0]
            fan_in = m.weight.shape[1]
            if fan_in % width:
                return LayerInfo(path, bn, None, False, f"{names[m]} does not read its channels one block each", homogeneous)
            if isinstance(m, nn.Conv2d) and fan_in != width:
                return LayerInfo(path, bn, None, False, f"{names[m]} reads {fan_in} channels, not {width}", homogeneous)
            return LayerInfo(path, bn, names[m], True, "", homogeneous, fan_in // width)
        elif node.type == tp.ops.OPTYPE.RESHAPE and not reshaped:
            reshaped = True
        elif node.type == tp.ops.OPTYPE.ELEMENTWISE and _op_name(node).startswith(HOMOGENEOUS_OPS):
            pass
        elif node.type == tp.ops.OPTYPE.ELEMENTWISE and _op_name(node).startswith(OTHER_ACTIVATIONS):
            homogeneous = False
        else:
            return LayerInfo(path, bn, None, False, f"its output passes through {_op_name(node)} (residual add, concat or reshape)", homogeneous)
        first = False


def analyse(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    """Every Conv2d and Linear of ``model`` in forward order, each with its chain status.

    Grouped and depthwise convs are never chain heads (their filters see one input group each, so a
    pruned filter cannot be rebuilt from the others); that reason is logged, as is every other refusal.
    """
    names = {m: n for n, m in model.named_modules()}
    order: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            order.setdefault(name, len(order))
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:  # one forward pass gives both the dependency graph and the execution order
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    finally:
        for h in hooks:
            h.remove()
    layers = sorted(((n, m) for m, n in names.items() if n in order), key=lambda nm: order[nm[0]])
    out: list[LayerInfo] = []
    for name, m in layers:
        if m not in dg.module2node:
            info = LayerInfo(name, None, None, False, "not reached by the dependency graph")
        else:
            info = _follow(dg, m, names)
            if isinstance(m, nn.Conv2d) and m.groups != 1:
                info = replace(info, prunable=False, reason=f"grouped/depthwise conv (groups={m.groups})")
            elif isinstance(m, nn.Linear) and info.prunable:
                info = replace(info, prunable=False, reason="Linear layers are not pruned by UDFC")
        if not info.prunable:
            log.debug("udfc: not pruning %s: %s", name, info.reason)
        out.append(info)
    return out
