"""Channel removal: physically remove channels through Torch-Pruning's dependency graph, and replay it.

Why it exists: SWD's structured prune, UDFC and the channel-pruning baselines decide *which* channels go;
removing them consistently (BN, the next conv's input slices, residual partners) is Torch-Pruning's job.
This module is the one place that calls it for removal, records the edit in a form that survives
``weights_only=True`` loading (plain lists of ints) and replays it on a freshly built model
(:mod:`practise_plugin.surgery.log`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..core.errors import ModelError
from ..core.inputs import DataConfig
from ..graph.features import feature_fn, find_feature_point
from ..graph.trace import trace_forward


def _prune_fn(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return tp.prune_batchnorm_out_channels
    raise ModelError(f"cannot remove output channels of {type(module).__name__}; pick a Conv2d, Linear or BatchNorm")


def plain_indices(idxs: Sequence[Any]) -> list[int]:
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

    Returns the surgery record ``{"op": "torch_pruning", "history": [...]}`` (see :mod:`~practise_plugin.surgery.log`).
    """
    dg = dependency_graph(model, example_input)
    for path, idxs in plan.items():
        idxs = plain_indices(idxs)
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
    return history_record(dg)


def history_record(dg: tp.DependencyGraph) -> dict[str, Any]:
    return {"op": "torch_pruning", "history": [[n, bool(out), plain_indices(i)] for n, out, i in dg.pruning_history()]}


def feature_writer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The last conv/linear that runs before the pre-pooling feature map (it sets that map's width)."""
    point = find_feature_point(model, example_input)
    order = trace_forward(model, example_input, fn=lambda m, x: feature_fn(m, point)(x)).order
    layers = [n for n in order if isinstance(model.get_submodule(n), (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ModelError("no conv or linear layer runs before the feature map; nothing to prune")
    return model.get_submodule(max(layers, key=order.__getitem__))


def prune_uniform(
    model: nn.Module, example_input: torch.Tensor, ratio: float, *, importance: str = "l1",
    ignored_layers: Sequence[nn.Module] = (), round_to: int | None = None, keep_feature_width: bool = True,
) -> dict[str, Any]:
    """Channel-prune ``model`` in place at a uniform ``ratio`` per layer (Torch-Pruning's MetaPruner).

    The classic filter-pruning baseline: every group loses the same fraction of channels, ranked by
    the L1 or L2 norm of its weights. The classifier head is never pruned, and with
    ``keep_feature_width`` neither is the group that sets the pre-pooling feature width, so the student
    can still mimic the teacher's features (as in MiR). Returns the surgery record.
    """
    if not 0 < ratio < 1:
        raise ModelError(f"pruning ratio must be in (0, 1), got {ratio}")
    norms = {"l1": 1, "l2": 2}
    if importance not in norms:
        raise ModelError(f"unknown channel importance {importance!r}; choose l1 or l2")
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == _num_outputs(model, example_input)]
    if keep_feature_width:
        heads.append(feature_writer(model, example_input))
    pruner = tp.pruner.BasePruner(
        model, example_input, importance=tp.importance.MagnitudeImportance(p=norms[importance]),
        pruning_ratio=ratio, ignored_layers=list(ignored_layers) + heads, round_to=round_to,
    )
    pruner.step()
    return history_record(pruner.DG)


def _num_outputs(model: nn.Module, example_input: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(example_input).shape[-1])


def replay_history(model: nn.Module, op: dict, data_config: DataConfig) -> nn.Module:
    """Replay a ``{"op": "torch_pruning"}`` record on a freshly built model (in place)."""
    example = torch.zeros(1, *data_config.input_size)
    dependency_graph(model, example).load_pruning_history(op["history"])
    return model
