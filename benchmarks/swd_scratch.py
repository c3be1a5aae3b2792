"""SWD in the paper's own regime: from scratch, the penalty for the whole run, against the reference baseline.

The SWD claim (Tessier et al. 2022) is for networks trained *from scratch* with the penalty growing over the
whole training (reference code: SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, lr x0.1 at 1/3 and
2/3, a(t) from 0.1 to 1e5, then one hard prune and no fine-tuning). Its baseline trains the same network
normally, prunes it by magnitude once and fine-tunes it (reference: 150 + 50 epochs, a 25% fine-tune
share). Here both get the same total epochs T: SWD trains T epochs with the penalty; the baseline trains
0.75 T normally, prunes, and fine-tunes 0.25 T (lr 0.01, x0.1 at 1/3 and 2/3). The schedule is the
reference's, scaled in epochs only (T instead of 200), plus one epoch of linear lr warm-up for both methods
training from scratch: without it LeNet-5 (no BatchNorm) at lr 0.1, momentum 0.9 diverged to NaN at step 34.

Networks small enough for the 2 CPU cores, on real Fashion-MNIST (top-1 on all 10k test images):

- ``lenet5`` (61.7 k parameters; the reference code's LeNet-5), unstructured: 90%, 99%, 99.5%, 99.9% of the
  conv/linear weights removed; the full 60k training images.
- ``convbn`` (75.5 k parameters; five 3x3 conv + BatchNorm + ReLU layers and a linear head), structured: about
  10%, 5% and 2.5% of all parameters kept, channels removed for real; a class-balanced training subset
  (``--structured-images``, 15k by default: its epoch costs 4x LeNet-5's); OpenVINO CPU latency of the students.

Every cell (model, mode, target, method, seed) is written to ``<out>/<name>/cells/`` when done; a rerun skips
finished cells, so an interrupted sweep resumes. ``--quick`` is the test suite's smoke run.

    python benchmarks/swd_scratch.py                            # the sweep (~3 h on 2 cores)
    python benchmarks/swd_scratch.py --quick --out /tmp/x       # seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from practise_plugin.core.files import atomic_write_json, atomic_write_text, save_png  # noqa: E402
from practise_plugin.core.strategy import CompressionContext  # noqa: E402
from practise_plugin.data import ImageSet, sample_tiny_set  # noqa: E402
from practise_plugin.data.images import from_uint8  # noqa: E402
from practise_plugin.models.builtin import FMNIST_CONFIG, test_set, tiny_set  # noqa: E402
from practise_plugin.models.builtin.fmnist import load_fmnist_split  # noqa: E402
from practise_plugin.runtime.latency import compare_latency  # noqa: E402
from practise_plugin.swd.config import SWDConfig  # noqa: E402
from practise_plugin.swd.strategy import SWDStrategy, magnitude_prune_finetune  # noqa: E402
from practise_plugin.swd.train import make_schedule, train  # noqa: E402

UNSTRUCTURED = (0.9, 0.99, 0.995, 0.999)  # fraction of conv/linear weights removed
STRUCTURED = (0.9, 0.95, 0.975)  # fraction of all parameters removed
FINETUNE_SHARE = 0.25  # the reference's 50 of 200 epochs
WARMUP = 1.0  # epochs of linear lr warm-up before training from scratch (LeNet-5 at lr 0.1 hit NaN at step 34)


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def convbn() -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), *block(32, 32), nn.MaxPool2d(2),
                         *block(32, 64), *block(64, 64), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(576, 10))


MODELS = {"lenet5": (lenet5, "unstructured", UNSTRUCTURED), "convbn": (convbn, "structured", STRUCTURED)}


def data(args: argparse.Namespace, structured: bool) -> tuple[ImageSet, ImageSet]:
    if args.quick:
        return tiny_set(512, seed=0), test_set(full=False).subset(range(500))
    x, y = load_fmnist_split("train")
    n = args.structured_images if structured else len(y)
    idx = sample_tiny_set(y, n, seed=0) if n < len(y) else slice(None)
    train_set = from_uint8(x[idx], y[idx], FMNIST_CONFIG, f"Fashion-MNIST train ({len(y[idx])} images)")
    return train_set, test_set(full=True)


@torch.no_grad()
def top1(model: nn.Module, data_set: ImageSet) -> float:
    model.eval()
    return sum(int((model(x).argmax(1) == y).sum()) for x, y in data_set.batches(1000)) / len(data_set)


def config(mode: str, target: float, epochs: int, seed: int, **kw: Any) -> SWDConfig:
    base = dict(mode=mode, target=target, epochs=epochs, lr=0.1, lr_milestones=(1 / 3, 2 / 3), mu=5e-4, a_min=0.1,
                a_max=1e5, momentum=0.9, batch_size=128, seed=seed, checkpoint_every=0, warmup_epochs=WARMUP)
    return SWDConfig(**{**base, **kw})


def split(epochs: int) -> tuple[int, int]:
    """(training, fine-tuning) epochs of the baseline: the reference's 3:1, at least one of each."""
    tune = max(1, round(epochs * FINETUNE_SHARE))
    return epochs - tune, tune


def fresh(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[name][0]()


def run_cell(name: str, mode: str, target: float, method: str, seed: int, args: argparse.Namespace,
             train_set: ImageSet, test: ImageSet) -> dict[str, Any]:
    t0 = time.perf_counter()
    ctx = CompressionContext(FMNIST_CONFIG, progress=not args.no_progress)
    model = fresh(name, seed)
    dense = None
    if method == "swd":
        res = SWDStrategy().apply(model, train_set, config(mode, target, args.epochs, seed), ctx)
        history = res.stats["history"]
    else:  # the reference: plain training, one magnitude prune, fine-tuning, for the same total epochs
        e_train, e_tune = split(args.epochs)
        plain = config(mode, target, e_train, seed)
        history = train(model, train_set, plain, make_schedule(len(train_set), plain), progress=not args.no_progress,
                        desc="plain")
        dense = copy.deepcopy(model).eval()
        tune = config(mode, target, e_tune, seed, lr=0.01, warmup_epochs=0.0)
        res = magnitude_prune_finetune(model, train_set, tune, ctx)
    cell = {"model": name, "mode": mode, "target": target, "method": method, "seed": seed, "epochs": args.epochs,
            "top1": top1(res.model, test), "kept_fraction": res.stats["kept_fraction"],
            "params_after": res.stats["params_after"], "nonzero_params_after": res.stats["nonzero_params_after"],
            "removed_norm_fraction": res.stats["removed_norm_fraction"], "seconds": round(time.perf_counter() - t0, 1),
            "test_images": len(test), "train_images": len(train_set)}
    if dense is not None:
        cell["dense_top1"] = top1(dense, test)
    if method == "swd":  # the analysis: how much of the decayed norm the mask would still cut, epoch by epoch
        cell["outside_norm"] = [h["outside_norm"] for h in history]
        cell["a"] = [h["a"] for h in history]
    if mode == "structured" and not args.quick:
        ab = compare_latency(fresh(name, seed), res.model, FMNIST_CONFIG.input_size, "openvino", num_threads=1,
                             time_s=2.0)
        cell["latency_ratio"], cell["latency_interval"] = ab.ratio_median, [ab.ratio_low, ab.ratio_high]
    return cell


def markdown(cells: list[dict]) -> str:
    lines = ["From scratch; T epochs per method in all (SWD: T with the penalty; baseline: 3/4 T training, magnitude "
             "prune, 1/4 T fine-tune); top-1 on the Fashion-MNIST test images, mean (and each seed) over seeds.", "",
             "| model | mode | T epochs | train images | removed | SWD (no fine-tune) | prune + fine-tune | "
             "kept (SWD / baseline) | norm the prune cut (SWD) | latency vs dense (SWD / baseline) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(c["model"], c["mode"], c["epochs"], c["target"]) for c in cells})
    for model, mode, epochs, target in keys:
        row = {m: [c for c in cells if (c["model"], c["mode"], c["epochs"], c["target"], c["method"])
                   == (model, mode, epochs, target, m)] for m in ("swd", "baseline")}
        if not all(row.values()):
            continue

        def acc(cs: list[dict]) -> str:
            mean = statistics.fmean(c["top1"] for c in cs)
            seeds = " / ".join(f"{100 * c['top1']:.2f}" for c in sorted(cs, key=lambda c: c["seed"]))
            return f"{100 * mean:.2f} ({seeds})" if len(cs) > 1 else f"{100 * mean:.2f}"

        kept = " / ".join(f"{statistics.fmean(c['kept_fraction'] for c in row[m]):.4f}" for m in ("swd", "baseline"))
        lat = " / ".join(f"{statistics.fmean(c['latency_ratio'] for c in row[m]):.3f}" if "latency_ratio" in row[m][0]
                         else "-" for m in ("swd", "baseline"))
        cut = statistics.fmean(c["removed_norm_fraction"] for c in row["swd"])
        lines.append(f"| {model} | {mode} | {epochs} | {row['swd'][0]['train_images']} | {target:.1%} | "
                     f"{acc(row['swd'])} | {acc(row['baseline'])} | {kept} | {cut:.2e} | {lat} |")
    return "\n".join(lines) + "\n"


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({c["mode"] for c in cells})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for method, label in (("swd", "SWD (no fine-tune)"), ("baseline", "prune + fine-tune")):
            pts = sorted({(c["kept_fraction"], c["target"]) for c in cells if c["mode"] == mode and c["method"] == method})
            xs, ys = [], []
            for target in sorted({t for _, t in pts}):
                cs = [c for c in cells if c["mode"] == mode and c["method"] == method and c["target"] == target]
                xs.append(statistics.fmean(c["kept_fraction"] for c in cs))
                ys.append(100 * statistics.fmean(c["top1"] for c in cs))
            ax.plot(xs, ys, "o-", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("fraction kept (" + ("weights" if mode == "unstructured" else "parameters") + ")")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{mode}, from scratch")
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=40, help="total epochs per method (the reference: 200)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--targets", type=float, nargs="+", default=None, help="instead of each model's own targets")
    p.add_argument("--structured-images", type=int, default=15000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 512 images, 1 epoch, one target per model")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the baseline splits them into training and fine-tuning)")
    if args.quick:
        args.epochs, args.seeds = 2, [0]
    torch.set_num_threads(args.threads)
    name = args.name or ("swd_scratch_quick" if args.quick else "swd_scratch")
    folder = args.out / name / "cells"
    folder.mkdir(parents=True, exist_ok=True)
    cells = []
    for model in args.models:
        _, mode, targets = MODELS[model]
        targets = args.targets or (targets[-1:] if args.quick else targets)
        train_set, test = data(args, mode == "structured")
        for target in targets:
            for seed in args.seeds:
                for method in ("swd", "baseline"):
                    path = folder / f"{model}-{target}-{method}-s{seed}-e{args.epochs}.json"
                    if path.exists():
                        cells.append(json.loads(path.read_text()))
                        continue
                    cell = run_cell(model, mode, target, method, seed, args, train_set, test)
                    atomic_write_json(path, cell)
                    cells.append(cell)
                    print(json.dumps({k: v for k, v in cell.items() if k not in ("outside_norm", "a")}), flush=True)
    # the report covers every finished cell of this sweep (earlier invocations, other epochs included)
    cells = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    atomic_write_json(args.out / name / f"{name}.json", {"cells": cells})
    atomic_write_text(args.out / name / f"{name}.md", markdown(cells))
    plot(cells, args.out / name / f"{name}.png")
    print(markdown(cells))
    return 0 if all(math.isfinite(c["top1"]) for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
