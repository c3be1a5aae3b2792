"""Remove blocks: the student is the teacher minus the chosen blocks, and the teacher is never touched.

Why it exists: dropping must be exact, cheap and replayable from names alone (so a checkpoint can rebuild
the student from its base model). A whole block becomes :class:`DroppedBlock` (identity); a single
residual branch of a transformer block is removed by rewriting that block's fx graph so the add returns
its shortcut and the branch's modules disappear (no wasted compute, no zero-tensors).
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch.fx as fx
from torch import nn

from ..core.errors import ModelError
from ..core.torch_utils import copy_model
from ..graph.discover import Block, parse_block_name
from ..graph.structure import residual_chain


class DroppedBlock(nn.Module):
    """Stands where a block was: returns its first argument (extra args such as masks are ignored)."""

    def __init__(self, was: str = "") -> None:
        super().__init__()
        self.was = was

    def forward(self, x, *args, **kwargs):  # noqa: ANN001 - mirrors any block signature
        return x

    def extra_repr(self) -> str:
        return f"was={self.was}"


def _names(blocks: Sequence[Block | str]) -> list[str]:
    return [b.name if isinstance(b, Block) else str(b) for b in blocks]


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def _without_branches(module: nn.Module, branches: set[int], path: str) -> nn.Module:
    chain = residual_chain(module)
    if chain is None or max(branches) >= len(chain.adds):
        raise ModelError(f"{path} has no residual branch {max(branches)}; rediscover the candidates for this model")
    graph = copy.deepcopy(chain.graph)
    by_name = {n.name: n for n in graph.nodes}
    for k in sorted(branches):
        add = by_name[chain.adds[k].name]
        branch = by_name[chain.branches[k].name]
        stream = next(a for a in add.args[:2] if a is not branch)
        add.replace_all_uses_with(stream)
        graph.erase_node(add)
    gm = fx.GraphModule(module, graph, class_name=f"{type(module).__name__}WithoutBranch")
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _apply(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """Drop ``names`` in place; return (path, original module) pairs for restoring."""
    whole: list[str] = []
    branches: dict[str, set[int]] = defaultdict(set)
    for name in names:
        path, branch = parse_block_name(name)
        try:
            model.get_submodule(path)
        except AttributeError as e:
            raise ModelError(f"the model has no module {path!r} (from block name {name!r})") from e
        if branch is None:
            whole.append(path)
        else:
            branches[path].add(branch)
    for path in whole:
        if path in branches:
            raise ModelError(f"{path} is dropped whole and by branch at the same time; pick one")
    replaced = []
    for path in whole:
        replaced.append((path, _set_submodule(model, path, DroppedBlock(path))))
    for path, ks in branches.items():
        original = model.get_submodule(path)
        replaced.append((path, _set_submodule(model, path, _without_branches(original, ks, path))))
    return replaced


def drop_blocks(model: nn.Module, blocks: Sequence[Block | str], *, inplace: bool = False) -> nn.Module:
    """A model without ``blocks`` (``Block`` objects or names such as ``"layer2.1"``, ``"blocks.3#0"``)."""
    student = model if inplace else copy_model(model)
    _apply(student, _names(blocks))
    return student


@contextlib.contextmanager
def dropped_temporarily(model: nn.Module, blocks: Sequence[Block | str]) -> Iterator[nn.Module]:
    """Drop ``blocks`` in place for the duration of the block (cheap what-if measurements), then restore."""
    replaced = _apply(model, _names(blocks))
    try:
        yield model
    finally:
        for path, original in reversed(replaced):
            _set_submodule(model, path, original)
