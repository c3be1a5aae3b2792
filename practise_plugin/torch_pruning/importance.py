"""Block importances for :class:`~practise_plugin.torch_pruning.BlockDropPruner`: how much a network loses per dropped block.

Why it exists: Torch-Pruning separates *what to remove* (an ``Importance``) from *how to remove it* (a
pruner), at channel granularity. Block dropping needs the same separation at block granularity, so that
PRACTISE's recoverability, plain magnitudes and first-order Taylor can be swapped in one line and compared.

Sign convention, the same as Torch-Pruning's: **higher = more important = kept**; the pruner drops the
lowest scores first. Every score here measures what removing the block costs:

- :class:`RecoverabilityImportance`: R(B), the pre-pooling feature MSE left after fitting adaptors around
  the hole on a tiny set (PRACTISE). Easy to recover = low = dropped first.
- :class:`BlockMagnitudeImportance`: the p-norm of the weights the drop removes (data-free), or of the change
  the block makes to its stream on the data.
- :class:`BlockTaylorImportance`: |first-order change of the loss| when the block's output is replaced by
  what the network computes without it.

An importance is called with the model *as it is now* (earlier steps applied, possibly fine-tuned) and the
remaining candidates, in eval mode, and returns one score per candidate.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.inputs import ImageSet
from ..graph.discover import Block
from ..practise.recoverability import METHODS, Recoverability, RecoverabilityScorer
from ..surgery.drop import dropped_temporarily


class BlockImportance(abc.ABC):
    """Scores drop candidates: one value per block, higher = keep (Torch-Pruning's convention).

    Subclass it for your own criterion; :class:`~practise_plugin.torch_pruning.BlockDropPruner` calls it once per step
    with the current model and the remaining candidates.
    """

    @abc.abstractmethod
    def __call__(self, model: nn.Module, blocks: Sequence[Block]) -> torch.Tensor:
        """A 1-D tensor aligned with ``blocks``."""


class RecoverabilityImportance(BlockImportance):
    """PRACTISE's recoverability R(B) as a block importance (wraps :class:`~practise_plugin.practise.recoverability.RecoverabilityScorer`).

    ``method``: ``"closed_form"`` (ridge least-squares adaptors, fast), ``"sgd"`` (the paper's adaptor training)
    or ``"none"`` (the bare hole, no adaptors). Remaining keywords go to the scorer. After a call, ``last``
    holds the full :class:`~practise_plugin.practise.recoverability.Recoverability` records (MSE with and without adaptors).
    """

    def __init__(self, data: ImageSet, method: str = "closed_form", *, progress: bool = False, **scorer_kwargs: Any) -> None:
        if method not in METHODS:
            raise ConfigError(f"unknown recoverability method {method!r}; choose one of {', '.join(METHODS)}")
        self.data, self.method, self.progress, self.scorer_kwargs = data, method, progress, scorer_kwargs
        self.last: list[Recoverability] = []

    def __call__(self, model: nn.Module, blocks: Sequence[Block]) -> torch.Tensor:
        # A fresh scorer per call: the model changes between steps, and the scorer caches teacher features.
        scorer = RecoverabilityScorer(model, self.data, method=self.method, **self.scorer_kwargs)
        self.last = scorer.score(list(blocks), progress=self.progress)
        return torch.tensor([r.mse for r in self.last], dtype=torch.float64)


class BlockMagnitudeImportance(BlockImportance):
    """Magnitude of what a drop removes, the block analogue of ``tp.importance.MagnitudeImportance(p)``.

    Without ``data`` (data-free): ``(mean |w|^p)^(1/p)`` over the conv/linear weights the drop removes.
    With ``data``: the relative p-norm of the change the block makes to its output,
    ``(sum |y - y'|^p / sum |y|^p)^(1/p)`` with ``y'`` the output without the block (for a whole block: its
    input), summed over the images. The data variant compares blocks across stages on one scale; raw
    weight norms do not (wider stages tend to have smaller weights): on the built-in teacher the 3 blocks
    with the smallest weights are in the last stage, and dropping them hurts held-out features 12x more than
    recoverability's choice (``tests/test_torch_pruning.py``).
    """

    def __init__(self, p: float = 2, data: ImageSet | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        if p <= 0:
            raise ConfigError(f"p must be positive (1: L1, 2: L2), got {p}")
        self.p, self.data, self.batch_size, self.device = float(p), data, batch_size, device

    def __call__(self, model: nn.Module, blocks: Sequence[Block]) -> torch.Tensor:
        if self.data is None:
            return torch.tensor([self._weight_norm(model, b) for b in blocks], dtype=torch.float64)
        change = torch.zeros(len(blocks), dtype=torch.float64)
        size = torch.zeros(len(blocks), dtype=torch.float64)
        with torch.no_grad():
            for x, _ in self.data.batches(self.batch_size):
                _, io = _capture(model, blocks, x.to(self.device))
                for i, b in enumerate(blocks):
                    y = io[b.path].output
                    change[i] += float((y - io[b.path].without(model, b)).abs().pow(self.p).sum())
                    size[i] += float(y.abs().pow(self.p).sum())
        return (change / size.clamp_min(1e-30)).pow(1.0 / self.p)

    def _weight_norm(self, model: nn.Module, block: Block) -> float:
        weights = [w for w in _removed_parameters(model, block) if w.ndim >= 2]
        if not weights:
            return 0.0
        flat = torch.cat([w.detach().abs().flatten().double() for w in weights])
        return float(flat.pow(self.p).mean().pow(1.0 / self.p))


class BlockTaylorImportance(BlockImportance):
    """First-order Taylor estimate of the loss change when a block goes, the block analogue of
    ``tp.importance.TaylorImportance``: per image ``|<dL/dy, y' - y>|`` at the block's output ``y`` (``y'``: the
    output without the block), averaged over the images.

    ``L`` is the cross-entropy against the labels, or against the model's own predictions when the images
    have none (the loss is then not at a minimum, as it would be for the feature MSE to a copy of itself).
    Gradients are taken with ``torch.autograd.grad``: the model's ``.grad`` fields are left untouched.
    """

    def __init__(self, data: ImageSet, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.data, self.batch_size, self.device = data, batch_size, device

    def __call__(self, model: nn.Module, blocks: Sequence[Block]) -> torch.Tensor:
        total = torch.zeros(len(blocks), dtype=torch.float64)
        paths = list(dict.fromkeys(b.path for b in blocks))
        for x, labels in self.data.batches(self.batch_size):
            x = x.to(self.device)
            if self.data.has_labels:
                target = labels.to(self.device)
            else:
                with torch.no_grad():
                    target = model(x).argmax(1)
            x.requires_grad_(True)  # a graph to the block outputs even when every weight is frozen
            logits, io = _capture(model, blocks, x, keep_graph=True)
            loss = F.cross_entropy(logits, target, reduction="sum")  # per-image gradients, not batch means
            grads = dict(zip(paths, torch.autograd.grad(loss, [io[p].output for p in paths])))
            with torch.no_grad():
                for i, b in enumerate(blocks):
                    delta = io[b.path].without(model, b) - io[b.path].output
                    total[i] += float((grads[b.path] * delta).flatten(1).sum(1).abs().sum())
        return total / len(self.data)


# ----------------------------------------------------------------------------------------------- helpers


def _removed_parameters(model: nn.Module, block: Block) -> list[nn.Parameter]:
    """Parameters that dropping ``block`` takes out of the model (works for whole blocks and branches)."""
    before = list(model.parameters())
    with dropped_temporarily(model, [block.name]):
        after = {id(p) for p in model.parameters()}
    return [p for p in before if id(p) not in after]


class _BlockIO:
    """What one module at a candidate's path received and returned in one forward pass."""

    def __init__(self, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        self.args, self.kwargs, self.output = args, kwargs, output

    def without(self, model: nn.Module, block: Block) -> torch.Tensor:
        """The module's output for the same input with ``block`` (or its branch) dropped."""
        with torch.no_grad(), dropped_temporarily(model, [block.name]):
            return model.get_submodule(block.path)(*self.args, **self.kwargs)


def _capture(
    model: nn.Module, blocks: Sequence[Block], x: torch.Tensor, keep_graph: bool = False
) -> tuple[torch.Tensor, dict[str, _BlockIO]]:
    """Run ``model(x)`` once; return its output and, per candidate path, the module's input and output.
    Inputs are detached copies, so in-place operations later in the forward cannot change them."""
    records: dict[str, _BlockIO] = {}
    handles = []

    def hook(path: str):
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise ConfigError(f"block {path} returns {type(output).__name__}; block importances need a tensor output")
            copy_args = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
            records[path] = _BlockIO(copy_args, dict(kwargs), output if keep_graph else output.detach())
        return fn

    for path in dict.fromkeys(b.path for b in blocks):
        handles.append(model.get_submodule(path).register_forward_hook(hook(path), with_kwargs=True))
    try:
        with torch.set_grad_enabled(keep_graph):
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, records
