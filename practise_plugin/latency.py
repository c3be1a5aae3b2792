"""Measured latency: single models, interleaved A/B ratios, and the per-block table PRACTISE ranks by.

Why it exists: PRACTISE scores a block by recoverability divided by the latency its removal saves, and on
ResNet-34 every droppable block costs the same MACs, so only *measured* latency tells them apart. Timings
on a shared machine drift (other jobs, frequency scaling), so a candidate is never timed in a separate
session from its base model: the two run in alternating bursts (A B, B A, A B, ...) and we keep the
median of the per-pair ratios t_B / t_A (t: the fastest run of a burst), in which slow drift cancels.

Backends: ``openvino`` (the deployment runtime, CPU, latency hint, one stream), ``torch`` (eager CPU),
``cuda`` (eager GPU timed with CUDA events) and ``macs`` (multiply-accumulates from
:func:`~practise_plugin.discover.count_macs`: no timing, deterministic, for tests and CI).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .discover import Block, count_macs
from .drop import drop_blocks
from .errors import ConfigError
from .io import atomic_write_json

BACKENDS = ("openvino", "torch", "cuda", "macs")
MEASURE_TIME_S = 1.0  # default budget of measure_latency: ~200 samples of a 5 ms model
COMPARE_TIME_S = 2.0  # default budget of one A/B comparison (both models share it)
MIN_SAMPLES = 10  # never summarise fewer timings (or A/B pairs) than this, whatever the time budget
RUNS_PER_PAIR = 5  # each side of an A/B pair is the fastest of this many back-to-back runs
MAX_SAMPLES = 100_000  # bounds a time-budgeted loop on very fast models
CACHE_FORMAT = "practise-plugin/latency-table/1"


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


@dataclass
class ABResult:
    """Model B against model A, timed in alternating order so that machine drift cancels in the ratios."""

    ratio_median: float  # median over pairs of t_b / t_a (each t: the fastest of the pair's runs of that model)
    ratio_p10: float
    ratio_p90: float
    pairs: int
    a: LatencyResult
    b: LatencyResult

    def to_dict(self) -> dict:
        return {"ratio_median": self.ratio_median, "ratio_p10": self.ratio_p10, "ratio_p90": self.ratio_p90,
                "pairs": self.pairs, "a": self.a.to_dict(), "b": self.b.to_dict()}


@dataclass
class LatencyTable:
    """What dropping each block alone saves, as a fraction of the base model's latency.

    ``saved[name]`` is ``1 - ratio_median`` of the A/B comparison base vs base-without-``name``;
    ``spread[name]`` is its (p10, p90) over the pairs. Savings within the noise can come out slightly
    negative; they are kept as measured."""

    backend: str
    device: str
    batch_size: int
    input_size: tuple[int, int, int]
    base_ms: float
    saved: dict[str, float]
    spread: dict[str, tuple[float, float]]

    def reduction(self, names: Sequence[str]) -> float:
        """*Predicted* fraction saved by dropping all ``names``: the sum of the single-block savings.

        A prediction only: blocks interact (memory traffic, fusion), so re-measure the chosen set with
        :func:`measure_reduction` before relying on it."""
        unknown = [n for n in names if n not in self.saved]
        if unknown:
            raise ConfigError(f"no latency measured for block(s) {', '.join(unknown)}; the table has: {', '.join(self.saved)}")
        return float(sum(self.saved[n] for n in names))

    def to_dict(self) -> dict:
        return {"backend": self.backend, "device": self.device, "batch_size": self.batch_size,
                "input_size": list(self.input_size), "base_ms": self.base_ms, "saved": dict(self.saved),
                "spread": {k: list(v) for k, v in self.spread.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> LatencyTable:
        return cls(d["backend"], d["device"], int(d["batch_size"]), tuple(d["input_size"]), float(d["base_ms"]),
                   {k: float(v) for k, v in d["saved"].items()},
                   {k: (float(v[0]), float(v[1])) for k, v in d["spread"].items()})


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


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the duration of the block, then restore each module's own flag."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def example_input(input_size: Sequence[int], batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """The fixed input every backend times: seeded, so two runs time the same arithmetic."""
    return torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(seed))


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
    def __init__(self, model: nn.Module, x: torch.Tensor, num_threads: int | None) -> None:
        import openvino as ov

        from .openvino import compile_cpu, to_openvino

        compiled = compile_cpu(to_openvino(model, tuple(x.shape[1:]), len(x)), num_threads)
        self.request = compiled.create_infer_request()
        self.request.set_input_tensor(ov.Tensor(x.numpy()))  # set once: infer() then times the network only
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))

    def time_one(self) -> float:
        t0 = time.perf_counter()
        self.request.infer()
        return time.perf_counter() - t0


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count (None: leave it) for the block, then restore the caller's."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _cudnn_benchmark() -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest kernels during warm-up
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def timing_session(backend: str, device: str, num_threads: int | None) -> Iterator[Callable[[nn.Module, torch.Tensor], Runner]]:
    """Global settings of a timed backend held for a whole session; yields ``prepare(model, x) -> Runner``.

    Callers put the models in eval mode (:func:`eval_mode`); the CUDA runner times a copy moved to the
    GPU, so the caller's model stays where it is."""
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
    with contextlib.ExitStack() as stack:
        if backend == "openvino":
            def prepare(model: nn.Module, x: torch.Tensor) -> Runner:
                return _OpenVINORunner(model, x, num_threads)
        elif backend == "torch":
            stack.enter_context(torch_threads(num_threads))

            def prepare(model: nn.Module, x: torch.Tensor) -> Runner:
                return _TorchRunner(model, x)
        elif backend == "cuda":
            stack.enter_context(_cudnn_benchmark())

            def prepare(model: nn.Module, x: torch.Tensor) -> Runner:
                return CudaRunner(copy.deepcopy(model).to(device), x.to(device))
        else:
            raise ConfigError(f"backend {backend!r} is not timed; valid timed backends: openvino, torch, cuda")
        yield prepare


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
    where = next(model.parameters(), torch.empty(0)).device  # count wherever the model lives
    with eval_mode(model):
        mmac = count_macs(model, example_input(input_size, batch_size).to(where)) / 1e6
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
    min_time_s: float = MEASURE_TIME_S,
) -> LatencyResult:
    """Latency of one forward pass of a ``batch_size`` batch: median and spread over many timed runs.

    ``runs=None`` samples for ``min_time_s`` seconds (at least 10 runs). An absolute number depends on
    the machine and its load; to compare two models use :func:`compare_latency`."""
    input_size = _check_sizes(input_size, batch_size)
    backend, device = resolve_backend(backend, device)
    if backend == "macs":
        return _macs_result(model, input_size, batch_size, device)
    x = example_input(input_size, batch_size)
    with eval_mode(model), timing_session(backend, device, num_threads) as prepare:
        runner = prepare(model, x)
        _warm_up([runner], warmup, min_time_s)
        samples = _sample(lambda i: runner.time_one(), runs, min_time_s)
    return summarize(samples, backend, device, batch_size, input_size, runner.threads)


def _interleaved(ra: Runner, rb: Runner, rounds: int | None, budget_s: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of (A runs, B runs), RUNS_PER_PAIR each, alternating which model goes first (A B, B A, ...)
    so that neither always runs in the other's wake."""
    def chunk(r: Runner) -> np.ndarray:
        return np.array([r.time_one() for _ in range(RUNS_PER_PAIR)])

    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        if i % 2 == 0:
            ta = chunk(ra)
            return ta, chunk(rb)
        tb = chunk(rb)
        return chunk(ra), tb

    return _sample(pair, rounds, budget_s)


def _time_ab(ra: Runner, rb: Runner, warmup: int | None, rounds: int | None, budget_s: float, backend: str,
             device: str, batch_size: int, input_size: tuple[int, int, int]) -> ABResult:
    """Warm both models up, time them in alternating bursts, and take the ratio of each pair's fastest
    runs. Other jobs on the machine can only add time to a run, so the fastest of a short burst is the
    model's own cost; the median over pairs then cancels slower drift (clock frequency, cache state), and
    the spread of the ratios shows what drift remains."""
    _warm_up([ra, rb], warmup, budget_s)
    ta, tb = (np.stack(side) for side in zip(*_interleaved(ra, rb, rounds, budget_s)))
    p10, med, p90 = np.percentile(tb.min(1) / ta.min(1), [10, 50, 90])
    return ABResult(float(med), float(p10), float(p90), len(ta),
                    summarize(ta.ravel(), backend, device, batch_size, input_size, ra.threads),
                    summarize(tb.ravel(), backend, device, batch_size, input_size, rb.threads))


def _macs_ab(a: LatencyResult, b: LatencyResult) -> ABResult:
    r = b.median_ms / a.median_ms
    return ABResult(r, r, r, 1, a, b)


def compare_latency(
    model_a: nn.Module, model_b: nn.Module, input_size: tuple[int, int, int], backend: str = "openvino", *,
    batch_size: int = 1, rounds: int | None = None, num_threads: int | None = None, device: str = "cpu",
    warmup: int | None = None, min_time_s: float = COMPARE_TIME_S,
) -> ABResult:
    """Time B against A in alternating order; ``ratio_median`` < 1 means B is faster.

    Each pair is RUNS_PER_PAIR runs of A and as many of B (order alternating between pairs); its ratio is
    min(B runs) / min(A runs). ``rounds`` fixes the number of pairs; by default pairs are taken for
    ``min_time_s`` seconds (at least 10). ``a`` and ``b`` summarise the individual runs."""
    input_size = _check_sizes(input_size, batch_size)
    backend, device = resolve_backend(backend, device)
    if backend == "macs":
        return _macs_ab(_macs_result(model_a, input_size, batch_size, device),
                        _macs_result(model_b, input_size, batch_size, device))
    x = example_input(input_size, batch_size)
    with eval_mode(model_a), eval_mode(model_b), timing_session(backend, device, num_threads) as prepare:
        return _time_ab(prepare(model_a, x), prepare(model_b, x), warmup, rounds, min_time_s, backend, device,
                        batch_size, input_size)


def measure_reduction(teacher: nn.Module, student: nn.Module, input_size: tuple[int, int, int],
                      backend: str = "openvino", **kw) -> tuple[float, ABResult]:
    """Measured fraction of the teacher's latency that the student saves (``1 - ratio_median``)."""
    ab = compare_latency(teacher, student, input_size, backend, **kw)
    return 1.0 - ab.ratio_median, ab


# ------------------------------------------------------------------------------------- block table


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


def table_cache_key(model: nn.Module, names: Sequence[str], input_size: Sequence[int], backend: str, device: str,
                    batch_size: int, num_threads: int | None, rounds: int | None, min_time_s: float) -> str:
    """Everything a table's numbers depend on; for timed backends also the machine and runtime versions."""
    key = {"structure": structure_fingerprint(model), "blocks": list(names), "input_size": list(input_size),
           "backend": backend, "device": device, "batch_size": batch_size}
    if backend != "macs":  # MACs are the same everywhere; timings are not
        key.update(threads=num_threads, rounds=rounds, min_time_s=min_time_s, machine=machine_name(backend, device),
                   versions=_runtime_versions(backend))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> LatencyTable | None:
    """A cached table, or None when absent, unreadable (a stale format) or for another key."""
    try:
        d = json.loads(path.read_text())
        if d.get("format") == CACHE_FORMAT and d.get("key") == key:
            return LatencyTable.from_dict(d["table"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    return None


def _progress(names: list[str], backend: str, enabled: bool) -> Iterator[str]:
    from tqdm import tqdm

    return tqdm(names, desc=f"block latency ({backend})", unit="block", disable=not enabled, leave=False)


def block_latency_table(
    model: nn.Module, blocks: Sequence[Block | str], input_size: tuple[int, int, int], backend: str = "openvino", *,
    batch_size: int = 1, num_threads: int | None = None, device: str = "cpu", cache_dir: Path | str | None = None,
    progress: bool = True, rounds: int | None = None, min_time_s: float = COMPARE_TIME_S,
) -> LatencyTable:
    """Fraction of ``model``'s latency saved by dropping each block alone, each measured A/B against the
    base model. With ``cache_dir`` the table is stored (JSON) and a repeated call returns it unchanged."""
    input_size = _check_sizes(input_size, batch_size)
    backend, device = resolve_backend(backend, device)
    names = [b.name if isinstance(b, Block) else str(b) for b in blocks]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"give a non-empty list of distinct block names, got {names}")
    key = table_cache_key(model, names, input_size, backend, device, batch_size, num_threads, rounds, min_time_s)
    path = None if cache_dir is None else Path(cache_dir) / f"latency-{backend}-{key[:20]}.json"
    if path is not None and (cached := _read_cache(path, key)) is not None:
        return cached

    results: dict[str, ABResult] = {}
    if backend == "macs":
        base = _macs_result(model, input_size, batch_size, device)
        for name in _progress(names, backend, progress):
            results[name] = _macs_ab(base, _macs_result(drop_blocks(model, [name]), input_size, batch_size, device))
    else:
        x = example_input(input_size, batch_size)
        with eval_mode(model), timing_session(backend, device, num_threads) as prepare:
            ra = prepare(model, x)  # the base is prepared (converted, compiled) once for all blocks
            for name in _progress(names, backend, progress):
                results[name] = _time_ab(ra, prepare(drop_blocks(model, [name]), x), None, rounds, min_time_s,
                                         backend, device, batch_size, input_size)
    table = LatencyTable(
        backend, device, batch_size, input_size,
        base_ms=float(np.median([r.a.median_ms for r in results.values()])),
        saved={n: 1.0 - r.ratio_median for n, r in results.items()},
        spread={n: (1.0 - r.ratio_p90, 1.0 - r.ratio_p10) for n, r in results.items()},
    )
    if path is not None:
        atomic_write_json(path, {"format": CACHE_FORMAT, "key": key, "table": table.to_dict()})
    return table
