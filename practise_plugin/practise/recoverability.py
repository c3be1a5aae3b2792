"""Recoverability: how well linear adaptors make up for a dropped block, measured on the tiny set.

Why it exists: PRACTISE's insight is that the blocks to drop are those whose removal is easiest to
*recover*, not those with the smallest weights or activations. R(B) is the pre-pooling feature MSE
between teacher and student (B dropped, adaptors fitted). Two ways to fit the adaptors:

- ``"sgd"``: the paper's procedure (faithful reference): train all adaptors (pre and post) with SGD,
  BN frozen, on the feature MSE.
- ``"closed_form"``: the adaptors are linear, so fit them by ridge least squares. First the pre-adaptors
  of the unit right before the hole, so that the stream leaving it matches the teacher's stream *after*
  the dropped block: this corrects the skip path too, which post-adaptors cannot reach. It applies when
  that stream is an affine, per-channel function of the writers' outputs (BatchNorm or LayerScale, then
  the residual add: MobileNet/EfficientNet/ViT). When a ReLU follows the add (ResNet), the fit is done on
  the ReLU's input, toward targets that the ReLU maps onto the teacher's stream.
  Then the post-adaptors, one at a time in forward order, each mapping the student's input of that
  layer onto the teacher's. A few forward passes instead of a thousand SGD steps.
- ``"none"``: the MSE of the bare hole (no adaptors): an ablation, and the cheapest proxy.

Closed form and none need the forward passes only from the unit before the hole onward: the student is
the teacher up to there. The teacher's input of that unit is computed once for the tiny set (rolled from
one unit to the next as candidates are scored in forward order) and every pass starts there
(:mod:`practise_plugin.graph.resume`), which gives the same values as full passes at a fraction of the cost.
The teacher's inputs of the units that passes move to are kept too, for the next candidates (the farthest
let go first when the budget is short).
The post-adaptors are fitted in forward order and each pass moves its start on to the unit holding the
next reader, so a stage of k readers costs k unit passes, not k passes from the hole. The Grams are
products of float32 batches summed in float64 (:func:`_gram`), the solves Cholesky factorisations.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core import distributed
from ..core.errors import ConfigError, TrainingError
from ..core.inputs import ImageSet
from ..core.torch_utils import copy_model
from ..graph.discover import Block
from ..graph.features import FeaturePoint, capture, capture_many, collect_features, feature_fn, find_feature_point
from ..graph.resume import StartAt, reproduces
from ..graph.structure import output_relu
from ..graph.trace import parent_path
from ..surgery.drop import dropped_temporarily
from .adaptors import Adaptors, AdaptorSite, StreamAnalysis

METHODS = ("closed_form", "sgd", "none")
PROBE_IMAGES = 4  # images the pre-adaptor fit probes for D_w: any of them shows a nonlinearity as a whole batch would
CACHE_BYTES = 2 << 30  # largest set of cached unit inputs kept (fp32); a unit past it runs from the image


@dataclass
class Recoverability:
    """R(B) for one candidate: ``mse`` after recovery by adaptors, ``mse_dropped`` with none."""

    block: str
    mse: float
    mse_dropped: float
    method: str
    seconds: float
    sites: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _PreFit:
    """A closed-form pre-adaptor fit: the ``writers`` (site keys) of ``unit`` are fitted so that the stream
    leaving it (the input of ``act``, a ReLU after the add, if any) matches the teacher's at ``target``."""

    target: str
    unit: str
    writers: frozenset[str]
    act: str | None


def _channels_first(x: torch.Tensor, conv: bool) -> torch.Tensor:
    """(C, M) view of a layer input: channels of a conv (dim 1) or of a linear (last dim); positions in
    (image, row, column) order either way, a view without a copy for a channels-last conv input."""
    if conv:
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).t()
    return x.reshape(-1, x.shape[-1]).t()


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _pre_activation(model: nn.Module, act: str, unit: str, fn, x: torch.Tensor) -> torch.Tensor:
    """Input of the last call of module ``act`` inside ``unit``'s forward (a shared ``nn.ReLU`` runs several
    times; in-place, so the input is copied before the ReLU overwrites it); the forward stops after ``unit``."""
    box: list[torch.Tensor] = []
    h = model.get_submodule(act).register_forward_pre_hook(lambda mod, args: box.append(args[0].clone()))
    try:
        capture(model, unit, fn, x, output=True)
    finally:
        h.remove()
    return box[-1]


def _gram(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``b a^T`` of one batch's (C, M) float32 views, in float64 for the sum over batches.

    The product runs in float32 (the vector units do twice the float64 lanes, and a GPU is fast at it); each
    batch's sum over its M positions then carries float32's rounding, and the batches add up in float64.
    Measured on ResNet-50 (16 images): the recoverability MSEs moved by at most 6e-5 relative to float64
    products, no candidate changed rank.
    """
    return (b @ a.t()).double()


def _square_sum(z: torch.Tensor) -> float:
    """sum(z^2) in one float32 reduction, with no float64 copy of z (a layer1 batch of ResNet-50 is 51M values):
    it only feeds thresholds and a zero check, never a fit."""
    return float(torch.linalg.vector_norm(z)) ** 2


def _ridge_toward(prior: torch.Tensor, xx: torch.Tensor, yx: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_P ||Y - P X||^2 + lam ||P - prior||^2 from the Grams ``X X^T`` and ``Y X^T``.

    ``lam`` is ``ridge`` times the mean eigenvalue of ``X X^T``, so the pull toward ``prior`` (identity:
    the adaptor changes nothing) does not depend on the features' scale.
    """
    lam = ridge * float(torch.trace(xx)) / xx.shape[0] + 1e-12
    eye = torch.eye(xx.shape[0], dtype=xx.dtype)
    a, b = xx + lam * eye, yx + lam * prior
    chol, info = torch.linalg.cholesky_ex(a)  # symmetric positive definite: half the work of LU
    if int(info) != 0:
        return torch.linalg.solve(a.t(), b.t()).t()
    return torch.cholesky_solve(b.t(), chol).t()


class _Moved:
    """The student/teacher starts moved past the scorer's start unit (entered on top of it, let go first)."""

    def __init__(self) -> None:
        self.pair: list[StartAt] = []

    def move(self, pair: list[StartAt]) -> None:
        for s in reversed(self.pair):
            s.__exit__(None, None, None)
        self.pair = []
        for s in pair:
            s.__enter__()
            self.pair.append(s)

    def __enter__(self) -> _Moved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.move([])


class RecoverabilityScorer:
    """Scores drop candidates of one teacher on one tiny set (teacher features are computed once)."""

    def __init__(
        self,
        teacher: nn.Module,
        data: ImageSet,
        *,
        method: str = "closed_form",
        point: FeaturePoint | None = None,
        batch_size: int = 64,
        iters: int = 1000,
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        ridge: float = 1e-3,
        seed: int = 0,
        device: str = "cpu",
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"unknown recoverability method {method!r}; choose one of {', '.join(METHODS)}")
        self.method, self.batch_size, self.iters = method, batch_size, iters
        self.lr, self.momentum, self.weight_decay, self.ridge, self.seed = lr, momentum, weight_decay, ridge, seed
        self.device, self.cache_bytes = device, cache_bytes
        self.teacher = teacher.eval()
        self.images = data.images
        example = self.images[:1].to(device)
        self.point = point or find_feature_point(teacher, example)
        # the student (the teacher with holes and adaptors) and the teacher, for passes that start part-way;
        # channels-last: the convolutions of every model measured ran 0.64-1.0x the time (ResNet-50 0.68-0.86x)
        self.work, self.ref = (copy_model(teacher).eval().to(device, memory_format=torch.channels_last) for _ in "ab")
        for p in [*self.work.parameters(), *self.ref.parameters()]:
            p.requires_grad_(False)
        self.analysis = StreamAnalysis(self.work, example, self.point)
        self.targets = collect_features(self.ref, self.point, self.images, batch_size, device)
        self.order = self.analysis.trace.order
        self._teacher_at: dict[str, torch.Tensor] = {}  # unit -> the teacher's inputs there (every image), kept
        self._exact_at: dict[str, bool] = {}  # unit -> whether starting there gives the full-pass values

    # -- where the passes start -------------------------------------------------------------------
    def pre_fits(self, blocks: list[Block]) -> list[_PreFit]:
        """The closed-form pre-adaptor fits that ``blocks`` allow, in forward order (read on the intact model:
        once a block is dropped, its stage has one unit less)."""
        plans = []
        for b in sorted(blocks, key=lambda b: self.order.get(b.path, 0)):
            target = self.analysis.stream_output((b.path, b.branch))
            found = self.analysis.previous_unit(b)
            if target is None or found is None:
                continue
            unit, writers = found
            relu = output_relu(self.work.get_submodule(unit))
            plans.append(_PreFit(target, unit, frozenset(w.key for w in writers), f"{unit}.{relu}" if relu else None))
        return plans

    def start_unit(self, blocks: list[Block], plans: list[_PreFit] | None = None) -> str | None:
        """The module whose input the student's passes can start from: the earliest unit that the fit
        changes (the one whose pre-adaptors are fitted, or the dropped block); None for SGD, which trains
        the pre-adaptors of every earlier unit of the stage."""
        if self.method == "sgd":
            return None
        plans = self.pre_fits(blocks) if plans is None and self.method == "closed_form" else plans or []
        units = [p.unit for p in plans] + [b.path for b in blocks]
        return min(units, key=lambda u: self.order.get(u, 0))

    def _unit_inputs(self, unit: str | None) -> torch.Tensor | None:
        """The teacher's inputs of ``unit`` for every image, if they fit the budget and starting there is exact.

        They are kept by unit, beside those that reader passes moved to (:meth:`_move_to`): a later candidate
        starts or moves where an earlier one moved. Candidates come in forward order, so the units behind
        ``unit`` are let go, the nearest once the new inputs are computed from it (only the modules in between
        run): scoring every candidate pays for about one teacher pass in all.
        """
        if unit is None:
            return None
        behind = sorted((u for u in self._teacher_at if self.order[u] < self.order[unit]), key=self.order.get)
        source = behind.pop() if behind and unit not in self._teacher_at else None
        for u in behind:
            del self._teacher_at[u]
        if unit in self._teacher_at:
            return self._teacher_at[unit]
        start = StartAt(self.ref, source, self.analysis.trace, self._teacher_at.pop(source)) if source else None
        starts = [start] if start else []
        if self._exact_at.get(unit) is False or not self._room(unit, 1, starts):
            return None
        fn = feature_fn(self.ref, self.point)
        parts = []
        with start or contextlib.nullcontext():
            if not self._startable(unit, starts):
                return None
            for _, x in self._batches(starts):
                parts.append(capture(self.ref, unit, fn, x, output=False).detach().clone())
        inputs = self._teacher_at[unit] = torch.cat(parts)
        return inputs

    def _room(self, unit: str, copies: int, starts: list[StartAt]) -> bool:
        """Whether ``copies`` more sets of ``unit``'s inputs (fp32, every image) fit the cache budget beside the
        inputs of ``starts`` and of the kept units; kept inputs that no start uses are let go, the farthest
        first, to make room (the ones near the current start are the next candidates' starts)."""
        shape = self.analysis.trace.in_shape.get(unit)
        if shape is None:
            return False
        need = copies * len(self.images) * math.prod(shape[1:]) * 4
        busy = {id(s.inputs) for s in starts}
        spare = sorted((u for u, t in self._teacher_at.items() if id(t) not in busy), key=self.order.get)

        def held() -> int:  # distinct tensors: the unit start's pair shares one, a moved teacher is also kept
            tensors = {id(t): t for t in [*(s.inputs for s in starts), *self._teacher_at.values()]}
            return sum(t.numel() * t.element_size() for t in tensors.values())

        while held() + need > self.cache_bytes and spare:
            del self._teacher_at[spare.pop()]
        return held() + need <= self.cache_bytes

    @contextlib.contextmanager
    def _started(self, unit: str | None) -> Iterator[list[StartAt]]:
        """Starts for the student and the teacher at ``unit`` (none when it cannot be started from)."""
        inputs = self._unit_inputs(unit)
        if inputs is None:
            yield []
            return
        starts = [StartAt(self.work, unit, self.analysis.trace, inputs), StartAt(self.ref, unit, self.analysis.trace, inputs)]
        with starts[0], starts[1]:
            yield starts

    def _batches(self, starts: list[StartAt]) -> Iterator[tuple[slice, torch.Tensor]]:
        """The tiny set in batches, each start fed the same images' cached inputs."""
        for j in range(0, len(self.images), self.batch_size):
            index = slice(j, j + self.batch_size)
            for start in starts:
                start.feed(index, self.device)
            yield index, self.images[index].to(self.device)

    # -- measurement ------------------------------------------------------------------------------
    @torch.no_grad()
    def _mse(self, starts: list[StartAt]) -> float:
        fn = feature_fn(self.work, self.point)
        total, count = 0.0, 0
        for index, x in self._batches(starts):
            out = fn(x).float().cpu()
            total += float(((out - self.targets[index]) ** 2).sum())
            count += out.numel()
        return total / count

    # -- fitting ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _fit_pre_closed_form(self, adaptors: Adaptors, plan: _PreFit, starts: list[StartAt]) -> bool:
        """Fit the pre-adaptors of the unit before a block so its output matches the teacher's after the block.

        With the stream o = e + sum_w D_w y_w (writer outputs y_w, per-channel scales D_w, everything
        else e), probing the student with each writer zeroed gives u_w = D_w y_w and e. A ridge least
        squares then finds Q with e + sum_w Q_w u_w ~ t, and P_w = D_w^-1 Q_w D_w. The probes also check
        the assumption (doubling every writer must double o - e; u_w must be D_w y_w): when it fails, the
        pre-adaptors stay at identity and False is returned. Only the first PROBE_IMAGES images are probed
        (whole batches, while some channel of y has not been nonzero): D_w is then known, and a batch needs one
        student pass, u_w = D_w y_w read from hooks on the writers. When the unit ends in ``relu(add)``, o is
        the ReLU's input and the target is t where t > 0, else min(o, 0): the nearest point that the ReLU
        maps onto t (an inactive position only needs to stay non-positive).
        """
        target, unit, act = plan.target, plan.unit, plan.act
        idx = self._writer_sites(adaptors, plan)
        if not idx:
            return False
        s_fn, t_fn = feature_fn(self.work, self.point), feature_fn(self.ref, self.point)
        mats = adaptors.mats

        def stream(x: torch.Tensor, scales: list[float]) -> torch.Tensor:
            for i, a in zip(idx, scales):
                mats[i].copy_(a * torch.eye(mats[i].shape[0]))
            with adaptors.folded(self.work):
                if act is not None:
                    return _pre_activation(self.work, act, unit, s_fn, x)
                return capture(self.work, unit, s_fn, x, output=True)

        n = len(idx)
        c = adaptors.sites[idx[0]].channels
        xx = torch.zeros(n * c, n * c, dtype=torch.float64)
        yx = torch.zeros(c, n * c, dtype=torch.float64)
        uy = torch.zeros(n, c, dtype=torch.float64)
        yy = torch.zeros(n, c, dtype=torch.float64)
        uu = torch.zeros(n, c, dtype=torch.float64)

        def flat(z: torch.Tensor) -> torch.Tensor:
            return _channels_first(z, z.dim() == 4).float().cpu()

        def observe(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
            """The stream o1 (writers at identity) and the writers' outputs y_w, (C, M) each; None when a
            writer did not run once with the stream's shape."""
            raw: dict[int, torch.Tensor] = {}  # by writer, not in call order (a downsample runs after conv2)
            handles = [self.work.get_submodule(adaptors.sites[i].module).register_forward_hook(
                lambda mod, a, out, w=w, raw=raw: raw.__setitem__(w, out)) for w, i in enumerate(idx)]
            try:
                o1 = stream(x, [1.0] * n)
            finally:
                for h in handles:
                    h.remove()
            if len(raw) != n or any(r.shape != o1.shape for r in raw.values()):
                return None
            return o1, [flat(raw[w]) for w in range(n)]

        def probe(x: torch.Tensor, o1: torch.Tensor, y: list[torch.Tensor], first: bool) -> list[torch.Tensor] | None:
            """u_w from the stream with all writers zeroed, then each but the last alone (uy, yy, uu summed for
            D_w); None when the stream is not e + sum_w D_w y_w."""
            e = stream(x, [0.0] * n)
            if e.shape != o1.shape:
                return None
            if first:  # an activation after the add shows on any image
                nonlinear = _square_sum((stream(x, [2.0] * n) - e) - 2 * (o1 - e))
                if nonlinear > 1e-6 * _square_sum(o1 - e):
                    return None
            # u_w = o1 minus the stream with writer w zeroed; the last one follows from the sum, o1 - e = sum_w u_w
            u = [flat(o1 - stream(x, [0.0 if k == w else 1.0 for k in range(n)])) for w in range(n - 1)]
            u.append(flat(o1 - e) - sum(u))  # sum([]) is 0: one writer gives u = o1 - e
            for w in range(n):
                uy[w] += (u[w] * y[w]).sum(1).double()
                yy[w] += (y[w] * y[w]).sum(1).double()
                uu[w] += (u[w] * u[w]).sum(1).double()
            if float((uu - uy * uy / yy.clamp_min(1e-30)).sum() / uu.sum().clamp_min(1e-30)) > 1e-4:
                return None  # u_w is not a per-channel scaling of y_w
            return u

        # D_w from the first few images: the probes then cost a few unit passes on them, not on every image
        head = slice(0, min(PROBE_IMAGES, len(self.images)))
        for s in starts:
            s.feed(head, self.device)
        x = self.images[head].to(self.device)
        seen = observe(x)
        if seen is None or probe(x, *seen, first=True) is None:
            return self._reset(adaptors, idx)
        d: torch.Tensor | None = uy / yy  # D_w, once the probed images have shown every channel of y nonzero
        if not bool((yy > 0).all()):  # some channel has not: probe whole batches until each has
            d = None
            for acc in (uy, yy, uu):
                acc.zero_()
        signal = 0.0
        for index, x in self._batches(starts):
            seen = observe(x)
            if seen is None:
                return self._reset(adaptors, idx)
            o1, y = seen
            if d is None:
                u = probe(x, o1, y, index.start == 0)
                if u is None:
                    return self._reset(adaptors, idx)
                if bool((yy > 0).all()):
                    d = uy / yy
            else:
                u = [d[w].float()[:, None] * y[w] for w in range(n)]
            total = sum(u)  # o1 - e
            signal += _square_sum(total)
            big = torch.cat(u)
            xx += _gram(big, big)
            t = flat(capture(self.ref, target, t_fn, x, output=True))
            if act is not None:
                t = torch.where(t > 0, t, flat(o1).clamp_max(0.0))
            yx += _gram(t - (flat(o1) - total), big)
        d = uy / yy.clamp_min(1e-30)
        if signal == 0.0:
            return self._reset(adaptors, idx)
        q = _ridge_toward(torch.eye(c, dtype=torch.float64).repeat(1, n), xx, yx, self.ridge)
        # a row of P_w needs D_w of its channel: where no probed image showed it (the channel was zero on all of
        # them, a pruned filter) or it is zero, the row stays the identity's (Q's rows are separate least
        # squares, so the others keep their optimum); dividing by a stand-in made such a row explode (1e18 MSE)
        known = (yy > 0) & (d.abs() > 1e-8 * float(d.abs().max()))
        eye = torch.eye(c, dtype=torch.float64)
        for w, i in enumerate(idx):
            pw = q[:, w * c : (w + 1) * c] * d[w][None, :] / torch.where(known[w], d[w], 1.0)[:, None]
            mats[i].copy_(torch.where(known[w][:, None], pw, eye).float())
        return True

    def _writer_sites(self, adaptors: Adaptors, plan: _PreFit) -> list[int]:
        """Indices of the adaptor sites that ``plan`` fits: its writers that the holes left in the student."""
        return [i for i, site in enumerate(adaptors.sites) if site.key in plan.writers and _has_module(self.work, site.module)]

    @staticmethod
    def _reset(adaptors: Adaptors, idx: list[int]) -> bool:
        for i in idx:
            adaptors.mats[i].copy_(torch.eye(adaptors.mats[i].shape[0]))
        return False

    @torch.no_grad()
    def _fit_closed_form(self, adaptors: Adaptors, plans: list[_PreFit], starts: list[StartAt], moved: _Moved) -> list[StartAt]:
        """Fit the pre-adaptors, then the readers in forward order; returns the starts for the final pass.

        Before each group of readers the passes move their start forward to the unit that holds it (the
        student's input there computed once, with the adaptors fitted so far): a reader then costs a pass
        through its own unit, not through every unit from the hole to it. The pre-adaptor fits of a set's
        later holes move the same way, to their own unit, and the readers then start again from the first.
        """
        readers = sorted(
            (i for i, s in enumerate(adaptors.sites) if s.side == "in"), key=lambda i: self.order[adaptors.sites[i].module]
        )
        groups = self._reading_together(adaptors, readers)
        s_fn = feature_fn(self.work, self.point)
        t_fn = feature_fn(self.ref, self.point)
        at = starts
        for k, plan in enumerate(plans):
            once = self.analysis.trace.calls.get(plan.unit) == 1  # a start replaces the unit's one call
            if k and once and self._writer_sites(adaptors, plan) and (not at or self.order[plan.unit] > self.order[at[-1].path]):
                at = self._move_to(plan.unit, adaptors, at, moved, s_fn, t_fn)
            self._fit_pre_closed_form(adaptors, plan, at)
        moved.move([])
        for group in groups:
            holder = self._holder([adaptors.sites[i].module for i in group], starts)
            starts = self._move_to(holder, adaptors, starts, moved, s_fn, t_fn)
            self._fit_readers(adaptors, group, starts, s_fn, t_fn)
        return starts

    def _holder(self, paths: list[str], starts: list[StartAt]) -> str | None:
        """The deepest module holding every one of ``paths`` that runs once, after the current start, and that a
        pass can start from exactly: where their passes can start (None: nowhere past the current start).

        The deepest is not always startable: in a pre-norm transformer block the reader ``blocks.k.attn.qkv``
        sits in ``blocks.k.attn``, whose input is ``norm1(x)`` while the skip needs ``x`` itself; the block
        around it is the start then. Without walking up, every reader of a ViT ran from the hole (a candidate
        in the first block cost 22 passes through up to 11 blocks)."""
        trace = self.analysis.trace
        holder = parent_path(paths[0])
        while holder and not all(p.startswith(holder + ".") for p in paths):
            holder = parent_path(holder)
        current = starts[-1].path if starts else None
        while holder and (current is None or self.order[holder] > self.order[current]):
            if trace.calls.get(holder) == 1 and holder in trace.in_shape and self._startable(holder, starts):
                return holder
            holder = parent_path(holder)
        return None

    def _startable(self, unit: str, starts: list[StartAt]) -> bool:
        """Whether the teacher started at ``unit`` (under the active ``starts``) gives its full-pass features.
        Checked on two images (an inexact start shows on any) once per unit, before a whole set of inputs is
        computed there: it depends on the model's structure, not on the candidate."""
        if unit not in self._exact_at:
            first = slice(0, min(2, len(self.images)))
            for s in starts:
                s.feed(first, self.device)
            fn, x = feature_fn(self.ref, self.point), self.images[first].to(self.device)
            head = capture(self.ref, unit, fn, x, output=False).detach().clone()
            self._exact_at[unit] = reproduces(StartAt(self.ref, unit, self.analysis.trace, head), fn, x,
                                              self.targets[first], first)
        return self._exact_at[unit]

    def _move_to(self, unit: str | None, adaptors: Adaptors, starts: list[StartAt], moved: _Moved,
                 s_fn, t_fn) -> list[StartAt]:  # noqa: ANN001
        """``starts`` plus a student/teacher pair started at ``unit`` (the one moved there before is let go),
        or ``starts`` unchanged when the inputs there would pass the cache budget or starting there is inexact.
        The teacher's inputs there are kept for the next candidates, whose readers come after their holes too."""
        kept = self._teacher_at.get(unit) if unit is not None else None
        if unit is None or not self._startable(unit, starts) or not self._room(unit, 2 if kept is None else 1, starts):
            return starts
        student, teacher = [], []
        with adaptors.folded(self.work):
            for _, x in self._batches(starts):
                student.append(capture(self.work, unit, s_fn, x, output=False).detach().clone())
                if kept is None:
                    teacher.append(capture(self.ref, unit, t_fn, x, output=False).detach().clone())
        base = [s for s in starts if s not in moved.pair]
        moved.move([])
        if kept is None:
            kept = self._teacher_at[unit] = torch.cat(teacher)
        trace = self.analysis.trace
        moved.move([StartAt(self.work, unit, trace, torch.cat(student)), StartAt(self.ref, unit, trace, kept)])
        return base + moved.pair

    def _reading_together(self, adaptors: Adaptors, readers: list[int]) -> list[list[int]]:
        """Readers in forward order, consecutive ones that read the same tensor of the teacher in one group:
        none of them feeds another, so they are fitted from the same passes."""
        trace = self.analysis.trace

        def read(i: int) -> tuple | None:  # which tensor, and its shape: a view at the same address is another one
            module = adaptors.sites[i].module
            return (trace.in_id[module], trace.in_shape.get(module)) if module in trace.in_id else None

        groups: list[list[int]] = []
        for i in readers:
            p = read(i)
            if groups and p is not None and read(groups[-1][0]) == p:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _fit_readers(self, adaptors: Adaptors, group: list[int], starts: list[StartAt], s_fn, t_fn) -> None:  # noqa: ANN001
        """Fit each reader of ``group``: P maps the student's input of the layer onto the teacher's (ridge)."""
        sites = [adaptors.sites[i] for i in group]
        paths = [s.module for s in sites]
        convs = [isinstance(self.work.get_submodule(p), nn.Conv2d) for p in paths]
        aa = [torch.zeros(s.channels, s.channels, dtype=torch.float64) for s in sites]
        ba = [torch.zeros(s.channels, s.channels, dtype=torch.float64) for s in sites]
        apart = False
        with adaptors.folded(self.work):
            for index, x in self._batches(starts):
                got = capture_many(self.work, paths, s_fn, x, output=False)
                want = capture_many(self.ref, paths, t_fn, x, output=False)
                if index.start == 0 and len(group) > 1 and not all(torch.equal(w, want[0]) for w in want[1:]):
                    apart = True  # they read different tensors after all: fit them one by one
                    break
                grams: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
                for k, conv in enumerate(convs):
                    key = (id(got[k]), id(want[k]), conv)  # readers of the very same tensors (a stage's first
                    if key not in grams:  # conv and its downsample) share their Grams: one product, not two
                        a = _channels_first(got[k], conv).float().cpu()
                        b = _channels_first(want[k], conv).float().cpu()
                        grams[key] = _gram(a, a), _gram(b, a)
                    aa[k] += grams[key][0]
                    ba[k] += grams[key][1]
        if apart:
            for i in group:
                self._fit_readers(adaptors, [i], starts, s_fn, t_fn)
            return
        for k, i in enumerate(group):
            p = _ridge_toward(torch.eye(sites[k].channels, dtype=torch.float64), aa[k], ba[k], self.ridge)
            adaptors.mats[i].copy_(p.float())

    def _fit_sgd(self, adaptors: Adaptors) -> None:
        adaptors.to(self.device).attach(self.work)
        fn = feature_fn(self.work, self.point)
        opt = torch.optim.SGD(adaptors.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.4 * self.iters), int(0.8 * self.iters)], 0.1)
        gen = torch.Generator().manual_seed(self.seed)
        n = len(self.images)
        try:
            for _ in range(self.iters):
                idx = torch.randint(0, n, (min(self.batch_size, n),), generator=gen)
                loss = F.mse_loss(fn(self.images[idx].to(self.device)), self.targets[idx].to(self.device))
                if not torch.isfinite(loss):
                    raise TrainingError("adaptor training diverged (loss is NaN/inf); lower the scoring lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        finally:
            adaptors.detach()

    def sites(self, blocks: list[Block]) -> list[AdaptorSite]:
        """Adaptor sites around all ``blocks`` (union), minus layers that the drop itself removes."""
        found: dict[str, AdaptorSite] = {}
        for b in blocks:
            found.update({s.key: s for s in self.analysis.sites(b)})
        with dropped_temporarily(self.work, [b.name for b in blocks]):
            return [s for s in found.values() if _has_module(self.work, s.module)]

    def fit(self, blocks: Block | list[Block]) -> tuple[Recoverability, Adaptors]:
        """Drop ``blocks`` (temporarily), fit their adaptors, and measure R."""
        blocks = [blocks] if isinstance(blocks, Block) else list(blocks)
        t0 = time.perf_counter()
        adaptors = Adaptors(self.sites(blocks))
        plans = self.pre_fits(blocks) if self.method == "closed_form" else []
        unit = self.start_unit(blocks, plans)
        with dropped_temporarily(self.work, [b.name for b in blocks]), self._started(unit) as starts, _Moved() as moved:
            dropped = self._mse(starts)
            if self.method == "closed_form":
                starts = self._fit_closed_form(adaptors, plans, starts, moved)
            elif self.method == "sgd":
                self._fit_sgd(adaptors)
            if self.method == "none":
                mse = dropped
            else:
                with adaptors.folded(self.work):
                    mse = self._mse(starts)
        name = "+".join(b.name for b in blocks)
        rec = Recoverability(name, mse, dropped, self.method, time.perf_counter() - t0, len(adaptors.sites))
        return rec, adaptors

    def score(self, blocks: list[Block], progress: bool = True) -> list[Recoverability]:
        """R of each block, in the order given (computed in forward order of their start units).

        Under ``torchrun`` the candidates are divided over the ranks (each its share of that order) and the
        scores gathered: every fit depends only on its own candidate, so the result is the serial one. A
        candidate's passes run from its start unit to the features, so its cost is estimated by the traced
        modules from there on, and the shares are balanced on that (:func:`distributed.shard`)."""
        at = [self.order.get(self.start_unit([b]) or "", 0) for b in blocks]
        order = sorted(range(len(blocks)), key=at.__getitem__)
        mine = [order[k] for k in distributed.shard([float(len(self.order) - at[i]) for i in order])]
        out: dict[int, Recoverability] = {}
        bar = tqdm(mine, desc=f"recoverability ({self.method})", unit="block", leave=False,
                   disable=not progress or not distributed.is_main())
        for i in bar:
            out[i] = self.fit(blocks[i])[0]
            bar.set_postfix(block=blocks[i].name, mse=f"{out[i].mse:.4g}")
        self._teacher_at.clear()
        out = distributed.gather(out, "gathering the recoverability scores")
        return [out[i] for i in range(len(blocks))]


def recoverability(teacher: nn.Module, blocks: list[Block], data: ImageSet, *, progress: bool = True,
                   **kwargs) -> list[Recoverability]:
    """R(B) of each candidate; keyword arguments are those of :class:`RecoverabilityScorer`."""
    return RecoverabilityScorer(teacher, data, **kwargs).score(blocks, progress)
