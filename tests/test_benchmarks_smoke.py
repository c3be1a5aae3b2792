"""Every benchmark's quick mode runs end to end and writes coherent results (the smoke tests of issue 9)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
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
        # three blocks fewer is faster: asserted on the interleaved pair ratios (drift cancels pair by pair), and
        # on their best decile only, so a machine shared with other jobs cannot turn it into a timing flake
        assert r["ratio_p10"] < 1.0
    assert (tmp_path / "latency-quick.png").read_bytes()[:4] == b"\x89PNG"
    assert "layer1.1, layer1.2, layer2.2" in (tmp_path / "latency-quick.md").read_text()


def _load(name: str):
    """Import benchmarks/<name>.py (registered in sys.modules: its dataclasses need it)."""
    import sys

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_fewshot_benchmark(tmp_path):
    assert _load("fewshot").main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "fewshot-quick.json").read_text())
    methods = {(c["source"], c["method"]) for c in result["cells"]}
    assert methods == {("real", "practise"), ("real", "drop+bp"), ("real", "channel+mimic"),
                       ("synthetic", "practise"), ("synthetic", "channel+mimic"), ("ood", "practise"), ("ood", "channel+mimic")}
    for c in result["cells"]:
        assert c["latency_reduction"] >= 0.22 and 0.0 <= c["top1"] <= 1.0  # macs backend: exact
    assert "| practise |" in (tmp_path / "fewshot-quick.md").read_text()
    # growing the grid (another seed) keeps what finished cells were planned and trained with
    plan = json.loads((tmp_path / "plan.json").read_text())
    done = {p.name: p.read_text() for p in (tmp_path / "cells").iterdir()}
    grown = ["--quick", "--out", str(tmp_path), "--seeds", "0", "1", "--extra-sizes"]
    assert _load("fewshot").main(["prepare", *grown]) == 0 and _load("fewshot").main(["run", *grown]) == 0
    new_plan = json.loads((tmp_path / "plan.json").read_text())
    assert all(new_plan["selections"][k] == v for k, v in plan["selections"].items())
    assert "real-n20-s1-b22" in new_plan["selections"] and new_plan["channel"] == plan["channel"]
    assert all((tmp_path / "cells" / name).read_text() == text for name, text in done.items())
    assert {p.name for p in (tmp_path / "cells").iterdir()} > set(done)


def test_quick_recoverability_benchmark(tmp_path):
    assert _load("recoverability").main(["--quick", "--models", "builtin", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "recoverability-quick.json").read_text())["results"][0]
    assert len(r["blocks"]) == 12 and set(r["methods"]) == {"none", "closed_form", "sgd"}
    assert -1 <= r["spearman_closed_form_vs_sgd"] <= 1 and r["recovery_iters_per_s"] > 0


def test_quick_imagenet_benchmark(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    assert _load("imagenet").main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "imagenet-quick.json").read_text())["rows"]
    assert rows[0]["model"] == "teacher" and rows[0]["top5"] >= 0.85  # real ImageNet weights on real photos
    assert rows[-1]["latency_reduction"] >= 0.10 and rows[-1]["blocks"]


def test_quick_swd_benchmark(tmp_path):
    threads = torch.get_num_threads()
    try:
        assert _load("swd").main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "swd_quick.json").read_text())
    runs = {(r["mode"], r["method"]) for r in report["runs"]}
    assert {("unstructured", "swd"), ("structured", "swd"), ("structured", "magnitude_finetune")} <= runs
    for r in report["runs"]:
        assert 0.0 <= r["top1"] <= 1.0 and 0.0 < r["kept_fraction"] < 0.1  # extreme targets: 99% / 95% removed
    assert set(report["latency"]["ms"]) == {"teacher", "swd", "magnitude_finetune"}
    assert "prune + fine-tune" in (tmp_path / "swd_quick.md").read_text()


def test_quick_swd_from_scratch_benchmark(tmp_path):
    threads = torch.get_num_threads()
    bench = _load("swd_scratch")
    try:
        assert bench.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
        folder = tmp_path / "swd_scratch_quick"
        cells = json.loads((folder / "swd_scratch_quick.json").read_text())["cells"]
        assert {(c["model"], c["method"]) for c in cells} == {(m, k) for m in ("lenet5", "convbn") for k in ("swd", "baseline")}
        for c in cells:
            assert 0.0 <= c["top1"] <= 1.0 and c["epochs"] == 2
            assert c["kept_fraction"] < (0.002 if c["mode"] == "unstructured" else 0.05)  # the extreme targets
        swd = [c for c in cells if c["method"] == "swd"]
        assert all(len(c["outside_norm"]) == 2 and len(c["a"]) == 2 and c["a"][1] > c["a"][0] for c in swd)
        assert "prune + fine-tune" in (folder / "swd_scratch_quick.md").read_text()
        assert (folder / "swd_scratch_quick.png").read_bytes()[:4] == b"\x89PNG"
        done = sorted(p.name for p in (folder / "cells").iterdir())
        assert bench.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0  # finished cells are kept
        assert sorted(p.name for p in (folder / "cells").iterdir()) == done
    finally:
        torch.set_num_threads(threads)


def test_quick_udfc_benchmark(tmp_path, capsys):
    assert _load("udfc").main(["--quick", "--threads", str(torch.get_num_threads()), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "udfc.json").read_text())
    methods = {r["method"] for r in result["rows"]}
    assert {"prune", "nm", "udfc"} <= methods
    assert all(0.0 <= r["top1"] <= 1.0 for r in result["rows"]) and result["timing"]
    layers = json.loads((tmp_path / "udfc-layers.json").read_text())["layers"]
    assert len(layers) == 16  # one inner conv per block of the built-in ResNet-34 layout
    # in the linear regime its closed form is about, UDFC beats no compensation on every layer, and NM overall
    assert all(r["udfc_linear"] < r["prune_linear"] for r in layers)
    assert sum(r["udfc_linear"] for r in layers) < sum(r["nm_linear"] for r in layers)


@pytest.mark.slow
def test_quick_zoo_sweep(tmp_path):
    """Three models of the sweep, each in a process of its own: candidates, drop, verified IR, one block's latency."""
    bench = _load("zoo")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "zoo-quick.json").read_text())["rows"]
    assert [r["model"] for r in rows] == bench.QUICK
    for r in rows:
        assert r["candidates"] > 0 and r["drop_ok"] and r["export_ok"], r
        lo, hi = r["latency_interval"]
        assert lo <= r["latency_saved"] <= hi
    assert "Coverage: 3 of 3" in (tmp_path / "zoo-quick.md").read_text()


def test_quick_scale_benchmark(tmp_path):
    scale = _load("scale")
    assert scale.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "scale-quick.json").read_text())
    (row,) = res["stages"]
    assert row["model"] == "builtin" and row["images"] == 16 and row["candidates"] == 12
    for stage in ("load", "discover", "score", "latency_table", "select", "recover", "measure", "evaluate", "export"):
        assert row["stages"][stage]["wall_s"] > 0, stage
    assert sum(s["wall_s"] for s in row["stages"].values()) <= row["process_s"]
    (limit,) = res["limit"]
    assert limit["ours"][0] > 0 and limit["bare"][0] > 0
    md = (tmp_path / "scale-quick.md").read_text()
    assert "| builtin | 28 | 16 | 1 | 12 |" in md and "bare loop" in md
    assert (tmp_path / "scale-quick.png").read_bytes()[:4] == b"\x89PNG"


def test_scale_growth_is_the_exponent_between_image_counts():
    scale = _load("scale")
    rows = [{"model": "m", "images": n, "stages": {"score": {"wall_s": 0.5 * n}, "load": {"wall_s": 2.0}}}
            for n in (64, 256, 1024)]
    assert scale.growth(rows) == {"m": {"score": 1.0, "load": 0.0}}
    fit = scale._old_fit([{"model": "m", "images": n, "old": {"wall_s": 3 + 2 * n}} for n in (16, 64)], "m")
    assert fit == (3.0, 2.0)


def test_gpu_benchmark_says_it_needs_a_gpu_here(capsys):
    gpu = _load("gpu")
    if torch.cuda.is_available():  # on a GPU machine: the real thing, one small model
        assert gpu.main(["--models", "builtin", "--images", "64", "--iters", "5", "--repeats", "1"]) == 0
    else:
        assert gpu.main([]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
