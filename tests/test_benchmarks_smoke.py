"""The latency benchmark's quick mode runs end to end and writes coherent results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_quick_latency_benchmark(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_latency", ROOT / "benchmarks" / "latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    assert bench.main(["--quick", "--models", "resnet34", "mobilenet_v2", "--out", str(tmp_path), "--no-progress"]) == 0
    assert torch.get_num_threads() == threads  # the script restores what it changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency-quick.json", "latency-quick.md", "latency-quick.png"]
    rows = json.loads((tmp_path / "latency-quick.json").read_text())["rows"]
    paper, mnv2 = rows
    assert paper["model"] == "resnet34" and paper["blocks"] == ["layer1.1", "layer1.2", "layer2.2"]
    assert mnv2["model"] == "mobilenet_v2" and len(mnv2["blocks"]) == 3 and mnv2["selection"] == "largest MACs"
    for r in rows:
        assert r["pairs"] == 12 and r["ratio_p10"] <= r["ratio"] <= r["ratio_p90"]
        assert r["latency_reduction"] == 1 - r["ratio"] and 0 < r["macs_reduction"] < 0.5
        assert r["student_ms"] < r["base_ms"]  # three blocks fewer is faster, however noisy the machine
    assert (tmp_path / "latency-quick.png").read_bytes()[:4] == b"\x89PNG"
    assert "layer1.1, layer1.2, layer2.2" in (tmp_path / "latency-quick.md").read_text()
