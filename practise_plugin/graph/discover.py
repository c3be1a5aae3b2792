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
    """A drop candidate. ``name`` is the module path, with ``#k`` for the k-th residual branch; ``why`` says
    what the forward computes that makes it droppable."""

    name: str
    path: str
    branch: int | None
    stage: str
    index: int
    module_type: str
    in_shape: tuple[int, ...]
    macs: int = 0
    params: int = 0
    why: str = ""

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

    A candidate is what the forward computes, not where it sits: a module whose output is ``x + f(x)`` of
    its own input (through no-ops, reshapes, a trailing activation or a shortcut passed as a keyword left
    None) is a *block*; a residual add ``s + f(s)`` inside a module whose output is not its input plus
    branches (transformer blocks with two adds, a block whose stream first passes a token mixer, a stream
    scaled per channel) offers that *branch*. Where an architecture's stages begin with a transition block
    (ResNet: a block with a projected shortcut), the first block of every such stage is its entry and not a
    candidate unless ``include_stage_entry`` (the paper's 12 ResNet-34 blocks).
    ``forward_fn(model, x)`` runs the model when ``model(x)`` does not (Torch-Pruning's convention).
    Raises :class:`ModelError` if there is none, saying what the model has instead.
    """
    model.eval()
    trace = trace_forward(model, example_input, fn=forward_fn)
    found: list[Block] = []
    excluded: list[str] = []  # modules inside a candidate: not candidates of their own
    projected: list[str] = []  # residual-looking modules whose shortcut is not their input (for the message)
    for path, module in model.named_modules():
        if not path or path not in trace.order or not is_container(module) or trace.calls.get(path) != 1:
            continue
        if any(path == e or path.startswith(e + ".") for e in excluded):
            continue
        chain = residual_chain(module, trace.none_args.get(path, ()))
        if chain is None:
            if _adds_two_paths(module, trace.none_args.get(path, ())):
                projected.append(path)
            continue
        stage, siblings = parent_path(path), children_in_order(model, parent_path(path), trace)
        index = siblings.index(path)
        if chain.whole and trace.in_shape.get(path) == trace.out_shape.get(path):
            excluded.append(path)
            why = "x + f(x): identity shortcut" + (", trailing activation" if _ends_in_activation(chain) else "")
            found.append(Block(path, path, None, stage, index, type(module).__name__, trace.in_shape[path], why=why))
            continue
        for k in range(len(chain.adds)):
            excluded.extend(f"{path}.{t}" for t in branch_modules(module, k, trace.none_args.get(path, ())))
            why = (f"residual branch {k} of {type(module).__name__}: "
                   + ("per-channel scaled shortcut, dropping leaves the scale" if chain.scaled[k] else
                      "s + f(s), identity shortcut" if k > 0 or chain.identity else
                      "s + f(s) around the output of " + _describe(chain.root)))
            found.append(Block(f"{path}#{k}", path, k, stage, index, type(module).__name__, trace.in_shape[path],
                               why=why))
    if not found:
        raise ModelError(_none_found(model, projected))
    if not include_stage_entry:
        found = _without_stage_entries(model, found, trace)
        if not found:
            raise ModelError(f"{type(model).__name__}'s only residual blocks are the first blocks of their stages; "
                             "pass include_stage_entry=True (--include-stage-entry) to offer them")
    found.sort(key=lambda b: (trace.order[b.path], b.branch or 0))
    if count_cost:
        found = _with_cost(model, found, example_input[:1], forward_fn, trace.none_args)
    return found


def _ends_in_activation(chain) -> bool:  # noqa: ANN001
    out = next(n for n in chain.graph.nodes if n.op == "output").args[0]
    return out is not chain.adds[-1]


def _describe(node) -> str:  # noqa: ANN001
    return str(node.target) if getattr(node, "op", "") == "call_module" else getattr(node, "name", "its input")


def _adds_two_paths(module: nn.Module, none_args: tuple[str, ...]) -> bool:
    """The module's output is an add of two paths neither of which reads the other (a projected shortcut)."""
    from .structure import is_add, shallow_graph

    graph = shallow_graph(module, none_args)
    return graph is not None and any(is_add(n) for n in graph.nodes)


def _none_found(model: nn.Module, projected: list[str]) -> str:
    name = type(model).__name__
    if projected:
        shown = ", ".join(projected[:4]) + (", ..." if len(projected) > 4 else "")
        return (f"{name} has residual adds ({shown}), but each adds a projected or reshaped shortcut rather than "
                "the block's own input, so no block or branch can be dropped to the identity. Use strategy 'udfc' "
                "or 'swd' (channel pruning) instead")
    return (f"{name} has no residual add at all (a plain chain of layers, or one that concatenates its paths): "
            "there is no block to drop. Use strategy 'udfc' or 'swd' (channel pruning) instead")


def _without_stage_entries(model: nn.Module, found: list[Block], trace) -> list[Block]:  # noqa: ANN001
    """Drop the stage entries: the first child of a stage whose sibling stages mostly begin with a block
    that is not a candidate (a transition). A stage is a container holding candidates; ViT's one ``blocks``
    Sequential, or stages whose blocks all keep the shape (ConvNeXt, Swin, FastViT), have no entries."""
    holders = {b.stage for b in found}
    first = {stage: (children_in_order(model, stage, trace) or [None])[0] for stage in holders}
    paths = {b.path for b in found}
    entries = set()
    for stage in holders:
        peers = [s for s in holders if s != stage and parent_path(s) == parent_path(stage) and s != ""]
        if not peers:
            continue
        transitions = sum(first[s] not in paths for s in peers)
        if transitions * 2 > len(peers):
            entries.add(first[stage])
    return [b for b in found if b.path not in entries]


def _with_cost(model: nn.Module, blocks: list[Block], x: torch.Tensor,
               forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
               none_args: dict[str, tuple[str, ...]] | None = None) -> list[Block]:
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
            targets = branch_modules(module, b.branch, (none_args or {}).get(b.path, ()))
            owned = [module.get_submodule(t) for t in targets]
            macs = sum(per_module.get(f"{b.path}.{t}", 0) for t in targets)
        params = sum(p.numel() for p in {id(p): p for m in owned for p in m.parameters()}.values())
        out.append(Block(**{**asdict(b), "macs": macs, "params": params}))
    return out
