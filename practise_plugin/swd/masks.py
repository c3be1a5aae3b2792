"""What SWD would prune *now*: global keep-masks for the unstructured and the structured criterion.

Why it exists: SWD decays exactly the weights that the final prune would remove, so the mask must be
the pruning criterion itself, recomputed from the current weights at every batch and global across the
network. Both criteria expose the same small interface (``params`` and ``decide()``) so the
regulariser, the hard prune and the magnitude baseline share one definition of "what goes".

Structured counting is the delicate part: removing a channel removes the conv that produces it, its
BatchNorm entries and the next layers' input slices, and residual-coupled channels can only go together.
Torch-Pruning's dependency groups say which channels are coupled; we turn each group into an incidence
matrix once, so the parameter count after removing any set of channels is one matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ModelError, TargetError
from ..surgery.channel_removal import dependency_graph

_NORM = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Decision:
    """One evaluation of a criterion: keep-masks aligned with its ``params`` and the resulting size.

    ``kept`` / ``total`` count conv/linear weights (unstructured) or all parameters after real channel
    removal (structured); ``removed`` flags the removed coupled channels (structured only).
    """

    masks: list[torch.Tensor]
    kept: int
    total: int
    removed: torch.Tensor | None = None

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.total


def prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights of every conv and linear layer: what unstructured SWD scores and decays."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


class MagnitudeCriterion:
    """Unstructured: keep the largest-magnitude conv/linear weights, globally, removing ``target`` of them."""

    def __init__(self, model: nn.Module, target: float) -> None:
        self.params = prunable_weights(model)
        if not self.params:
            raise ModelError("unstructured SWD needs conv or linear layers; the model has none")
        self.total = sum(p.numel() for p in self.params)
        self.num_removed = int(round(target * self.total))

    @torch.no_grad()
    def decide(self) -> Decision:
        """Keep the weights above the global threshold (ties at it go: already-zero weights stay zero)."""
        if self.num_removed == 0:
            masks = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        else:
            flat = torch.cat([p.detach().abs().flatten() for p in self.params])
            threshold = flat.kthvalue(self.num_removed).values
            masks = [p.detach().abs() > threshold for p in self.params]
        return Decision(masks, int(sum(int(m.sum()) for m in masks)), self.total)


class _Layer:
    """A module whose parameter count depends on how many of its in/out channels remain.

    With ``out`` and ``in`` channels left it holds ``per_out_in * out * in + per_out * out``: a conv has
    k*k/groups weights per (out, in) pair and a bias per out channel; a depthwise conv or a norm layer
    only scales with out.
    """

    def __init__(self, module: nn.Module) -> None:
        w = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        n_bias = 1 if isinstance(bias, torch.Tensor) else 0
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, nn.modules.conv._ConvNd) and not _is_depthwise(module):
            self.out, self.inp = module.out_channels, module.in_channels
            self.per_out_in = math.prod(module.kernel_size) / module.groups
            self.per_out = n_bias
        elif isinstance(module, nn.Linear):
            self.out, self.inp = module.out_features, module.in_features
            self.per_out_in, self.per_out = 1.0, n_bias
        elif isinstance(w, torch.Tensor) and w.ndim >= 1:
            self.out, self.inp = w.shape[0], 1
            self.per_out_in, self.per_out = 0.0, own / w.shape[0]
        else:
            raise ModelError(
                f"structured SWD cannot count the parameters of {type(module).__name__} when its channels are "
                "removed; use mode='unstructured' for this model"
            )
        self.params = own


def channel_slices(module: nn.Module, side: str) -> list[tuple[nn.Parameter, int]]:
    """(parameter, dimension) pairs that lose an index when ``module`` loses one ``side`` ("out"/"in") channel.

    Grouped (non-depthwise) convs lose input channels in blocks of the group size; their input side is
    counted but not decayed. A depthwise conv's input channels are its output channels (decayed once).
    Norm layers (one weight entry per channel) lose the channel whichever side Torch-Pruning reports.
    """
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if not isinstance(weight, nn.Parameter):
        return []
    with_bias = [(bias, 0)] if isinstance(bias, nn.Parameter) else []
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if module.groups > 1:
            return []
        return [(weight, 1), *with_bias] if side == "out" else [(weight, 0)]
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        if side == "out":
            return [(weight, 0), *with_bias]
        return [(weight, 1)] if getattr(module, "groups", 1) == 1 else []
    if weight.ndim == 1 and weight.numel() > 1:  # BatchNorm, GroupNorm, LayerNorm, PReLU
        return [(weight, 0), *with_bias]
    return []


def _is_depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


class ChannelCriterion:
    """Structured: remove whole channels with the smallest BatchNorm |gamma|, found globally.

    A *coupled channel* is one channel index of a Torch-Pruning group: every layer in it loses that
    channel together (residual streams couple several BatchNorms). Its score is the largest |gamma|
    among its BatchNorms **(our choice)**: it can go only when every BatchNorm feeding it is small.
    Groups without a BatchNorm are never pruned, and each group keeps its best channel, so no layer
    ever loses all its channels.

    ``params`` are every parameter that removing a channel deletes: the BatchNorm's weight and bias, the
    producing layer's filter and bias, and the consuming layers' input slices (the reference code's
    ``structuredF`` mode). Decaying only gamma and beta is not enough in a BatchNorm network: the next
    layer's weights on a shrinking channel grow back under plain weight decay alone, so the channel keeps
    carrying signal at tiny scale, and removing it collapsed the built-in teacher to chance (10% top-1 after
    two epochs, ``benchmarks/swd.py``) while its BatchNorm outputs were ~1e-3.
    """

    def __init__(self, model: nn.Module, target: float, example_input: torch.Tensor | None) -> None:
        if example_input is None:
            raise ModelError("structured SWD needs example_input (one input batch) to trace channel dependencies")
        names = {m: n for n, m in model.named_modules()}
        was_training = model.training
        model.eval()  # tracing runs a forward: keep BatchNorm running statistics untouched
        try:
            dg = dependency_graph(model, example_input)
            groups = list(dg.get_all_groups())
        finally:
            model.train(was_training)

        self.roots: list[tuple[str, int]] = []  # (root module path, channel index) per coupled channel
        starts: list[int] = []
        members: list[tuple[nn.Module, list[int], list[int]]] = []  # (bn, its channel idxs, coupled ids)
        slices: list[tuple[nn.Parameter, int, list[int], list[int]]] = []  # (param, dim, idxs, coupled ids)
        layers: dict[tuple[nn.Module, str], list[int]] = {}  # (module, "out" | "in") -> coupled id per channel
        for group in groups:
            if not any(isinstance(it.dep.target.module, _NORM) and it.dep.target.module.affine for it in group):
                continue
            base = len(self.roots)
            starts.append(base)
            self.roots.extend((names[group[0].dep.target.module], r) for r in range(len(group[0].idxs)))
            for it in group:
                module = it.dep.target.module
                if not isinstance(module, nn.Module) or next(module.parameters(recurse=False), None) is None:
                    continue  # additions, activations, pooling: nothing to count
                side = "out" if dg.is_out_channel_pruning_fn(it.dep.handler) else "in"
                coupled = [base + int(r) for r in it.root_idxs]
                idxs = [int(i) for i in it.idxs]
                if side == "out" and isinstance(module, _NORM):
                    members.append((module, idxs, coupled))
                for param, dim in channel_slices(module, side):
                    slices.append((param, dim, idxs, coupled))
                if side == "in" and isinstance(module, nn.modules.conv._ConvNd) and _is_depthwise(module):
                    continue  # a depthwise conv's input channels are its output channels, counted once
                layers.setdefault((module, side), []).extend(coupled)
        if not self.roots:
            raise ModelError(
                "structured SWD found no prunable channels: it scores channels by BatchNorm |gamma|, and no "
                "BatchNorm follows a prunable conv in this model; use mode='unstructured'"
            )
        self._starts = starts + [len(self.roots)]
        self.params = list({id(p): p for p, _, _, _ in slices}.values())
        position = {id(p): j for j, p in enumerate(self.params)}
        self._slices = [(position[id(p)], d, torch.tensor(i), torch.tensor(c)) for p, d, i, c in slices]
        self._members = [(bn, torch.tensor(i), torch.tensor(c)) for bn, i, c in members]
        self._build_counts(model, layers)
        self.budget = (1.0 - target) * self.total
        floor = self.params_after(~torch.isinf(self._protect_best(torch.zeros(len(self.roots)))))
        if floor > self.budget:
            reachable = 1 - floor / self.total
            raise TargetError(
                f"structured pruning can remove at most {reachable:.4f} of this model's parameters (each coupled "
                f"group keeps one channel; layers without BatchNorm stay), but target is {target}; lower target "
                f"to <= {reachable:.4f} or use mode='unstructured'"
            )

    def _build_counts(self, model: nn.Module, layers: dict[tuple[nn.Module, str], list[int]]) -> None:
        """Incidence matrices: E[c, j] = channels that removing coupled channel c takes from layer j."""
        modules = list(dict.fromkeys(m for m, _ in layers))
        self._layers = [_Layer(m) for m in modules]
        col = {m: j for j, m in enumerate(modules)}
        self._e = {side: torch.zeros(len(self.roots), len(modules), dtype=torch.float64) for side in ("out", "in")}
        for (module, side), coupled in layers.items():
            for c in coupled:
                self._e[side][c, col[module]] += 1
        as_t = lambda xs: torch.tensor([float(x) for x in xs], dtype=torch.float64)  # noqa: E731
        self._out0 = as_t(layer.out for layer in self._layers)
        self._in0 = as_t(layer.inp for layer in self._layers)
        self._per_out_in = as_t(layer.per_out_in for layer in self._layers)
        self._per_out = as_t(layer.per_out for layer in self._layers)
        self.total = sum(p.numel() for p in model.parameters())
        self._fixed = float(self.total - sum(layer.params for layer in self._layers))

    def params_after(self, removed: torch.Tensor) -> float:
        """Parameters left after removing the coupled channels flagged in ``removed`` (bool, one per channel)."""
        r = removed.to(torch.float64).cpu()
        out = self._out0 - r @ self._e["out"]
        inp = self._in0 - r @ self._e["in"]
        return self._fixed + float((self._per_out_in * out * inp + self._per_out * out).sum())

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        """Per coupled channel: the largest |gamma| among the BatchNorms it passes through."""
        s = torch.zeros(len(self.roots), dtype=torch.float64)
        for bn, idx, coupled in self._members:
            s.scatter_reduce_(0, coupled, bn.weight.detach().abs().to("cpu", torch.float64)[idx], "amax")
        return s

    def _protect_best(self, s: torch.Tensor) -> torch.Tensor:
        """Scores with each group's best channel set to +inf, so it is never removed."""
        s = s.to(torch.float64).clone()
        for a, b in zip(self._starts[:-1], self._starts[1:]):
            s[a + int(s[a:b].argmax())] = math.inf
        return s

    def decide(self) -> Decision:
        """Remove the fewest lowest-score channels that bring the parameter count within budget.

        Bisection on k, the number of channels removed in ascending score order: the count after
        removal only falls as k grows, so the smallest k within budget takes log2(C) counts.
        """
        s = self._protect_best(self.scores())
        order = torch.argsort(s, stable=True)

        def first(k: int) -> torch.Tensor:
            flags = torch.zeros(len(s), dtype=torch.bool)
            flags[order[:k]] = True
            return flags

        lo, hi = 0, int((~torch.isinf(s)).sum())  # removing every candidate meets the budget (__init__)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.params_after(first(mid)) <= self.budget:
                hi = mid
            else:
                lo = mid + 1
        removed = first(hi)
        return Decision(self.keep_masks(removed), int(round(self.params_after(removed))), self.total, removed)

    def keep_masks(self, removed: torch.Tensor) -> list[torch.Tensor]:
        """Masks shaped like ``params``: False on every slice that removing the flagged channels deletes."""
        masks = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        for j, dim, idx, coupled in self._slices:
            gone = idx[removed[coupled]]
            if len(gone):
                masks[j].index_fill_(dim, gone.to(masks[j].device), False)
        return masks

    def removal_plan(self, removed: torch.Tensor) -> dict[str, list[int]]:
        """``{group root module path: channel indices}`` for :func:`practise_plugin.surgery.channel_removal.remove_channels`."""
        plan: dict[str, list[int]] = {}
        for c in torch.nonzero(removed).flatten().tolist():
            path, idx = self.roots[c]
            plan.setdefault(path, []).append(idx)
        return plan


def make_criterion(
    model: nn.Module, mode: str, target: float, example_input: torch.Tensor | None = None
) -> MagnitudeCriterion | ChannelCriterion:
    """The criterion of ``mode`` ("unstructured" or "structured") removing ``target`` of ``model``."""
    if mode == "structured":
        return ChannelCriterion(model, target, example_input)
    return MagnitudeCriterion(model, target)
