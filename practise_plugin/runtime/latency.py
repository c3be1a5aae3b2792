"""Measured latency with a stated confidence: single models, interleaved A/B ratios, and the per-block table.

Why it exists: PRACTISE scores a block by recoverability divided by the latency its removal saves, and on
ResNet-34 every droppable block costs the same MACs, so only *measured* latency tells them apart. Timings
on a shared machine drift (other jobs, frequency scaling), so a candidate is never timed in a separate
session from its base model: the two run in alternating bursts (A B, B A, A B, ...) and we keep the
median of the per-pair ratios t_B / t_A (t: the fastest run of a burst), in which slow drift cancels.

What a number is worth is said with it: every comparison carries a distribution-free confidence interval
for the median ratio (order statistics), takes pairs until that interval is tight enough (or, when a
target is given, until it lies on one side of the target, or a time cap), and records the machine's load.
Per-block savings too noisy to tell blocks apart are shrunk toward a MACs-proportional prior and rounded to
the table's resolution, so noise cannot reorder blocks; tables and measured sets are cached per machine,
so the same seed on the same machine picks the same blocks.

Backends: ``openvino`` (the deployment runtime, CPU, latency hint, one stream), ``torch`` (eager CPU),
``cuda`` (eager GPU timed with CUDA events) and ``macs`` (multiply-accumulates from
:func:`~practise_plugin.graph.macs.count_macs`: no timing, deterministic, for tests and CI).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from ..core import distributed
from ..core.errors import ConfigError
from ..core.files import atomic_write_json
from ..core.torch_utils import copy_model, eval_mode, example_input, model_device, torch_threads
from ..graph.discover import Block
from ..graph.macs import count_macs
from ..surgery.drop import drop_blocks
from . import BACKENDS, COMPARE_TIME_S, MEASURE_TIME_S

if TYPE_CHECKING:
    import openvino as ov

MIN_SAMPLES = 10  # never summarise fewer timings (or A/B pairs) than this, whatever the time budget
RUNS_PER_PAIR = 5  # each side of an A/B pair is the fastest of this many back-to-back runs
MAX_SAMPLES = 100_000  # bounds a time-budgeted loop on very fast models
CONFIDENCE = 0.95  # of every interval reported for a median ratio
TOLERANCE = 0.01  # a comparison stops once its interval's half-width (in ratio) is at most this ...
CAP_FACTOR = 3.0  # ... or after CAP_FACTOR times its time budget
CACHE_FORMAT = "practise-plugin/latency/2"


@dataclass
class LatencyResult:
    """Latency of one model on one backend, from ``runs`` timed inferences of a ``batch_size`` batch.

    Fields ending in ``_ms`` hold milliseconds per batch, except for the ``macs`` backend where they hold
    millions of multiply-accumulates (see :attr:`unit`)."""

    backend: str
    device: str
    batch_size: int
    input_size: tuple[int, int, int]
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    runs: int
    threads: int | None

    @property
    def unit(self) -> str:
        return "MMAC" if self.backend == "macs" else "ms"

    def to_dict(self) -> dict:
        return {**asdict(self), "input_size": list(self.input_size), "unit": self.unit}

    @classmethod
    def from_dict(cls, d: dict) -> LatencyResult:
        return cls(d["backend"], d["device"], int(d["batch_size"]), tuple(d["input_size"]), *(
            float(d[k]) for k in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms")), int(d["runs"]), d["threads"])


@dataclass
class Load:
    """How busy the machine was while timing: ``others`` is how many cores other processes kept busy on
    average (all CPU time the system spent, less this process's own, per second of wall time), read from
    ``/proc/stat``; ``load_1min`` is the load average, for reference (it lags by a minute)."""

    others: float
    cpus: int
    load_1min: float

    @property
    def busy(self) -> bool:
        return self.others >= 0.5

    def to_dict(self) -> dict:
        return {"others": round(self.others, 2), "cpus": self.cpus, "load_1min": self.load_1min, "busy": self.busy}

    @classmethod
    def from_dict(cls, d: dict) -> Load:
        return cls(float(d["others"]), int(d["cpus"]), float(d["load_1min"]))


def _system_busy_seconds() -> float | None:
    """CPU seconds the whole system has been busy since boot (None where /proc/stat is not readable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


class LoadProbe:
    """Started before timing, read after: how much CPU other processes used in between."""

    def __init__(self) -> None:
        self.wall, self.system, self.own = time.perf_counter(), _system_busy_seconds(), _own_seconds()

    def read(self) -> Load:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        system = _system_busy_seconds()
        try:
            load = round(os.getloadavg()[0], 2)
        except OSError:
            load = 0.0
        others = 0.0
        if system is not None and self.system is not None:
            others = max(0.0, ((system - self.system) - (_own_seconds() - self.own)) / wall)
        return Load(others, os.cpu_count() or 1, load)


def machine_load(seconds: float = 0.5) -> Load:
    """The machine's load over the next ``seconds``, measured while this process sleeps."""
    probe = LoadProbe()
    time.sleep(seconds)
    return probe.read()


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval for the median of ``values``: the order statistics ``(x_(k), x_(n-k+1))``
    whose coverage, under Binomial(n, 1/2), is at least ``confidence`` (the whole range when n is too small)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binom

    k = int(binom.ppf((1.0 - confidence) / 2.0, n, 0.5))  # P(Bin <= k - 1) <= alpha / 2 for this k
    while k > 0 and binom.cdf(k - 1, n, 0.5) > (1.0 - confidence) / 2.0:
        k -= 1
    if k < 1:
        return float(x[0]), float(x[-1])
    return float(x[k - 1]), float(x[n - k])


@dataclass
class ABResult:
    """Model B against model A, timed in alternating order so that machine drift cancels in the ratios.

    ``ratio_low`` / ``ratio_high`` bound the median ratio at ``confidence``; ``converged`` says the bound was
    tight (half-width <= the tolerance) or decided against a target, rather than cut by the time cap."""

    ratio_median: float  # median over pairs of t_b / t_a (each t: the fastest of the pair's runs of that model)
    ratio_p10: float
    ratio_p90: float
    pairs: int
    a: LatencyResult
    b: LatencyResult
    ratio_low: float = math.nan
    ratio_high: float = math.nan
    confidence: float = CONFIDENCE
    converged: bool = True
    load: Load | None = None

    def to_dict(self) -> dict:
        return {"ratio_median": self.ratio_median, "ratio_p10": self.ratio_p10, "ratio_p90": self.ratio_p90,
                "ratio_low": self.ratio_low, "ratio_high": self.ratio_high, "confidence": self.confidence,
                "converged": self.converged, "pairs": self.pairs, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "load": None if self.load is None else self.load.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> ABResult:
        load = d.get("load")
        return cls(float(d["ratio_median"]), float(d["ratio_p10"]), float(d["ratio_p90"]), int(d["pairs"]),
                   LatencyResult.from_dict(d["a"]), LatencyResult.from_dict(d["b"]), float(d["ratio_low"]),
                   float(d["ratio_high"]), float(d["confidence"]), bool(d["converged"]),
                   None if load is None else Load.from_dict(load))


@dataclass
class Reduction:
    """Fraction of a base model's latency that another model saves: ``value`` (1 - median pair ratio) and
    its confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float
    ab: ABResult
    cached: bool = False

    @classmethod
    def of(cls, ab: ABResult, cached: bool = False) -> Reduction:
        return cls(1.0 - ab.ratio_median, 1.0 - ab.ratio_high, 1.0 - ab.ratio_low, ab, cached)

    def verdict(self, target: float) -> str:
        """Whether ``target`` is met: with confidence (the whole interval), by the point estimate only, or not."""
        if self.low >= target:
            return "met with confidence"
        return "met by the point estimate only" if self.value >= target else "not met"

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "confidence": self.ab.confidence,
                "converged": self.ab.converged, "cached": self.cached, **self.ab.to_dict()}


@dataclass
class LatencyTable:
    """What dropping each block alone saves, as a fraction of the base model's latency.

    ``measured[name]`` is ``1 - ratio_median`` of base vs base-without-``name`` and ``interval[name]`` its
    confidence interval; ``spread[name]`` is the (p10, p90) of the pair ratios. ``saved[name]``, what
    selection ranks by, is the measurement shrunk toward ``prior[name]`` (the MACs-proportional share of the
    measured total) by how noisy it is, then rounded to ``resolution``: blocks whose savings differ by less
    than the measurement can resolve get equal savings, and the tie rule decides (recoverability, then MACs,
    then name). ``None`` in ``saved`` means not measurable (no positive saving). ``resolved`` says whether
    the measurements told the blocks apart better than the prior (``note`` says so in words)."""

    backend: str
    device: str
    batch_size: int
    input_size: tuple[int, int, int]
    base_ms: float
    saved: dict[str, float | None]
    spread: dict[str, tuple[float, float]]
    measured: dict[str, float] = field(default_factory=dict)
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    prior: dict[str, float] = field(default_factory=dict)
    resolution: float = 0.0
    resolved: bool = True
    note: str = ""
    load: dict | None = None

    def reduction(self, names: Sequence[str]) -> float:
        """*Predicted* fraction saved by dropping all ``names``: the sum of the single-block savings.

        A prediction only: blocks interact (memory traffic, fusion), so re-measure the chosen set with
        :func:`measure_reduction` before relying on it."""
        unknown = [n for n in names if n not in self.saved]
        if unknown:
            raise ConfigError(f"no latency measured for block(s) {', '.join(unknown)}; the table has: {', '.join(self.saved)}")
        return float(sum(self.saved[n] or 0.0 for n in names))

    def to_dict(self) -> dict:
        return {"backend": self.backend, "device": self.device, "batch_size": self.batch_size,
                "input_size": list(self.input_size), "base_ms": self.base_ms, "saved": dict(self.saved),
                "spread": {k: list(v) for k, v in self.spread.items()}, "measured": dict(self.measured),
                "interval": {k: list(v) for k, v in self.interval.items()}, "prior": dict(self.prior),
                "resolution": self.resolution, "resolved": self.resolved, "note": self.note, "load": self.load}

    @classmethod
    def from_dict(cls, d: dict) -> LatencyTable:
        pairs = lambda m: {k: (float(v[0]), float(v[1])) for k, v in m.items()}  # noqa: E731
        return cls(d["backend"], d["device"], int(d["batch_size"]), tuple(d["input_size"]), float(d["base_ms"]),
                   {k: None if v is None else float(v) for k, v in d["saved"].items()}, pairs(d["spread"]),
                   {k: float(v) for k, v in d.get("measured", {}).items()}, pairs(d.get("interval", {})),
                   {k: float(v) for k, v in d.get("prior", {}).items()}, float(d.get("resolution", 0.0)),
                   bool(d.get("resolved", True)), str(d.get("note", "")), d.get("load"))


def resolve_savings(measured: dict[str, float], interval: dict[str, tuple[float, float]],
                    macs: dict[str, float], confidence: float = CONFIDENCE) -> tuple[dict[str, float | None], dict[str, float], float, bool, str]:
    """Per-block savings fit to rank by: ``(saved, prior, resolution, resolved, note)``.

    Each measurement ``s_i`` has a noise variance ``v_i`` (from its interval's half-width). The prior is
    ``p_i = c * m_i`` (``m_i``: the block's share of the MACs, ``c`` fitted so priors and measurements have
    the same total) and the real spread of the savings around it ``tau^2 = var(s - p) - mean(v)``. The
    estimate is the precision-weighted mean ``(tau^2 s_i + v_i p_i) / (tau^2 + v_i)``: a precise measurement
    stands, a noisy one falls back to its MACs share. It is then rounded to the median posterior
    half-width (the table's resolution), so two blocks closer than that tie."""
    names = list(measured)
    s = np.array([measured[n] for n in names])
    z = _z(confidence)
    v = np.array([((interval[n][1] - interval[n][0]) / (2 * z)) ** 2 for n in names])
    m = np.array([max(float(macs.get(n, 0.0)), 0.0) for n in names])
    c = float(s.sum() / m.sum()) if m.sum() > 0 and s.sum() > 0 else 0.0
    p = c * m
    tau2 = float(np.var(s - p) - v.mean()) if len(s) > 1 else 0.0
    floor = 1e-12
    resolved = tau2 > float(np.median(v))
    tau2 = max(tau2, floor)
    post = (tau2 * s + v * p) / (tau2 + v)
    half = z * np.sqrt(tau2 * v / (tau2 + v))
    resolution = float(np.median(half)) if len(half) else 0.0
    rounded = np.round(post / resolution) * resolution if resolution > 0 else post
    saved = {n: (float(r) if r > 0 else None) for n, r in zip(names, rounded)}
    prior = {n: float(x) for n, x in zip(names, p)}
    if resolved:
        note = (f"per-block savings resolved: their spread beyond the prior exceeds the measurement noise; "
                f"rounded to {resolution:.2%}")
    else:
        note = (f"the machine was too noisy to tell single blocks apart (noise sd {math.sqrt(float(np.median(v))):.2%} "
                f"vs spread {math.sqrt(max(tau2, 0.0)):.2%}): savings fall back toward the MACs-proportional prior")
    return saved, prior, resolution, resolved, note


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


# --------------------------------------------------------------------------------------------- backends


def resolve_backend(backend: str, device: str = "cpu") -> tuple[str, str]:
    """Validate ``backend``/``device`` and pick the timing method: any timed backend on a CUDA device is
    ``cuda`` (CUDA events are the only honest clock there); ``cuda`` without a GPU is an error."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown latency backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    device = str(device)
    if backend != "macs" and device.startswith("cuda"):
        backend = "cuda"
    elif backend == "cuda":
        device = "cuda"
    elif backend in ("openvino", "torch") and device != "cpu":
        raise ConfigError(f"the {backend} latency backend times on the CPU; use device='cpu', or device='cuda' for GPU timing")
    if backend == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "CUDA latency was asked for, but torch.cuda.is_available() is False (no NVIDIA GPU, driver or CUDA "
            "build of torch here). Run on a machine with a CUDA GPU, or time on the CPU with backend 'openvino' "
            "(deployment runtime) or 'torch'."
        )
    return backend, device


class Runner(Protocol):
    """A model prepared for timing: ``time_one()`` runs one batch and returns its seconds."""

    threads: int | None

    def time_one(self) -> float: ...


class _TorchRunner:
    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        self.model, self.x, self.threads = model, x, torch.get_num_threads()

    def time_one(self) -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model(self.x)
            return time.perf_counter() - t0


class CudaRunner:
    """Times with CUDA events recorded around the forward, so the GPU's own clock measures the work and
    host-side jitter does not. ``event`` is a parameter so the logic can be exercised without a GPU."""

    def __init__(self, model: nn.Module, x: torch.Tensor, event: Callable[..., object] | None = None) -> None:
        self.model, self.x, self.threads = model, x, None
        self._event = event or torch.cuda.Event

    def time_one(self) -> float:
        start, end = self._event(enable_timing=True), self._event(enable_timing=True)
        with torch.inference_mode():
            start.record()
            self.model(self.x)
            end.record()
        end.synchronize()  # wait for the GPU to finish before reading the events
        return start.elapsed_time(end) / 1000.0  # elapsed_time is in milliseconds


class _OpenVINORunner:
    """Times an OpenVINO compile of a torch model (converted here) or of an already converted ``ov.Model``."""

    def __init__(self, model: nn.Module | ov.Model, x: torch.Tensor, num_threads: int | None,
                 check_trace: bool = True) -> None:
        import openvino as ov

        from .openvino import compile_cpu, to_openvino

        self.model = model if isinstance(model, ov.Model) else to_openvino(model, tuple(x.shape[1:]), len(x),
                                                                            check_trace=check_trace)
        compiled = compile_cpu(self.model, num_threads)
        self.request = compiled.create_infer_request()
        self.request.set_input_tensor(ov.Tensor(x.numpy()))  # set once: infer() then times the network only
        self.x, self.num_threads = x, num_threads
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))

    def time_one(self) -> float:
        t0 = time.perf_counter()
        self.request.infer()
        return time.perf_counter() - t0

    def without(self, names: Sequence[str], dropped: nn.Module) -> _OpenVINORunner:
        """A runner for ``dropped``, this runner's torch model without the blocks ``names``: its IR is this one
        with those blocks bypassed where that IR's output matches ``dropped``'s
        (:func:`~practise_plugin.runtime.openvino.bypass_checked`), else ``dropped`` converted afresh."""
        from .openvino import bypass_checked

        bypassed = bypass_checked(self.model, names, dropped, self.x)
        return _OpenVINORunner(dropped if bypassed is None else bypassed, self.x, self.num_threads, check_trace=False)


@contextlib.contextmanager
def _cudnn_benchmark() -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest kernels during warm-up
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def timing_session(backend: str, device: str, num_threads: int | None) -> Iterator[Callable[..., Runner]]:
    """Global settings of a timed backend held for a whole session; yields ``prepare(model, x) -> Runner``.

    Callers put the models in eval mode (:func:`eval_mode`); the CUDA runner times a copy moved to the
    GPU, so the caller's model stays where it is. ``prepare(model, x, check_trace=False)`` skips OpenVINO's
    trace check (:func:`~practise_plugin.runtime.openvino.to_openvino`) for a variant of a checked model."""
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
    with contextlib.ExitStack() as stack:
        if backend == "openvino":
            def prepare(model: nn.Module, x: torch.Tensor, check_trace: bool = True) -> Runner:
                return _OpenVINORunner(model, x, num_threads, check_trace)
        elif backend == "torch":
            stack.enter_context(torch_threads(num_threads))

            def prepare(model: nn.Module, x: torch.Tensor, check_trace: bool = True) -> Runner:
                return _TorchRunner(model, x)
        elif backend == "cuda":
            stack.enter_context(_cudnn_benchmark())

            def prepare(model: nn.Module, x: torch.Tensor, check_trace: bool = True) -> Runner:
                return CudaRunner(copy_model(model).to(device), x.to(device))
        else:
            raise ConfigError(f"backend {backend!r} is not timed; valid timed backends: openvino, torch, cuda")
        yield prepare


def _prepare_dropped(prepare: Callable[..., Runner], base: Runner, model: nn.Module, names: Sequence[str],
                     x: torch.Tensor) -> Runner:
    """A runner for ``model``, which is ``base``'s model minus the blocks ``names``: on OpenVINO the base's IR
    with those blocks bypassed (:meth:`_OpenVINORunner.without`), elsewhere ``model`` prepared afresh,
    without the trace check its base already passed."""
    if isinstance(base, _OpenVINORunner):
        return base.without(names, model)
    return prepare(model, x, check_trace=False)


# ------------------------------------------------------------------------------------------- sampling


def _warm_up(runners: Sequence[Runner], warmup: int | None, budget_s: float) -> None:
    """Run each model ``warmup`` times, or by default at least 3 times and for ~10% of the budget
    (first inferences pay for allocation, kernel selection and caches)."""
    if warmup is not None:
        for _ in range(warmup):
            for r in runners:
                r.time_one()
        return
    deadline = time.perf_counter() + 0.1 * budget_s
    n = 0
    while n < 3 or time.perf_counter() < deadline:
        for r in runners:
            r.time_one()
        n += 1


def _sample(step: Callable[[int], object], runs: int | None, budget_s: float) -> list:
    """``runs`` samples of ``step(i)`` if given, else samples for ``budget_s`` seconds (at least
    MIN_SAMPLES, at most MAX_SAMPLES)."""
    if runs is not None:
        if runs < 1:
            raise ConfigError(f"runs/rounds must be at least 1, got {runs}")
        return [step(i) for i in range(runs)]
    out: list = []
    deadline = time.perf_counter() + budget_s
    while len(out) < MAX_SAMPLES and (len(out) < MIN_SAMPLES or time.perf_counter() < deadline):
        out.append(step(len(out)))
    return out


def summarize(samples_s: Sequence[float], backend: str, device: str, batch_size: int,
              input_size: Sequence[int], threads: int | None) -> LatencyResult:
    """Median and spread of timings given in seconds (reported in milliseconds)."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    p10, med, p90 = np.percentile(ms, [10, 50, 90])
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    return LatencyResult(backend, device, batch_size, tuple(input_size), float(med), float(p10), float(p90),
                         float(ms.mean()), std, len(ms), threads)


def _macs_result(model: nn.Module, input_size: Sequence[int], batch_size: int, device: str) -> LatencyResult:
    mmac = count_macs(model, example_input(input_size, batch_size).to(model_device(model))) / 1e6
    return LatencyResult("macs", device, batch_size, tuple(input_size), mmac, mmac, mmac, mmac, 0.0, 1, None)


def _check_sizes(input_size: Sequence[int], batch_size: int) -> tuple[int, int, int]:
    if len(input_size) != 3 or any(int(s) < 1 for s in input_size):
        raise ConfigError(f"input_size must be (C, H, W) with positive sizes, got {tuple(input_size)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    return tuple(int(s) for s in input_size)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- public API


def measure_latency(
    model: nn.Module, input_size: tuple[int, int, int], backend: str = "openvino", *, batch_size: int = 1,
    runs: int | None = None, warmup: int | None = None, num_threads: int | None = None, device: str = "cpu",
    time_s: float = MEASURE_TIME_S,
) -> LatencyResult:
    """Latency of one forward pass of a ``batch_size`` batch: median and spread over many timed runs.

    ``runs=None`` samples for ``time_s`` seconds (at least 10 runs). An absolute number depends on the
    machine and its load; to compare two models use :func:`compare_latency`."""
    input_size = _check_sizes(input_size, batch_size)
    backend, device = resolve_backend(backend, device)
    if backend == "macs":
        return _macs_result(model, input_size, batch_size, device)
    x = example_input(input_size, batch_size)
    with eval_mode(model), timing_session(backend, device, num_threads) as prepare:
        runner = prepare(model, x)
        _warm_up([runner], warmup, time_s)
        samples = _sample(lambda i: runner.time_one(), runs, time_s)
    return summarize(samples, backend, device, batch_size, input_size, runner.threads)


def _pair(ra: Runner, rb: Runner, i: int) -> tuple[float, float]:
    """One pair: RUNS_PER_PAIR runs of each model, alternating which goes first (A B, B A, ...) so that
    neither always runs in the other's wake; each side is the fastest of its runs."""
    def fastest(r: Runner) -> float:
        return min(r.time_one() for _ in range(RUNS_PER_PAIR))

    if i % 2 == 0:
        ta = fastest(ra)
        return ta, fastest(rb)
    tb = fastest(rb)
    return fastest(ra), tb


def _time_ab(ra: Runner, rb: Runner, warmup: int | None, rounds: int | None, time_s: float, backend: str,
             device: str, batch_size: int, input_size: tuple[int, int, int], *, tolerance: float = TOLERANCE,
             target_ratio: float | None = None, confidence: float = CONFIDENCE) -> ABResult:
    """Warm both models up, time them in alternating bursts, and take the ratio of each pair's fastest
    runs. Other jobs on the machine can only add time to a run, so the fastest of a short burst is the
    model's own cost; the median over pairs then cancels slower drift (clock frequency, cache state).

    With ``rounds`` the number of pairs is fixed. Otherwise pairs are taken (at least MIN_SAMPLES) until
    the median's interval is at most ``tolerance`` wide on each side, or lies wholly on one side of
    ``target_ratio``, or ``CAP_FACTOR * time_s`` seconds have passed (then ``converged`` is False)."""
    if rounds is not None and rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    _warm_up([ra, rb], warmup, time_s)
    probe = LoadProbe()
    ta: list[float] = []
    tb: list[float] = []
    ratios: list[float] = []
    start = time.perf_counter()
    converged = True
    while True:
        a, b = _pair(ra, rb, len(ratios))
        ta.append(a)
        tb.append(b)
        ratios.append(b / a)
        n = len(ratios)
        if rounds is not None:
            if n >= rounds:
                break
            continue
        if n < MIN_SAMPLES:
            continue
        lo, hi = median_interval(ratios, confidence)
        if (hi - lo) / 2 <= tolerance or (target_ratio is not None and (hi < target_ratio or lo > target_ratio)):
            break
        if time.perf_counter() - start >= CAP_FACTOR * time_s or n >= MAX_SAMPLES:
            converged = False
            break
    r = np.asarray(ratios)
    p10, med, p90 = np.percentile(r, [10, 50, 90])
    lo, hi = median_interval(r, confidence)
    load = probe.read()
    return ABResult(float(med), float(p10), float(p90), len(r),
                    summarize(ta, backend, device, batch_size, input_size, ra.threads),
                    summarize(tb, backend, device, batch_size, input_size, rb.threads),
                    lo, hi, confidence, converged, load)


def _macs_ab(a: LatencyResult, b: LatencyResult) -> ABResult:
    r = b.median_ms / a.median_ms
    return ABResult(r, r, r, 1, a, b, r, r, 1.0, True, None)


def compare_latency(
    model_a: nn.Module, model_b: nn.Module, input_size: tuple[int, int, int], backend: str = "openvino", *,
    batch_size: int = 1, rounds: int | None = None, num_threads: int | None = None, device: str = "cpu",
    warmup: int | None = None, time_s: float = COMPARE_TIME_S, tolerance: float = TOLERANCE,
    target: float | None = None, dropped: Sequence[str] | None = None,
) -> ABResult:
    """Time B against A in alternating order; ``ratio_median`` < 1 means B is faster.

    Each pair is RUNS_PER_PAIR runs of A and as many of B; its ratio is min(B runs) / min(A runs). Pairs
    are taken until the median ratio's confidence interval is within ``tolerance`` (or decides ``target``,
    a fraction of latency saved), at most ``CAP_FACTOR * time_s`` seconds; ``rounds`` fixes the number of
    pairs instead. ``a`` and ``b`` summarise the fastest run of each pair. ``dropped`` says that B is A minus
    those blocks (:func:`~practise_plugin.surgery.drop.drop_blocks`): B is then prepared from A's IR."""
    input_size = _check_sizes(input_size, batch_size)
    backend, device = resolve_backend(backend, device)
    if backend == "macs":
        return _macs_ab(_macs_result(model_a, input_size, batch_size, device),
                        _macs_result(model_b, input_size, batch_size, device))
    x = example_input(input_size, batch_size)
    with eval_mode(model_a), eval_mode(model_b), timing_session(backend, device, num_threads) as prepare:
        ra = prepare(model_a, x)
        rb = prepare(model_b, x) if dropped is None else _prepare_dropped(prepare, ra, model_b, dropped, x)
        return _time_ab(ra, rb, warmup, rounds, time_s, backend, device, batch_size, input_size, tolerance=tolerance,
                        target_ratio=None if target is None else 1.0 - target)


def measure_reduction(teacher: nn.Module, student: nn.Module, input_size: tuple[int, int, int],
                      backend: str = "openvino", **kw) -> tuple[float, ABResult]:
    """Measured fraction of the teacher's latency that the student saves (``1 - ratio_median``)."""
    ab = compare_latency(teacher, student, input_size, backend, **kw)
    return 1.0 - ab.ratio_median, ab


# ------------------------------------------------------------------------------------------- caching


def structure_fingerprint(model: nn.Module) -> str:
    """Hash of what a model *is* (module tree, types, settings, parameter shapes), not of its weights,
    so retraining keeps a latency cache valid while any surgery invalidates it."""
    h = hashlib.sha256()
    for name, m in model.named_modules():
        tensors = [(n, tuple(t.shape), str(t.dtype)) for n, t in (*m.named_parameters(recurse=False),
                                                                 *m.named_buffers(recurse=False)) if t is not None]
        code = getattr(m, "code", "") if isinstance(m, torch.fx.GraphModule) else ""
        h.update(repr((name, type(m).__module__, type(m).__qualname__, m.extra_repr(), tensors, code)).encode())
    return h.hexdigest()


def machine_name(backend: str, device: str) -> str:
    """What a timing is only valid on: the CPU model and core count, or the GPU name."""
    if backend == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    model_name = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model_name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model_name)
    return f"{model_name} x{os.cpu_count()}"


def _runtime_versions(backend: str) -> dict[str, str]:
    versions = {"torch": torch.__version__}
    if backend == "openvino":
        import openvino as ov

        versions["openvino"] = ov.get_version()
    return versions


def default_cache_dir() -> Path:
    """Where latency measurements are kept between runs: ``$PRACTISE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/practise-plugin``, else ``~/.cache/practise-plugin`` (then ``/latency``). Per machine,
    not per output folder: a second run on the same machine reuses what the first measured."""
    root = os.environ.get("PRACTISE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "practise-plugin"
    return Path(root) / "latency"


def _settings_key(kind: str, parts: dict, input_size: Sequence[int], backend: str, device: str, batch_size: int,
                  num_threads: int | None, rounds: int | None, time_s: float) -> str:
    key = {"kind": kind, **parts, "input_size": list(input_size), "backend": backend, "device": device,
           "batch_size": batch_size}
    if backend != "macs":  # MACs are the same everywhere; timings are not
        key.update(threads=num_threads, rounds=rounds, time_s=time_s, tolerance=TOLERANCE,
                   machine=machine_name(backend, device), versions=_runtime_versions(backend))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def table_cache_key(model: nn.Module, names: Sequence[str], input_size: Sequence[int], backend: str, device: str,
                    batch_size: int, num_threads: int | None, rounds: int | None, time_s: float) -> str:
    """Everything a table's numbers depend on; for timed backends also the machine and runtime versions."""
    return _settings_key("table", {"structure": structure_fingerprint(model), "blocks": list(names)}, input_size,
                         backend, device, batch_size, num_threads, rounds, time_s)


def _read_cache(path: Path | None, key: str) -> dict | None:
    """The cached entry, or None when absent, unreadable (a stale format) or for another key."""
    if path is None:
        return None
    try:
        d = json.loads(path.read_text())
        if d.get("format") == CACHE_FORMAT and d.get("key") == key:
            return d["value"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        pass
    return None


def _write_cache(path: Path | None, key: str, value: dict) -> None:
    if path is not None:
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time later
            atomic_write_json(path, {"format": CACHE_FORMAT, "key": key, "value": value})


def _progress(names: list[str], backend: str, enabled: bool) -> Iterator[str]:
    from tqdm import tqdm

    return tqdm(names, desc=f"block latency ({backend})", unit="block", disable=not enabled, leave=False)


def _block_macs(model: nn.Module, blocks: Sequence[Block | str], input_size: Sequence[int]) -> dict[str, float]:
    """MACs each block removes: from the Block records when given, else by counting the model without it."""
    if all(isinstance(b, Block) for b in blocks):
        return {b.name: float(b.macs) for b in blocks}  # type: ignore[union-attr]
    x = example_input(input_size).to(model_device(model))
    total = count_macs(model, x)
    out = {}
    for b in blocks:
        name = b.name if isinstance(b, Block) else str(b)
        out[name] = float(b.macs) if isinstance(b, Block) else float(total - count_macs(drop_blocks(model, [name]), x))
    return out


def block_latency_table(
    model: nn.Module, blocks: Sequence[Block | str], input_size: tuple[int, int, int], backend: str = "openvino", *,
    batch_size: int = 1, num_threads: int | None = None, device: str = "cpu", cache_dir: Path | str | None = None,
    progress: bool = True, rounds: int | None = None, time_s: float = COMPARE_TIME_S,
    macs: dict[str, float] | None = None,
) -> LatencyTable:
    """Fraction of ``model``'s latency saved by dropping each block alone, each measured A/B against the
    base model until its interval is tight (or the time cap), then resolved against the MACs prior
    (:func:`resolve_savings`). On OpenVINO the base is converted once and each drop's IR derived from it
    (:func:`~practise_plugin.runtime.openvino.bypass_checked`). With ``cache_dir`` the table is stored (JSON)
    and a repeated call on the same machine returns it unchanged, so the same seed picks the same blocks (the
    table records how busy the machine was when it was timed; measure afresh with another, or no, cache
    folder)."""
    input_size = _check_sizes(input_size, batch_size)
    backend, device = resolve_backend(backend, device)
    names = [b.name if isinstance(b, Block) else str(b) for b in blocks]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"give a non-empty list of distinct block names, got {names}")
    key = table_cache_key(model, names, input_size, backend, device, batch_size, num_threads, rounds, time_s)
    path = None if cache_dir is None else Path(cache_dir) / f"table-{backend}-{key[:20]}.json"
    if (cached := _read_cache(path, key)) is not None:
        return LatencyTable.from_dict(cached)
    macs = {**_block_macs(model, [b for b in blocks if (b.name if isinstance(b, Block) else b) not in (macs or {})],
                          input_size), **(macs or {})} if backend != "macs" else {}
    results: dict[str, ABResult] = {}
    if backend == "macs":
        base = _macs_result(model, input_size, batch_size, device)
        for name in _progress(names, backend, progress):
            results[name] = _macs_ab(base, _macs_result(drop_blocks(model, [name]), input_size, batch_size, device))
    else:
        x = example_input(input_size, batch_size)
        with eval_mode(model), timing_session(backend, device, num_threads) as prepare:
            ra = prepare(model, x)  # the base is prepared (converted, trace checked, compiled) once for all blocks
            for name in _progress(names, backend, progress):  # a drop runs the base's code minus one block
                rb = _prepare_dropped(prepare, ra, drop_blocks(model, [name]), [name], x)
                results[name] = _time_ab(ra, rb, None, rounds, time_s, backend, device, batch_size, input_size)
    measured = {n: 1.0 - r.ratio_median for n, r in results.items()}
    interval = {n: (1.0 - r.ratio_high, 1.0 - r.ratio_low) for n, r in results.items()}
    loads = [r.load for r in results.values() if r.load is not None]
    load = max(loads, key=lambda ld: ld.others).to_dict() if loads else None
    if backend == "macs":  # exact: nothing to resolve
        saved, prior, resolution, resolved, note = dict(measured), dict(measured), 0.0, True, "MACs: exact"
    else:
        saved, prior, resolution, resolved, note = resolve_savings(measured, interval, macs)
    table = LatencyTable(
        backend, device, batch_size, input_size,
        base_ms=float(np.median([r.a.median_ms for r in results.values()])), saved=saved,
        spread={n: (1.0 - r.ratio_p90, 1.0 - r.ratio_p10) for n, r in results.items()},
        measured=measured, interval=interval, prior=prior, resolution=resolution, resolved=resolved, note=note,
        load=load,
    )
    if load is not None and load["busy"]:
        warnings.warn(f"the machine was busy while the block table was timed (other processes kept {load['others']} "
                      f"of {load['cpus']} cores busy): its intervals are wider; it is cached for later runs on this "
                      "machine (pass another latency cache, or none, to re-measure)",
                      stacklevel=2)
    _write_cache(path, key, table.to_dict())
    return table


# ------------------------------------------------------------------------------------------- the meter


class LatencyMeter:
    """How a run measures latency: one backend, batch size, thread count and device, used for the per-block
    table and for every measured drop, so that all of a run's latency numbers are of the same kind.

    Strategies receive it in their :class:`~practise_plugin.core.strategy.CompressionContext`. ``cache_dir``
    (default :func:`default_cache_dir`; None: no cache) keeps tables and measured sets per machine.
    Under ``torchrun`` rank 0 measures and every rank gets its numbers: ranks timing side by side would
    slow each other, and every rank must take the same selection decisions."""

    def __init__(self, backend: str = "openvino", *, batch_size: int = 1, num_threads: int | None = None,
                 device: str = "cpu", input_size: Sequence[int], cache_dir: Path | str | None | bool = True,
                 time_s: float = COMPARE_TIME_S) -> None:
        self.backend, self.device = resolve_backend(backend, device)
        self.input_size = _check_sizes(input_size, batch_size)
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
        if time_s <= 0:
            raise ConfigError(f"the latency time budget must be positive, got {time_s}")
        self.batch_size, self.num_threads, self.time_s = batch_size, num_threads, time_s
        self.cache_dir = default_cache_dir() if cache_dir is True else (Path(cache_dir) if cache_dir else None)

    def block_table(self, model: nn.Module, blocks: Sequence[Block | str], *, macs: dict[str, float] | None = None,
                    progress: bool = True) -> LatencyTable:
        return distributed.on_rank0(lambda: block_latency_table(
            model, blocks, self.input_size, self.backend, batch_size=self.batch_size, num_threads=self.num_threads,
            device=self.device, cache_dir=self.cache_dir, progress=progress, time_s=self.time_s, macs=macs),
            "sharing the per-block latency table")

    def reduction(self, base: nn.Module, model: nn.Module, *, target: float | None = None,
                  cache: bool = False, dropped: Sequence[str] | None = None) -> Reduction:
        """Fraction of ``base``'s latency that ``model`` saves, with its interval. With ``target`` the
        measurement stops as soon as its interval lies on one side of it; with ``cache`` a measurement of
        the same pair of structures on this machine is reused (selection does; final reports do not).
        ``dropped``: ``model`` is ``base`` minus these blocks (prepared from ``base``'s IR, a conversion saved)."""
        return distributed.on_rank0(lambda: self._reduction(base, model, target, cache, dropped),
                                    "sharing a latency measurement")

    def _reduction(self, base: nn.Module, model: nn.Module, target: float | None, cache: bool,
                   dropped: Sequence[str] | None) -> Reduction:
        path, key = None, ""
        if cache and self.cache_dir is not None and self.backend != "macs":
            parts = {"base": structure_fingerprint(base), "model": structure_fingerprint(model), "target": target}
            key = _settings_key("reduction", parts, self.input_size, self.backend, self.device, self.batch_size,
                                self.num_threads, None, self.time_s)
            path = self.cache_dir / f"reduction-{self.backend}-{key[:20]}.json"
            cached = _read_cache(path, key)
            if cached is not None:
                return Reduction.of(ABResult.from_dict(cached), cached=True)
        ab = compare_latency(base, model, self.input_size, self.backend, batch_size=self.batch_size,
                             num_threads=self.num_threads, device=self.device, time_s=self.time_s, target=target,
                             dropped=dropped)
        if ab.load is not None and ab.load.busy:
            warnings.warn(f"the machine is busy (other processes kept {ab.load.others:.1f} of {ab.load.cpus} cores "
                          "busy while timing): latency intervals are wider", stacklevel=2)
        _write_cache(path, key, ab.to_dict())
        return Reduction.of(ab)
