"""Few-shot, data-free and out-of-domain recovery: the PRACTISE paper's table shape, on real data.

    python benchmarks/fewshot.py --quick                  # CI smoke test: all phases, tiny settings, < 1 min
    python benchmarks/fewshot.py prepare                  # CPU (quiet machine): tiny sets, scores, latency-matched plans
    python benchmarks/fewshot.py run --device cuda --workers 12   # trains every cell (resumable)
    python benchmarks/fewshot.py report                   # mean +- std tables, JSON and plot
    # a 2-core CPU subset (what benchmarks/results/fewshot.* holds; pass the same options to every phase):
    python benchmarks/fewshot.py all --sizes 500 100 50 --seeds 0 1 2 --budgets 0.16 0.22 --extra-sizes 256 \
        --extra-seeds 0 --iters 400 --workers 2 --threads 1

Teacher: the built-in ResNet-34-shaped Fashion-MNIST network (trained by practise_plugin/builtin/train_teacher.py).
Budgets are *measured* OpenVINO CPU latency reductions (batch 1, all cores) on the machine that runs
``prepare``. For each tiny set (n images drawn from the 60k training images, seed s) PRACTISE scores the
12 candidates on that set and picks blocks until the measured reduction meets the budget; the block-drop
baselines drop the same blocks; the channel-pruning baselines prune every layer uniformly (Torch-Pruning,
L1 filter norm) at the smallest ratio whose measured reduction meets the budget. Every student is
recovered on the same tiny set for the same number of iterations and evaluated on the full test set.

Methods: practise (blocks + folded adaptors + feature mimicking), drop+bp (cross-entropy on labels),
drop+kd (logit distillation), channel+bp, channel+kd, channel+mimic (MiR-style feature mimicking).
Extra sources at the 22% budget: ``synthetic`` (data-free, BN-inversion images of the teacher) and ``ood``
(out-of-domain: scikit-learn's 8x8 handwritten digits, upsampled); labels are not used for them, so the
label-free methods only.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from practise_plugin.core.files import atomic_write_json, atomic_write_text, save_png
from practise_plugin.data import ImageSet, sample_tiny_set
from practise_plugin.data.images import from_uint8
from practise_plugin.data.synthetic import SynthesisConfig, synthesize
from practise_plugin.graph.discover import discover_blocks
from practise_plugin.graph.macs import count_macs
from practise_plugin.models import builtin
from practise_plugin.models.builtin import FMNIST_CONFIG
from practise_plugin.models.loading import load_model
from practise_plugin.practise.recoverability import RecoverabilityScorer
from practise_plugin.practise.recovery import RecoveryConfig, recover
from practise_plugin.practise.selection import select_blocks
from practise_plugin.runtime.evaluate import top1
from practise_plugin.runtime.latency import block_latency_table, measure_reduction
from practise_plugin.surgery.channel_removal import prune_uniform
from practise_plugin.surgery.drop import drop_blocks

RESULTS = Path(__file__).resolve().parent / "results"
REAL_METHODS = ("practise", "drop+bp", "drop+kd", "channel+bp", "channel+kd", "channel+mimic")
LABEL_FREE_METHODS = ("practise", "drop+kd", "channel+kd", "channel+mimic")
LR = {"mimic": 0.02, "bp": 0.01, "kd": 0.01}  # mimic: the paper's recipe; bp/kd: a common fine-tuning rate
MODES = {
    "full": dict(sizes=[50, 100, 500], seeds=[0, 1, 2], budgets=[0.16, 0.22], iters=1000, extra_sizes=[256],
                 extra_budget=0.22, backend="openvino", synth_iters=200, latency_s=3.0, test_images=None,
                 methods=None),
    "quick": dict(sizes=[20], seeds=[0], budgets=[0.22], iters=4, extra_sizes=[16], extra_budget=0.22,
                  backend="macs", synth_iters=3, latency_s=0.0, test_images=300,
                  methods=["practise", "drop+bp", "channel+mimic"]),  # one of each code path
}


def selection_key(source: str, n: int, seed: int, budget: float) -> str:
    """plan.json's key for the blocks chosen on one tiny set at one budget, e.g. ``real-n500-s0-b22``."""
    return f"{source}-n{n}-s{seed}-b{int(round(100 * budget))}"


@dataclass(frozen=True)
class Cell:
    source: str  # real | synthetic | ood
    n: int
    seed: int
    budget: float
    method: str

    @property
    def selection(self) -> str:
        return selection_key(self.source, self.n, self.seed, self.budget)

    @property
    def id(self) -> str:
        return f"{self.selection}-{self.method.replace('+', '_')}"


def cells(mode: dict) -> list[Cell]:
    keep = set(mode["methods"] or REAL_METHODS)
    out = [Cell("real", n, s, b, m) for b in mode["budgets"] for n in mode["sizes"] for s in mode["seeds"]
           for m in REAL_METHODS if m in keep]
    out += [Cell(src, n, s, mode["extra_budget"], m) for src in ("synthetic", "ood") for n in mode["extra_sizes"]
            for s in mode.get("extra_seeds") or mode["seeds"] for m in LABEL_FREE_METHODS if m in keep]
    return out


# ----------------------------------------------------------------------------------------------- data


def tiny_set(source: str, n: int, seed: int, cache: Path, synth_iters: int) -> ImageSet:
    """The n-image set of ``source`` for ``seed`` (deterministic; synthetic images cached on disk)."""
    if source == "real":
        images, labels = builtin.train_pool(full=builtin.DEBIAN_DATASET_DIR.exists())
        idx = sample_tiny_set(labels, n, seed)
        return from_uint8(images[idx], labels[idx], FMNIST_CONFIG, f"Fashion-MNIST train, n={n}, seed={seed}")
    if source == "ood":
        from sklearn.datasets import load_digits

        digits = load_digits()
        idx = sample_tiny_set(None, n, seed, num_items=len(digits.images))
        images = np.clip(digits.images[idx] * 16, 0, 255).astype(np.uint8)
        return from_uint8(images, None, FMNIST_CONFIG, f"sklearn digits (out-of-domain), n={n}, seed={seed}")
    teacher = load_model("builtin").model
    return synthesize(teacher, FMNIST_CONFIG, SynthesisConfig(num_images=n, iters=synth_iters, seed=seed),
                      cache_dir=cache, progress=False)


def _test_set(mode: dict) -> ImageSet:
    """The full test set (10k with the Debian dataset), or its first ``test_images`` in quick mode."""
    test = builtin.test_set()
    return test if mode["test_images"] is None else test.subset(range(mode["test_images"]))


# -------------------------------------------------------------------------------------------- prepare


def _channel_ratio(teacher: torch.nn.Module, budget: float, backend: str, latency_s: float) -> dict:
    """Smallest uniform L1 pruning ratio whose measured latency reduction meets ``budget`` (bisection)."""
    x = torch.zeros(1, *FMNIST_CONFIG.input_size)
    lo, hi, best = 0.0, 0.9, None
    for _ in range(7):
        mid = (lo + hi) / 2
        student = copy.deepcopy(teacher)
        prune_uniform(student, x, mid)
        red = measure_reduction(teacher, student, FMNIST_CONFIG.input_size, backend, time_s=latency_s)[0]
        if red >= budget:
            hi, best = mid, {"ratio": mid, "measured": red, "macs": count_macs(student, x)}
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"no pruning ratio up to 0.9 reaches a {budget:.0%} latency reduction")
    return best


def prepare(mode: dict, out: Path, progress: bool, fresh: bool = False) -> dict:
    """Tiny sets, block selections and channel ratios for every planned cell, written to plan.json.

    Incremental unless ``fresh``: selections and channel ratios already in plan.json are kept, so that
    growing the grid (another size, seed or budget) never changes what finished cells were trained on.
    """
    old: dict = {}
    if (out / "plan.json").exists() and not fresh:
        try:
            old = json.loads((out / "plan.json").read_text())
        except ValueError as e:
            raise SystemExit(f"{out / 'plan.json'} is not valid JSON ({e}); pass --fresh to plan from scratch") from e
    teacher = load_model("builtin").model
    x = torch.zeros(1, *FMNIST_CONFIG.input_size)
    cache = out / "cache"
    blocks = discover_blocks(teacher, x)
    table = block_latency_table(teacher, [b.name for b in blocks], FMNIST_CONFIG.input_size, mode["backend"],
                                cache_dir=cache, progress=progress, time_s=mode["latency_s"])
    plan: dict = {"teacher_top1": top1(teacher, _test_set(mode)), "teacher_macs": count_macs(teacher, x),
                  "latency_table": table.to_dict(), "selections": dict(old.get("selections", {})),
                  "channel": dict(old.get("channel", {})), "mode": mode}
    measured: dict[tuple[str, ...], float] = {}

    def measure(names: list[str]) -> float:
        key = tuple(sorted(names))
        if key not in measured:
            measured[key] = measure_reduction(teacher, drop_blocks(teacher, names), FMNIST_CONFIG.input_size,
                                              mode["backend"], time_s=mode["latency_s"])[0]
        return measured[key]

    sets = {(c.source, c.n, c.seed) for c in cells(mode)}
    for source, n, seed in sorted(sets):
        budgets = [b for b in (mode["budgets"] if source == "real" else [mode["extra_budget"]])
                   if selection_key(source, n, seed, b) not in plan["selections"]]
        if not budgets:
            continue
        data = tiny_set(source, n, seed, cache, mode["synth_iters"])
        scores = RecoverabilityScorer(teacher, data, method="closed_form", seed=seed).score(blocks, progress=progress)
        for budget in budgets:
            sel = select_blocks({r.block: r.mse for r in scores}, table.saved, latency_reduction=budget, measure=measure)
            plan["selections"][selection_key(source, n, seed, budget)] = {
                "blocks": sel.blocks, "measured": sel.measured, "predicted": sel.predicted,
                "macs": count_macs(drop_blocks(teacher, sel.blocks), x)}
            print(f"{source} n={n} seed={seed} budget={budget:.0%}: {sel.blocks} measured {sel.measured:.1%}", flush=True)
    for budget in sorted({*mode["budgets"], mode["extra_budget"]}):
        if str(int(round(100 * budget))) in plan["channel"]:
            continue
        plan["channel"][str(int(round(100 * budget)))] = _channel_ratio(teacher, budget, mode["backend"], mode["latency_s"])
        print(f"channel pruning for {budget:.0%}: {plan['channel'][str(int(round(100 * budget)))]}", flush=True)
    atomic_write_json(out / "plan.json", plan)
    return plan


# ------------------------------------------------------------------------------------------------ run


def run_cell(cell: Cell, plan: dict, out: Path, device: str, iters: int) -> dict:
    torch.manual_seed(cell.seed)
    teacher = load_model("builtin").model.to(device)
    data = tiny_set(cell.source, cell.n, cell.seed, out / "cache", plan["mode"]["synth_iters"])
    test = _test_set(plan["mode"])
    b = int(round(100 * cell.budget))
    family, method = cell.method.split("+") if "+" in cell.method else ("drop", "mimic")
    x = torch.zeros(1, *FMNIST_CONFIG.input_size, device=device)
    if family == "drop":
        sel = plan["selections"][cell.selection]
        student, measured = drop_blocks(teacher, sel["blocks"]), sel["measured"]
        if cell.method == "practise":
            scorer = RecoverabilityScorer(teacher, data, method="closed_form", seed=cell.seed, device=device)
            by_name = {blk.name: blk for blk in discover_blocks(teacher, x, count_cost=False)}
            scorer.fit([by_name[n] for n in sel["blocks"]])[1].fold_into(student)
    else:
        ch = plan["channel"][str(b)]
        student, measured = copy.deepcopy(teacher), ch["measured"]
        prune_uniform(student, x, ch["ratio"])
    before = top1(student, test, device=device)
    cfg = RecoveryConfig(method=method, iters=iters, lr=LR[method], seed=cell.seed)
    t0 = time.perf_counter()
    student, _ = recover(student, teacher, data, cfg, device=device, progress=False)
    return {**asdict(cell), "id": cell.id, "top1": top1(student, test, device=device), "top1_before_recovery": before,
            "latency_reduction": measured, "macs": count_macs(student, x), "params": sum(p.numel() for p in student.parameters()),
            "recovery_seconds": time.perf_counter() - t0, "device": device}


def _worker(args: tuple) -> str:
    cell, plan, out, device, iters, threads = args
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    dest = out / "cells" / f"{cell.id}.json"
    if not dest.exists():
        atomic_write_json(dest, run_cell(cell, plan, out, device, iters))
    return cell.id


def run(mode: dict, out: Path, device: str, workers: int, threads: int) -> None:
    plan = json.loads((out / "plan.json").read_text())
    todo = [c for c in cells(mode) if not (out / "cells" / f"{c.id}.json").exists()]
    missing = {f"{c.source}-n{c.n}-s{c.seed}" for c in todo if c.method.split("+")[0] != "channel"
               and c.selection not in plan["selections"]}
    if missing:
        raise SystemExit(f"plan.json has no block selection for {sorted(missing)}: run 'prepare' with the same options")
    print(f"{len(todo)} cells to run ({len(cells(mode)) - len(todo)} done) on {device} with {workers} workers", flush=True)
    jobs = [(c, plan, out, device, mode["iters"], threads) for c in todo]
    if workers <= 1:
        for j in jobs:
            print("done", _worker(j), flush=True)
        return
    with mp.get_context("spawn").Pool(workers) as pool:
        for i, cid in enumerate(pool.imap_unordered(_worker, jobs), 1):
            print(f"[{i}/{len(jobs)}] {cid}", flush=True)


# --------------------------------------------------------------------------------------------- report


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def report(mode: dict, out: Path, name: str) -> dict:
    plan = json.loads((out / "plan.json").read_text())
    planned = cells(mode)
    rows = [json.loads(p.read_text()) for c in planned if (p := out / "cells" / f"{c.id}.json").exists()]
    if not rows:
        raise SystemExit(f"no finished cells under {out / 'cells'}: run the 'run' phase first")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["budget"], r["n"], r["method"]), []).append(r)
    summary = [{"source": s, "budget": b, "n": n, "method": m, "top1_mean": statistics.mean(x["top1"] for x in g),
                "top1_std": statistics.stdev(x["top1"] for x in g) if len(g) > 1 else 0.0, "seeds": len(g),
                "latency_reduction_mean": statistics.mean(x["latency_reduction"] for x in g),
                "macs_mean": statistics.mean(x["macs"] for x in g)} for (s, b, n, m), g in sorted(groups.items())]
    lines = [f"# Few-shot recovery on Fashion-MNIST (teacher top-1 {100 * plan['teacher_top1']:.2f}%)", "",
             f"Top-1 (%) on the {'full ' if mode['test_images'] is None else ''}test set, mean ± std over seeds "
             f"{mode['seeds']}; {mode['iters']} recovery iterations; latency = measured {mode['backend']} reduction; "
             f"{len(rows)} of {len(planned)} planned cells finished.", ""]
    for source in ("real", "synthetic", "ood"):
        budgets = sorted({r["budget"] for r in rows if r["source"] == source})
        sizes = sorted({r["n"] for r in rows if r["source"] == source})
        if not budgets:
            continue
        head = [f"{int(round(100 * b))}% / n={n}" for b in budgets for n in sizes]
        lines += [f"## {source} images", "", "| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for m in (REAL_METHODS if source == "real" else LABEL_FREE_METHODS):
            vals = [_mean_std([x["top1"] for x in groups.get((source, b, n, m), [])]) if groups.get((source, b, n, m)) else "–"
                    for b in budgets for n in sizes]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        lat = [f"{int(round(100 * b))}%: blocks {100 * statistics.mean(s['measured'] for k, s in plan['selections'].items() if k.startswith(source) and k.endswith(f'b{int(round(100 * b))}')):.1f}%"
               f", channels {100 * plan['channel'][str(int(round(100 * b)))]['measured']:.1f}%" for b in budgets]
        lines += ["", "Measured latency reduction (mean over tiny sets): " + "; ".join(lat), ""]
    result = {"plan": plan, "cells": rows, "summary": summary}
    atomic_write_json(out / f"{name}.json", result)
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    _plot(summary, out / f"{name}.png")
    print("\n".join(lines))
    return result


def _plot(summary: list[dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = [s for s in summary if s["source"] == "real"]
    budgets = sorted({s["budget"] for s in real})
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4.2), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        for m in REAL_METHODS:
            pts = sorted((s["n"], s["top1_mean"], s["top1_std"]) for s in real if s["budget"] == b and s["method"] == m)
            if pts:
                ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], [100 * p[2] for p in pts], marker="o",
                            capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("tiny-set size (images)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{int(round(100 * b))}% measured latency reduction")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_png(fig, dest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", choices=["prepare", "run", "report", "all"], default="all")
    p.add_argument("--quick", action="store_true", help="tiny settings, MAC-count latency: a smoke test")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/fewshot[-quick])")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1, help="parallel processes for the run phase")
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    p.add_argument("--iters", type=int, default=None, help="override the recovery iterations")
    p.add_argument("--sizes", type=int, nargs="+", help="override the tiny-set sizes (real images), run in this order")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--budgets", type=float, nargs="+", help="override the latency budgets (real images)")
    p.add_argument("--extra-sizes", type=int, nargs="*", help="override the synthetic/ood set sizes (none: skip them)")
    p.add_argument("--extra-seeds", type=int, nargs="+", help="seeds for the synthetic/ood sets (default: --seeds)")
    p.add_argument("--methods", nargs="+", choices=REAL_METHODS, help="restrict the methods")
    p.add_argument("--fresh", action="store_true", help="prepare: recompute every selection (default: keep those in plan.json)")
    a = p.parse_args(argv)
    name = "fewshot-quick" if a.quick else "fewshot"
    mode = dict(MODES["quick" if a.quick else "full"])
    for key in ("iters", "sizes", "seeds", "budgets", "extra_sizes", "extra_seeds", "methods"):
        if getattr(a, key) is not None:
            mode[key] = getattr(a, key)
    out = a.out or RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    if a.phase in ("prepare", "all") and (a.phase == "prepare" or not (out / "plan.json").exists()):
        prepare(mode, out, progress=not a.quick, fresh=a.fresh)
    if a.phase in ("run", "all"):
        run(mode, out, a.device, a.workers, a.threads)
    if a.phase in ("report", "all"):
        report(mode, out, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
