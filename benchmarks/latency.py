"""OpenVINO CPU latency before/after dropping blocks, as interleaved A/B ratios, next to the MACs saved.

    python benchmarks/latency.py --quick        # CI-sized: 64x64 inputs, few pairs, < 1 minute
    python benchmarks/latency.py                # full: 224x224, per-block tables (quiet machine; tens of minutes)

Why: PRACTISE claims *latency* reductions, and MACs are a poor proxy for them (every droppable
ResNet-34 block costs the same MACs, yet they differ in latency). For each model we drop 3 blocks and
time the result against the base in alternating order on the same run, so the ratio is free of machine
drift. Full mode first measures every block alone (the table PRACTISE ranks by) and drops the 3 with
the largest measured saving, comparing the combined measurement with the sum of single savings;
quick mode drops the 3 blocks with the largest MACs. ResNet-34 also gets the paper's set (layer1.1,
layer1.2, layer2.2). Models are randomly initialised: latency does not depend on the weights.
Writes ``latency-<mode>.json``, ``.md`` and ``.png`` under ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from practise_plugin.core.files import atomic_write_json, atomic_write_text, save_png
from practise_plugin.core.torch_utils import eval_mode, example_input, torch_threads
from practise_plugin.graph.discover import Block, discover_blocks
from practise_plugin.graph.macs import count_macs
from practise_plugin.models.loading import load_model
from practise_plugin.runtime.latency import block_latency_table, compare_latency, machine_name
from practise_plugin.surgery.drop import drop_blocks

MODELS = {
    "resnet34": "torchvision:resnet34",
    "resnet50": "torchvision:resnet50",
    "mobilenet_v2": "torchvision:mobilenet_v2",
    "efficientnet_b0": "timm:efficientnet_b0",
}
PAPER_RESNET34 = ["layer1.1", "layer1.2", "layer2.2"]  # the CVPR'23 paper's 3-block ResNet-34 student
MODES = {  # input side, A/B pairs per comparison (None: time budget), seconds per comparison
    "quick": {"size": 64, "rounds": 12, "time_s": 0.0},
    "full": {"size": 224, "rounds": None, "time_s": 6.0},
}
DROP = 3


def _macs(model: torch.nn.Module, size: int) -> int:
    with eval_mode(model):
        return count_macs(model, example_input((3, size, size)))


def _row(name: str, model: torch.nn.Module, base_macs: int, blocks: list[str], selection: str, size: int,
         threads: int, mode: dict, predicted: float | None) -> dict:
    student = drop_blocks(model, blocks)
    ab = compare_latency(model, student, (3, size, size), "openvino", num_threads=threads, rounds=mode["rounds"],
                         time_s=mode["time_s"])
    return {
        "model": name, "input": f"1x3x{size}x{size}", "blocks": blocks, "selection": selection,
        "base_ms": ab.a.median_ms, "base_p10_ms": ab.a.p10_ms, "base_p90_ms": ab.a.p90_ms,
        "student_ms": ab.b.median_ms, "student_p10_ms": ab.b.p10_ms, "student_p90_ms": ab.b.p90_ms,
        "ratio": ab.ratio_median, "ratio_p10": ab.ratio_p10, "ratio_p90": ab.ratio_p90, "pairs": ab.pairs,
        "latency_reduction": 1.0 - ab.ratio_median, "predicted_reduction": predicted,
        "macs_reduction": 1.0 - _macs(student, size) / base_macs, "threads": ab.a.threads,
    }


def drop_sets(name: str, mode_name: str, model: torch.nn.Module, blocks: list[Block], size: int, threads: int,
              progress: bool) -> list[tuple[list[str], str, float | None]]:
    """(blocks, how they were chosen, predicted saving) for each student of ``model`` to time."""
    sets: list[tuple[list[str], str, float | None]] = []
    table = None
    if mode_name == "full":
        table = block_latency_table(model, blocks, (3, size, size), "openvino", num_threads=threads,
                                    time_s=MODES["full"]["time_s"] / 2, progress=progress)
        top = sorted(table.saved, key=lambda n: table.saved[n] or 0.0, reverse=True)[:DROP]
        sets.append((top, "largest measured saving", table.reduction(top)))
    elif name != "resnet34":  # every droppable ResNet-34 block has the same MACs: no MACs ranking there
        top = [b.name for b in sorted(blocks, key=lambda b: -b.macs)[:DROP]]  # sort is stable: ties keep order
        sets.append((top, "largest MACs", None))
    if name == "resnet34":
        sets.insert(0, (PAPER_RESNET34, "paper (layer1.1, layer1.2, layer2.2)",
                        None if table is None else table.reduction(PAPER_RESNET34)))
    return sets


def bench_model(name: str, mode_name: str, threads: int, progress: bool) -> list[dict]:
    size = MODES[mode_name]["size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "randomly initialised" is intended here
        model = load_model(MODELS[name], input_size=(3, size, size)).model
    blocks = discover_blocks(model, example_input((3, size, size)))
    base_macs = _macs(model, size)
    return [_row(name, model, base_macs, chosen, selection, size, threads, MODES[mode_name], predicted)
            for chosen, selection, predicted in drop_sets(name, mode_name, model, blocks, size, threads, progress)]


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| model | input | dropped blocks | selection | base ms (p10-p90) | dropped ms (p10-p90) | ratio (p10-p90) "
             "| latency saved | predicted (sum of singles) | MACs saved |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pred = "" if r["predicted_reduction"] is None else f"{100 * r['predicted_reduction']:.1f}%"
        lines.append(
            f"| {r['model']} | {r['input']} | {', '.join(r['blocks'])} | {r['selection']} "
            f"| {r['base_ms']:.2f} ({r['base_p10_ms']:.2f}-{r['base_p90_ms']:.2f}) "
            f"| {r['student_ms']:.2f} ({r['student_p10_ms']:.2f}-{r['student_p90_ms']:.2f}) "
            f"| {r['ratio']:.3f} ({r['ratio_p10']:.3f}-{r['ratio_p90']:.3f}) | {100 * r['latency_reduction']:.1f}% "
            f"| {pred} | {100 * r['macs_reduction']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], dest: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['model']}\n{r['selection'].split(' (')[0]}" for r in rows]
    lat = np.array([100 * r["latency_reduction"] for r in rows])
    err = np.array([[100 * (r["ratio_p90"] - r["ratio"]) for r in rows], [100 * (r["ratio"] - r["ratio_p10"]) for r in rows]])
    macs = np.array([100 * r["macs_reduction"] for r in rows])
    pos = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 2, 4))
    ax.bar(pos - 0.2, lat, 0.4, yerr=err, capsize=3, label="measured latency saved (p10-p90)")
    ax.bar(pos + 0.2, macs, 0.4, label="MACs saved")
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylabel("% of base model")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    save_png(fig, dest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run: 64x64 inputs and 12 A/B pairs per comparison")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to run")
    p.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads (default: 1, the paper's CPU setting)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    import openvino as ov

    start = time.perf_counter()
    with torch_threads(1):  # torch only traces and counts MACs here; one thread avoids contention with OpenVINO
        rows = [r for name in args.models for r in bench_model(name, mode, args.threads, not args.no_progress)]
    meta = {"mode": mode, "threads": args.threads, "machine": machine_name("openvino", "cpu"),
            "python": platform.python_version(), "torch": torch.__version__, "openvino": ov.get_version(),
            "seconds": round(time.perf_counter() - start, 1)}
    header = (f"OpenVINO CPU latency, {mode} mode, batch 1, {args.threads} thread(s), {ov.get_version()}; "
              f"A/B interleaved in one run (`python benchmarks/latency.py{' --quick' if args.quick else ''}`)")
    out = args.out
    atomic_write_json(out / f"latency-{mode}.json", {"meta": meta, "rows": rows})
    atomic_write_text(out / f"latency-{mode}.md", markdown(rows, header))
    plot(rows, out / f"latency-{mode}.png", header.split(";")[0])
    print(markdown(rows, header))
    print(f"wrote {out}/latency-{mode}.{{json,md,png}} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
