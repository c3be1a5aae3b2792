"""Identity-initialised linear adaptors around a dropped block, and their exact folding.

Why it exists: PRACTISE measures how well a hole can be *recovered* by cheap linear maps placed where
they can later be folded away for free. Following the paper, *pre-adaptors* sit after the last conv
(before its norm) of every earlier unit of the same stage that writes the residual stream, including
the stage's downsample conv; *post-adaptors* sit before every conv (or linear) that reads the stream
after the hole, up to and including the next stage's first block. We find these positions from the
model's structure (shallow fx graphs, see :mod:`practise_plugin.graph.structure`), for any residual network.

An adaptor is a C x C matrix applied to a layer's output channels ("out") or input channels ("in").
Both fold exactly: ``W' = P @ W`` (and ``b' = P @ b``) for "out", ``W' = W @ P`` for "in", because the
layer is linear and the adaptor touches nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..graph.discover import Block
from ..graph.features import FeaturePoint, feature_fn
from ..graph.structure import (
    is_add,
    is_container,
    is_pass_through_module,
    modules_by_target,
    residual_chain,
    shallow_graph,
    tensor_input,
)
from ..graph.trace import ForwardTrace, children_in_order, parent_path, trace_forward


@dataclass(frozen=True)
class AdaptorSite:
    """Where an adaptor goes: ``side`` "out" mixes ``module``'s output channels, "in" its inputs."""

    module: str
    side: str
    channels: int

    @property
    def key(self) -> str:
        return f"{self.module}:{self.side}"


def _foldable(m: nn.Module, side: str) -> int | None:
    """Channel count an adaptor on this side of ``m`` would mix, or None when it cannot be folded."""
    if isinstance(m, nn.Linear):
        return m.out_features if side == "out" else m.in_features
    if isinstance(m, nn.Conv2d) and m.groups == 1:
        return m.out_channels if side == "out" else m.in_channels
    return None


def _join(path: str, target: str) -> str:
    return f"{path}.{target}" if path else target


class StreamAnalysis:
    """Adaptor positions for each drop candidate of one model (computed on the teacher, by path)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, point: FeaturePoint) -> None:
        self.model = model
        self.trace: ForwardTrace = trace_forward(model, example_input)
        feat_trace = trace_forward(model, example_input, fn=lambda m, x: feature_fn(m, point)(x))
        self.feature_modules = set(feat_trace.order)

    # -- units: the children of a stage, with transformer blocks expanded into their branches --------
    def _units(self, stage: str) -> list[tuple[str, int | None]]:
        units: list[tuple[str, int | None]] = []
        for child in children_in_order(self.model, stage, self.trace):
            chain = self._chain(child) if is_container(self.model.get_submodule(child)) else None
            if chain is not None and not chain.whole:
                units.extend((child, k) for k in range(len(chain.adds)))
            else:
                units.append((child, None))
        return units

    def _preserves_stream(self, unit: tuple[str, int | None]) -> bool:
        path, branch = unit
        if branch is not None:
            return True
        m = self.model.get_submodule(path)
        if self.trace.in_shape.get(path) != self.trace.out_shape.get(path):
            return False
        if not is_container(m):
            return is_pass_through_module(m)
        chain = self._chain(path)
        return chain is not None

    # -- walking one module's graph ---------------------------------------------------------------
    def _writers(self, path: str, branch: int | None = None) -> list[AdaptorSite]:
        m = self.model.get_submodule(path)
        if not is_container(m):
            ch = _foldable(m, "out")
            return [AdaptorSite(path, "out", ch)] if ch else []
        graph = shallow_graph(m, self.trace.none_args.get(path, ()))
        if graph is None:
            return self._runtime_sites(path, "out")
        mods = modules_by_target(m)
        if branch is not None:
            start = self._chain(path).branches[branch]
        else:
            start = next(n for n in graph.nodes if n.op == "output").args[0]
        sites: list[AdaptorSite] = []
        stack, seen = [start], set()
        while stack:
            n = stack.pop()
            if not isinstance(n, fx.Node) or n in seen:
                continue
            seen.add(n)
            if is_add(n):
                stack.extend(a for a in n.args[:2] if isinstance(a, fx.Node))
            elif n.op == "call_module":
                sub = mods[n.target]
                full = _join(path, n.target)
                if isinstance(sub, (nn.Conv2d, nn.Linear)):
                    ch = _foldable(sub, "out")
                    if ch:
                        sites.append(AdaptorSite(full, "out", ch))
                elif is_pass_through_module(sub):
                    stack.append(n.args[0])
                elif is_container(sub):
                    sites.extend(self._writers(full))
            else:
                src = tensor_input(n, mods)
                if src is not None:
                    stack.append(src)
        return sites

    def _readers(self, path: str, branch: int | None = None) -> list[AdaptorSite]:
        m = self.model.get_submodule(path)
        if not is_container(m):
            ch = _foldable(m, "in")
            return [AdaptorSite(path, "in", ch)] if ch else []
        graph = shallow_graph(m, self.trace.none_args.get(path, ()))
        if graph is None:
            return self._runtime_sites(path, "in")
        mods = modules_by_target(m)
        chain = self._chain(path) if branch is not None else None
        start = next(n for n in graph.nodes if n.op == "placeholder")
        if chain is not None:
            start = chain.adds[branch - 1] if branch > 0 else chain.root
        sites: list[AdaptorSite] = []
        stack, seen = [start], set()
        while stack:
            n = stack.pop()
            for u in n.users:
                if u in seen or is_add(u):
                    continue
                seen.add(u)
                if u.op == "call_module":
                    sub = mods[u.target]
                    full = _join(path, u.target)
                    if isinstance(sub, (nn.Conv2d, nn.Linear)):
                        ch = _foldable(sub, "in")
                        if ch:
                            sites.append(AdaptorSite(full, "in", ch))
                    elif is_pass_through_module(sub):
                        stack.append(u)
                    elif is_container(sub):
                        sites.extend(self._readers(full))
                elif tensor_input(u, mods) is n:
                    stack.append(u)
        return sites

    def _runtime_sites(self, path: str, side: str) -> list[AdaptorSite]:
        """For untraceable containers: layers that received (in) or produced (out) the very same tensor."""
        ids = self.trace.in_id if side == "in" else self.trace.out_id
        target = ids.get(path)
        sites = []
        for name, sub in self.model.get_submodule(path).named_modules():
            full = _join(path, name)
            if name and ids.get(full) == target and target is not None:
                ch = _foldable(sub, side)
                if ch:
                    sites.append(AdaptorSite(full, side, ch))
        return sites

    # -- the sites of one candidate ---------------------------------------------------------------
    def sites(self, block: Block) -> list[AdaptorSite]:
        """Pre-adaptors on earlier writers of the stage, post-adaptors on later readers of the stream."""
        units = self._units(block.stage)
        here = units.index((block.path, block.branch))
        found: list[AdaptorSite] = []
        for unit in reversed(units[:here]):
            found.extend(self._writers(*unit))
            if not self._preserves_stream(unit):
                break
        stage, after = block.stage, units[here + 1 :]
        while True:
            stopped = False
            for unit in after:
                leaf = not is_container(self.model.get_submodule(unit[0]))
                if stage == "" and leaf:
                    stopped = True
                    break
                found.extend(self._readers(*unit))
                if not self._preserves_stream(unit):
                    stopped = True
                    break
            if stopped or stage == "":
                break
            parent = parent_path(stage)
            up = self._units(parent)
            after = up[up.index((stage, None)) + 1 :]
            stage = parent
        unique = {s.key: s for s in found if s.module in self.feature_modules}
        return list(unique.values())

    def previous_unit(self, block: Block) -> tuple[str, list[AdaptorSite]] | None:
        """The unit just before ``block`` in its stage: (module path whose output is the stream there, its writers).

        Used by the closed-form fit of pre-adaptors, which needs the stream right before the hole as a
        module output; None when there is no such unit or its output is internal to a container (an
        earlier branch of the same transformer block).
        """
        units = self._units(block.stage)
        here = units.index((block.path, block.branch))
        if here == 0 or self.stream_output(units[here - 1]) is None:
            return None
        prev = units[here - 1]
        return prev[0], [w for w in self._writers(*prev) if w.module in self.feature_modules]

    def stream_output(self, unit: tuple[str, int | None]) -> str | None:
        """Module path whose output is the stream after ``unit``: the unit itself, or its container's last branch."""
        path, branch = unit
        if branch is None:
            return path
        chain = self._chain(path)
        return path if chain is not None and branch == len(chain.adds) - 1 else None

    def _chain(self, path: str):  # noqa: ANN202 - ResidualChain | None
        """The residual chain of the module at ``path``, traced as the model calls it."""
        return residual_chain(self.model.get_submodule(path), self.trace.none_args.get(path, ()))


class Adaptors(nn.Module):
    """A set of identity-initialised adaptors: hooks on a model for training them (no structural change),
    folded into its weights for passes without autograd (:meth:`folded`)."""

    def __init__(self, sites: list[AdaptorSite]) -> None:
        super().__init__()
        self.sites = list(sites)
        self.mats = nn.ParameterList([nn.Parameter(torch.eye(s.channels)) for s in self.sites])
        self._handles: list = []

    @staticmethod
    def _mix(P: torch.Tensor, x: torch.Tensor, channels_dim: int) -> torch.Tensor:
        if channels_dim == 1:
            return F.conv2d(x, P[:, :, None, None]) if x.dim() == 4 else torch.einsum("oc,nc...->no...", P, x)
        return x @ P.t()

    def attach(self, model: nn.Module) -> Adaptors:
        self.detach()
        for site, P in zip(self.sites, self.mats):
            m = model.get_submodule(site.module)
            dim = 1 if isinstance(m, nn.Conv2d) else -1
            if site.side == "out":
                self._handles.append(m.register_forward_hook(lambda mod, a, out, P=P, d=dim: self._mix(P, out, d)))
            else:
                self._handles.append(
                    m.register_forward_pre_hook(lambda mod, a, P=P, d=dim: (self._mix(P, a[0], d), *a[1:]))
                )
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @staticmethod
    def _fold(m: nn.Module, site: AdaptorSite, P: torch.Tensor) -> None:
        P = P.detach().to(m.weight.dtype)
        w = m.weight
        if site.side == "out":
            m.weight.copy_((P @ w.reshape(w.shape[0], -1)).reshape(w.shape))
            if m.bias is not None:
                m.bias.copy_(P @ m.bias)
        elif isinstance(m, nn.Conv2d):
            m.weight.copy_(torch.einsum("oc...,ci->oi...", w, P))
        else:
            m.weight.copy_(w @ P)

    @torch.no_grad()
    def fold_into(self, model: nn.Module) -> None:
        """Fold every adaptor into its layer's weights (exact); the model then runs without hooks."""
        self.detach()
        for site, P in zip(self.sites, self.mats):
            self._fold(model.get_submodule(site.module), site, P)

    @contextlib.contextmanager
    @torch.no_grad()
    def folded(self, model: nn.Module) -> Iterator[None]:
        """The adaptors folded into ``model``'s layers for the duration, the weights restored after: the
        values of :meth:`attach` without autograd, at none of the hooks' cost. An adaptor is a C x C product
        per position: before a ResNet bottleneck's first 1x1 conv it cost four times that conv, and the
        scorer runs its passes with most adaptors at identity (skipped here) or a probe's scaled identity."""
        saved: dict[str, list[torch.Tensor]] = {}
        try:
            for site, P in zip(self.sites, self.mats):
                if torch.equal(P, torch.eye(P.shape[0], dtype=P.dtype, device=P.device)):
                    continue
                m = model.get_submodule(site.module)
                if site.module not in saved:
                    saved[site.module] = [t.clone() for t in (m.weight, m.bias) if t is not None]
                self._fold(m, site, P)
            yield
        finally:
            for path, originals in saved.items():
                m = model.get_submodule(path)
                for t, original in zip((m.weight, m.bias), originals):
                    t.copy_(original)
