"""Physically remove channels, through Torch-Pruning's dependency graph, and replay that from a checkpoint.

Why it exists: SWD's structured prune, UDFC and the channel-pruning baselines decide *which* channels go;
removing them consistently (BN, the next conv's input slices, residual partners) is Torch-Pruning's job.
This module is the one place that calls it for removal, records the edit in a form that survives
``weights_only=True`` loading (plain lists of ints) and replays it on a freshly built model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from .checkpoint import register_surgery
from .data import DataConfig
from .errors import ModelError


def _prune_fn(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return tp.prune_batchnorm_out_channels
    raise ModelError(f"cannot remove output channels of {type(module).__name__}; pick a Conv2d, Linear or BatchNorm")


def _plain(idxs: Sequence[Any]) -> list[int]:
    return sorted(int(getattr(i, "idx", i)) for i in idxs)


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """A Torch-Pruning graph of ``model`` *as it is now* (build it after any block surgery).

    Tracing needs autograd, so it is enabled here: callers may sit inside ``torch.no_grad()``
    (evaluation code loading a checkpoint, for one).
    """
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)


def remove_channels(
    model: nn.Module, example_input: torch.Tensor, plan: Mapping[str, Sequence[int]]
) -> dict[str, Any]:
    """Remove output channels ``plan[path]`` of each module, in place, with everything coupled to them.

    Returns the surgery record ``{"op": "torch_pruning", "history": [...]}`` for :mod:`checkpoint`.
    """
    dg = dependency_graph(model, example_input)
    for path, idxs in plan.items():
        idxs = _plain(idxs)
        if not idxs:
            continue
        module = model.get_submodule(path)
        width = module.weight.shape[0]
        if len(idxs) >= width:
            raise ModelError(f"cannot remove all {width} channels of {path}; keep at least one")
        group = dg.get_pruning_group(module, _prune_fn(module), idxs)
        if not dg.check_pruning_group(group):
            raise ModelError(f"Torch-Pruning refuses to remove channels {idxs[:8]}... of {path}")
        group.prune()
    history = [[name, bool(out), _plain(idxs)] for name, out, idxs in dg.pruning_history()]
    return {"op": "torch_pruning", "history": history}


@register_surgery("torch_pruning")
def _replay(model: nn.Module, op: dict, data_config: DataConfig) -> nn.Module:
    example = torch.zeros(1, *data_config.input_size)
    dependency_graph(model, example).load_pruning_history(op["history"])
    return model
