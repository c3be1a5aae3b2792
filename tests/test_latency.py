"""Latency measurement on real models and the real OpenVINO runtime; only the GPU is ever faked."""

from __future__ import annotations

import json
import time

import pytest
import torch

from practise_plugin.core.errors import ConfigError
from practise_plugin.graph.discover import discover_blocks
from practise_plugin.graph.macs import count_macs
from practise_plugin.models.loading import load_model
from practise_plugin.runtime.latency import (
    TOLERANCE,
    CudaRunner,
    LatencyTable,
    block_latency_table,
    compare_latency,
    measure_latency,
    measure_reduction,
    resolve_backend,
    table_cache_key,
    timing_session,
)
from practise_plugin.surgery.drop import drop_blocks

FMNIST = (1, 28, 28)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def teacher():
    return load_model("builtin").model


@pytest.fixture(scope="module")
def blocks(teacher):
    return discover_blocks(teacher, torch.zeros(1, *FMNIST))


def test_unknown_backend_lists_the_valid_ones(teacher):
    with pytest.raises(ConfigError) as e:
        measure_latency(teacher, FMNIST, "tensorrt")
    for name in ("openvino", "torch", "cuda", "macs"):
        assert name in str(e.value)


def test_macs_backend_is_deterministic_and_drops_with_blocks(teacher, blocks):
    a, b = measure_latency(teacher, FMNIST, "macs"), measure_latency(teacher, FMNIST, "macs")
    assert a == b and a.unit == "MMAC" and a.median_ms == count_macs(teacher, torch.zeros(1, *FMNIST)) / 1e6
    student = drop_blocks(teacher, ["layer1.1", "layer3.2"])
    ab = compare_latency(teacher, student, FMNIST, "macs")
    assert ab.b.median_ms < ab.a.median_ms
    by_name = {blk.name: blk for blk in blocks}
    dropped_macs = by_name["layer1.1"].macs + by_name["layer3.2"].macs
    assert ab.ratio_median == pytest.approx(1 - dropped_macs / (a.median_ms * 1e6))

    table = block_latency_table(teacher, blocks, FMNIST, "macs", progress=False)
    assert table == block_latency_table(teacher, blocks, FMNIST, "macs", progress=False)
    for blk in blocks:  # the table's saving is exactly the MACs discovery counted for that block
        assert table.saved[blk.name] == pytest.approx(blk.macs / (table.base_ms * 1e6))
        assert table.spread[blk.name] == (table.saved[blk.name], table.saved[blk.name])
    assert table.reduction(["layer1.1", "layer3.2"]) == pytest.approx(1 - ab.ratio_median)
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    with pytest.raises(ConfigError, match="layer9.9"):
        table.reduction(["layer9.9"])


def test_a_model_against_itself_is_within_3_percent(teacher):
    ab = compare_latency(teacher, teacher, FMNIST, "openvino", num_threads=1, time_s=3.0)
    assert abs(ab.ratio_median - 1.0) < 0.03, ab.to_dict()
    assert ab.ratio_p10 <= ab.ratio_median <= ab.ratio_p90 and ab.ratio_low <= ab.ratio_median <= ab.ratio_high
    assert ab.a.runs == ab.b.runs == ab.pairs >= 10  # one fastest-of-RUNS_PER_PAIR time per side and pair
    assert ab.ratio_high - ab.ratio_low <= 2 * TOLERANCE or not ab.converged
    assert ab.a.backend == "openvino" and ab.a.threads == 1


def test_dropping_a_quarter_of_the_blocks_is_measurably_faster(teacher):
    student = drop_blocks(teacher, ["layer2.2", "layer3.2", "layer3.4", "layer4.1"])  # ~26% of the MACs
    saved, ab = measure_reduction(teacher, student, FMNIST, "openvino", num_threads=1, time_s=2.0)
    assert saved == pytest.approx(1 - ab.ratio_median)
    assert 0.1 < saved < 0.5, ab.to_dict()
    assert ab.ratio_p10 <= ab.ratio_median <= ab.ratio_p90 and ab.b.median_ms < ab.a.median_ms


def test_torch_backend_restores_threads_and_train_mode():
    model = load_model("builtin").model.train()
    torch.set_num_threads(2)
    try:
        r = measure_latency(model, FMNIST, "torch", num_threads=1, runs=12, warmup=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert r.threads == 1 and r.runs == 12 and 0 < r.p10_ms <= r.median_ms <= r.p90_ms
    assert model.training and all(m.training for m in model.modules())


def test_block_table_is_cached_and_reused_without_retiming(teacher, tmp_path):
    names = ["layer1.1", "layer4.1"]
    first = block_latency_table(teacher, names, FMNIST, "torch", num_threads=1, rounds=10, cache_dir=tmp_path, progress=False)
    (cached,) = tmp_path.glob("table-torch-*.json")
    stamp = cached.stat().st_mtime_ns
    start = time.perf_counter()
    second = block_latency_table(teacher, names, FMNIST, "torch", num_threads=1, rounds=10, cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - start < 0.5
    # Two timings of a real model never agree to the last bit: equality shows nothing was re-timed.
    assert second == first and cached.stat().st_mtime_ns == stamp
    assert set(first.saved) == set(names) and first.base_ms > 0
    for n in names:
        lo, hi = first.spread[n]
        assert lo <= first.saved[n] <= hi


def test_cache_key_follows_structure_and_settings_not_weights(teacher):
    def key(model=teacher, **kw):
        args = dict(names=["layer1.1"], input_size=FMNIST, backend="openvino", device="cpu", batch_size=1,
                    num_threads=1, rounds=None, time_s=2.0)
        return table_cache_key(model, **{**args, **kw})

    retrained = load_model("builtin").model
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(1.0)
    assert key() == key(retrained)
    assert key() != key(drop_blocks(teacher, ["layer2.1"]))
    assert len({key(), key(batch_size=8), key(num_threads=2), key(input_size=(1, 32, 32)), key(names=["layer1.2"])}) == 5
    assert key(backend="macs", device="cpu") == key(backend="macs", device="cpu", num_threads=4)  # MACs ignore threads


# ------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_events_time_a_real_gpu(teacher):
    before = torch.backends.cudnn.benchmark
    r = measure_latency(teacher, FMNIST, device="cuda", batch_size=64, time_s=0.5)
    assert r.backend == "cuda" and r.device == "cuda" and r.batch_size == 64 and r.runs >= 10
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms
    assert torch.backends.cudnn.benchmark == before
    assert next(teacher.parameters()).device.type == "cpu"  # the caller's model never moves
    ab = compare_latency(teacher, teacher, FMNIST, device="cuda", batch_size=64, time_s=1.0)
    assert abs(ab.ratio_median - 1.0) < 0.05
    saved, _ = measure_reduction(teacher, drop_blocks(teacher, ["layer3.1", "layer3.2", "layer3.3", "layer3.4"]),
                                 FMNIST, device="cuda", batch_size=64, time_s=1.0)
    assert saved > 0.05


def test_cuda_without_a_gpu_names_the_fix(teacher, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    for kw in ({"backend": "cuda"}, {"device": "cuda"}):
        with pytest.raises(ConfigError, match="openvino") as e:
            measure_latency(teacher, FMNIST, **kw)
        assert "CUDA" in str(e.value)


def test_cuda_backend_selection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend a GPU: only the choice is tested
    assert resolve_backend("openvino", "cuda") == ("cuda", "cuda")
    assert resolve_backend("torch", "cuda:1") == ("cuda", "cuda:1")
    assert resolve_backend("cuda", "cpu") == ("cuda", "cuda")
    assert resolve_backend("macs", "cuda") == ("macs", "cuda")
    with pytest.raises(ConfigError, match="device='cpu'"):
        resolve_backend("openvino", "mps")
    before = torch.backends.cudnn.benchmark
    with timing_session("cuda", "cuda", None):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark == before


class _HostEvent:
    """Stands in for torch.cuda.Event on a machine without a GPU: records host time, reports ms."""

    log: list[str] = []

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t = None

    def record(self) -> None:
        self.t = time.perf_counter()
        self.log.append("record")

    def synchronize(self) -> None:
        self.log.append("synchronize")

    def elapsed_time(self, end: _HostEvent) -> float:
        return (end.t - self.t) * 1000.0


def test_cuda_runner_brackets_the_forward_with_events_and_reports_seconds():
    class Sleeper(torch.nn.Module):
        def forward(self, x):
            _HostEvent.log.append("forward")
            time.sleep(0.02)
            return x

    _HostEvent.log = []
    seconds = CudaRunner(Sleeper(), torch.zeros(1), event=_HostEvent).time_one()
    assert _HostEvent.log == ["record", "forward", "record", "synchronize"]
    assert 0.02 <= seconds < 1.0  # seconds, not the events' milliseconds


def test_median_interval_covers_the_median_at_its_stated_rate():
    import numpy as np

    from practise_plugin.runtime.latency import median_interval

    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        x = rng.lognormal(0.0, 0.3, size=25)  # true median 1.0
        lo, hi = median_interval(x, 0.95)
        hits += lo <= 1.0 <= hi
    assert 0.93 <= hits / 400 <= 1.0  # distribution-free: at least the nominal rate, up to the discreteness
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few values: the whole range


def test_noisy_savings_fall_back_to_the_macs_prior_and_precise_ones_stand():
    from practise_plugin.runtime.latency import resolve_savings

    macs = {"a": 1.0, "b": 1.0, "c": 2.0}
    precise = {"a": (0.049, 0.051), "b": (0.099, 0.101), "c": (0.149, 0.151)}
    saved, prior, res, resolved, _ = resolve_savings({"a": 0.05, "b": 0.10, "c": 0.15}, precise, macs)
    assert resolved and saved["a"] < saved["b"] < saved["c"] and saved["a"] == pytest.approx(0.05, abs=2 * res)
    noisy = {n: (v - 0.2, v + 0.2) for n, v in {"a": 0.258, "b": -0.031, "c": 0.2}.items()}
    saved, prior, res, resolved, note = resolve_savings({"a": 0.258, "b": -0.031, "c": 0.2}, noisy, macs)
    assert not resolved and "too noisy" in note
    assert saved["a"] == saved["b"] and saved["c"] > saved["a"]  # equal MACs now tie; twice the MACs saves more
    assert prior["c"] == pytest.approx(2 * prior["a"])


def test_a_target_stops_the_measurement_once_its_interval_is_on_one_side(teacher):
    student = drop_blocks(teacher, ["layer2.2", "layer3.2", "layer3.4", "layer4.1"])  # ~26% of the MACs
    ab = compare_latency(teacher, student, FMNIST, "openvino", num_threads=1, time_s=3.0, target=0.02)
    assert ab.converged and 1 - ab.ratio_high > 0.02  # decided: more than 2% saved, with confidence
    assert ab.pairs < 60  # long before the time cap
