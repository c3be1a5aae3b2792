"""Find the droppable residual blocks of any network.

Why it exists: the reference PRACTISE code hard-codes block names for three torchvision models. We read
the structure instead: a module is a droppable *block* when its own forward returns ``x + f(x)``
(optionally through a trailing activation, as in ResNet) with matching input/output shapes; a module
whose forward is a chain ``x -> x + f1(x) -> ... + fk(.)`` (transformer blocks) offers each residual
*branch* as a candidate. Following the paper, the first block of each stage (the first child of its
container) is not a candidate unless ``include_stage_entry=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import ModelError
from .macs import module_macs
from .structure import branch_modules, is_container, residual_chain
from .trace import children_in_order, parent_path, trace_forward


@dataclass(frozen=True)
class Block:
    """A drop candidate. ``name`` is the module path, with ``#k`` for the k-th residual branch."""

    name: str
    path: str
    branch: int | None
    stage: str
    index: int
    module_type: str
    in_shape: tuple[int, ...]
    macs: int = 0
    params: int = 0

    @property
    def kind(self) -> str:
        return "block" if self.branch is None else "branch"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind
        return d


def parse_block_name(name: str) -> tuple[str, int | None]:
    """``"layer1.1"`` -> ("layer1.1", None); ``"blocks.3#1"`` -> ("blocks.3", 1)."""
    path, _, branch = name.partition("#")
    return path, (int(branch) if branch else None)


def discover_blocks(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    include_stage_entry: bool = False,
    count_cost: bool = True,
    forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> list[Block]:
    """Drop candidates of ``model`` in execution order, with MACs and parameters each one removes.

    ``forward_fn(model, x)`` runs the model when ``model(x)`` does not (Torch-Pruning's convention).
    Raises :class:`ModelError` if there is none (the model has no identity-shortcut residual blocks).
    """
    model.eval()
    trace = trace_forward(model, example_input, fn=forward_fn)
    accepted: list[str] = []
    found: list[Block] = []
    for path, module in model.named_modules():
        if not path or path not in trace.order or not is_container(module):
            continue
        if any(path.startswith(a + ".") for a in accepted):
            continue
        if trace.calls.get(path) != 1 or trace.in_shape.get(path) != trace.out_shape.get(path):
            continue
        chain = residual_chain(module)
        if chain is None:
            continue
        accepted.append(path)
        stage = parent_path(path)
        siblings = children_in_order(model, stage, trace)
        index = siblings.index(path)
        if index == 0 and not include_stage_entry:
            continue
        branches = [None] if len(chain.adds) == 1 else list(range(len(chain.adds)))
        for b in branches:
            name = path if b is None else f"{path}#{b}"
            found.append(Block(name, path, b, stage, index, type(module).__name__, trace.in_shape[path]))
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no droppable block: no module computes x + f(x) with matching "
            "shapes (identity shortcut). Block dropping needs a residual network (ResNet, MobileNetV2, "
            "EfficientNet, RegNet, ConvNeXt, ViT); use strategy 'udfc' or 'swd' for plain conv chains."
        )
    found.sort(key=lambda b: (trace.order[b.path], b.branch or 0))
    if count_cost:
        found = _with_cost(model, found, example_input[:1], forward_fn)
    return found


def _with_cost(model: nn.Module, blocks: list[Block], x: torch.Tensor,
               forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> list[Block]:
    """MACs and parameters each candidate removes, from one counted pass: a whole block's own count, or
    for a residual branch the sum over the child modules only that branch uses."""
    per_module = module_macs(model, x, forward_fn)
    out = []
    for b in blocks:
        module = model.get_submodule(b.path)
        if b.branch is None:
            owned = [module]
            macs = per_module.get(b.path, 0)
        else:
            targets = branch_modules(module, b.branch)
            owned = [module.get_submodule(t) for t in targets]
            macs = sum(per_module.get(f"{b.path}.{t}", 0) for t in targets)
        params = sum(p.numel() for p in {id(p): p for m in owned for p in m.parameters()}.values())
        out.append(Block(**{**asdict(b), "macs": macs, "params": params}))
    return out
