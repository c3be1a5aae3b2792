"""SWD vs magnitude prune + fine-tune at the same budget and the same training, on real Fashion-MNIST.

Why it exists: SWD's claim (Tessier et al. 2022) is that at extreme pruning targets, decaying the
weights-to-be-pruned during training beats pruning once and fine-tuning for the same time. This runs
both through the same code path (``practise_plugin.swd.pipeline``) from the built-in trained teacher
(ResNet-34 layout, 1.33 M parameters, 94.45% test top-1), in both modes, and reports top-1 on the full
10k test set, parameters kept and, for the structured models, OpenVINO CPU latency against the teacher.

Starting from the trained teacher (not from scratch, as the paper does) is what makes a CPU budget
possible: a few epochs instead of hundreds. Both methods get exactly that budget.

    python benchmarks/swd.py --quick                   # smoke test, < 60 s
    python benchmarks/swd.py                           # full: 60k images, 2 epochs per method
    python benchmarks/swd.py --device cuda --epochs 30 --name swd_long
    python benchmarks/swd.py --reuse --name swd_full   # (re)time models saved by an earlier run

Outputs (atomic): ``benchmarks/results/<name>.json``, ``.md``, ``.png`` and the structured models as
``<name>_<method>_structured.pt`` (weights-only checkpoints, loadable with ``--model PATH``).
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from practise_plugin.core.errors import ConfigError  # noqa: E402
from practise_plugin.core.files import atomic_write_json, atomic_write_text, save_png  # noqa: E402
from practise_plugin.core.strategy import CompressionContext  # noqa: E402
from practise_plugin.data import ImageSet, sample_tiny_set  # noqa: E402
from practise_plugin.data.images import from_uint8  # noqa: E402
from practise_plugin.models.builtin import FMNIST_CLASSES, FMNIST_CONFIG, test_set, tiny_set  # noqa: E402
from practise_plugin.models.builtin.fmnist import DEBIAN_DATASET_DIR, load_fmnist_split  # noqa: E402
from practise_plugin.models.checkpoint import load_compressed, save_compressed  # noqa: E402
from practise_plugin.models.loading import load_model  # noqa: E402
from practise_plugin.swd.config import SWDConfig  # noqa: E402
from practise_plugin.swd.masks import make_criterion  # noqa: E402
from practise_plugin.swd.prune import hard_prune, param_stats  # noqa: E402
from practise_plugin.swd.strategy import SWDStrategy, magnitude_prune_finetune  # noqa: E402

METHODS = {"swd": "SWD (no fine-tune)", "magnitude_finetune": "prune + fine-tune", "prune_only": "prune, no training"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 256 images, 6 steps, 500 test images, 50 timings")
    p.add_argument("--device", default="cpu", help="cpu or cuda (training and evaluation; latency is always CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch and OpenVINO CPU threads (default: all)")
    p.add_argument("--data-dir", type=Path, default=DEBIAN_DATASET_DIR, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--train-images", type=int, default=60000, help="class-balanced training subset (max 60000)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per method (SWD training = fine-tuning time)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="initial lr, x0.1 at each milestone (both methods)")
    p.add_argument("--lr-milestones", default="0.333,0.667",
                   help="comma-separated fractions of the run at which lr drops x0.1; '' keeps lr constant")
    p.add_argument("--a-max", type=float, default=1e5)
    p.add_argument("--unstructured-target", type=float, default=0.99, help="fraction of conv/linear weights removed")
    p.add_argument("--structured-target", type=float, default=0.95, help="fraction of all parameters removed")
    p.add_argument("--modes", default="unstructured,structured", help="comma-separated: unstructured, structured")
    p.add_argument("--latency-runs", type=int, default=300, help="timed OpenVINO inferences per model (median)")
    p.add_argument("--reuse", action="store_true", help="reuse the results of an earlier run with the same --name "
                   "instead of training: re-time its saved models (unless --no-latency) and re-render the report")
    p.add_argument("--no-latency", action="store_true", help="skip OpenVINO timing (e.g. on a GPU box without it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default=None, help="output file stem (default: swd_quick or swd_full)")
    args = p.parse_args(argv)
    args.name = args.name or ("swd_quick" if args.quick else "swd_full")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        args.lr_milestones = tuple(float(v) for v in args.lr_milestones.split(",") if v.strip())
    except ValueError:
        p.error(f"--lr-milestones takes comma-separated fractions such as 0.333,0.667 (or ''), got {args.lr_milestones!r}")
    try:  # the schedule's own checks (milestone order, decay stability), before any data is loaded
        SWDConfig(lr=args.lr, lr_milestones=args.lr_milestones, a_max=args.a_max, batch_size=args.batch_size)
    except ConfigError as e:
        p.error(str(e))
    if not args.modes or any(m not in ("unstructured", "structured") for m in args.modes):
        p.error(f"--modes takes unstructured and/or structured, got {','.join(args.modes) or 'nothing'}")
    if args.quick:
        args.latency_runs = min(args.latency_runs, 50)
    return args


def load_data(args: argparse.Namespace) -> tuple[ImageSet, ImageSet]:
    """Real Fashion-MNIST: a class-balanced training subset and the 10k test split (subsets when quick)."""
    if args.quick:
        return tiny_set(256, seed=args.seed), test_set().subset(range(500))
    x, y = load_fmnist_split("train", args.data_dir)
    idx = sample_tiny_set(y, min(args.train_images, len(y)), seed=args.seed)
    train = from_uint8(x[idx], y[idx], FMNIST_CONFIG, f"Fashion-MNIST train ({len(idx)} images)")
    xt, yt = load_fmnist_split("test", args.data_dir)
    test = from_uint8(xt, yt, FMNIST_CONFIG, "Fashion-MNIST test (10k)")
    train.class_names = test.class_names = list(FMNIST_CLASSES)
    return train, test


@torch.no_grad()
def top1(model: nn.Module, data: ImageSet, device: str, batch: int = 1000) -> float:
    model.eval().to(device)
    correct = sum(int((model(x.to(device)).argmax(1).cpu() == y).sum()) for x, y in data.batches(batch))
    return correct / len(data)


def prune_only(teacher: nn.Module, config: SWDConfig, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """The one-shot prune both methods start from or end with, without any training: how much is lost."""
    model = copy.deepcopy(teacher).to(device)
    example = torch.zeros(1, *FMNIST_CONFIG.input_size, device=device)
    criterion = make_criterion(model, config.mode, config.target, example)
    decision = criterion.decide()
    hard_prune(model, criterion, decision, example)
    after = param_stats(model)
    return model, {"kept_fraction": decision.kept_fraction, "nonzero_params_after": after["params"] - after["zero_weights"]}


def openvino_latency_ms(models: dict[str, nn.Module], runs: int, threads: int | None) -> dict[str, float]:
    """Median synchronous batch-1 latency per model on the OpenVINO CPU plugin, timed interleaved.

    Minimal local helper: switch to ``practise_plugin.latency.compare_latency`` once that module lands.
    """
    import openvino as ov

    core = ov.Core()
    example = torch.zeros(1, *FMNIST_CONFIG.input_size)
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    requests = {}
    for name, model in models.items():
        ov_model = ov.convert_model(copy.deepcopy(model).cpu().eval(), example_input=example)
        requests[name] = core.compile_model(ov_model, "CPU", cfg).create_infer_request()
    x = example.numpy()
    for req in requests.values():
        for _ in range(20):
            req.infer([x])
    samples: dict[str, list[float]] = {n: [] for n in requests}
    for _ in range(runs):  # interleaved: the shared machine's slow moments hit every model alike
        for name, req in requests.items():
            t = time.perf_counter()
            req.infer([x])
            samples[name].append(time.perf_counter() - t)
    return {n: 1000 * statistics.median(s) for n, s in samples.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    train, test = load_data(args)
    teacher = load_model("builtin").model
    report: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/swd.py", *sys.argv[1:]]), "device": args.device,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "train_images": len(train),
        "test_images": len(test), "teacher": {"top1": top1(teacher, test, args.device),
                                              "params": sum(p.numel() for p in teacher.parameters())},
        "runs": [], "checkpoints": {},
    }
    targets = {"unstructured": args.unstructured_target, "structured": args.structured_target}
    for mode, target in ((m, targets[m]) for m in args.modes):
        config = SWDConfig(mode=mode, target=target, epochs=args.epochs, lr=args.lr, lr_milestones=args.lr_milestones,
                           batch_size=args.batch_size,
                           a_max=args.a_max, seed=args.seed, steps=6 if args.quick else None, checkpoint_every=0)
        ctx = CompressionContext(FMNIST_CONFIG, device=args.device, progress=sys.stderr.isatty())
        pruned, stats = prune_only(teacher, config, args.device)
        report["runs"].append({"mode": mode, "method": "prune_only", "top1": top1(pruned, test, args.device), **stats})
        for method, fn in (("swd", SWDStrategy().apply), ("magnitude_finetune", magnitude_prune_finetune)):
            result = fn(teacher, train, config, ctx)
            row = {"mode": mode, "method": method, "top1": top1(result.model, test, args.device),
                   **{k: v for k, v in result.stats.items() if k not in ("method", "mode")}}
            report["runs"].append(row)
            print(f"{mode:12s} {method:18s} top-1 {row['top1']:.4f}  kept {row['kept_fraction']:.4f}  "
                  f"{row['train_seconds']:.0f} s", flush=True)
            if mode == "structured":
                path = args.out / f"{args.name}_{method}_structured.pt"
                save_compressed(path, result.model.cpu(), "builtin", FMNIST_CONFIG, result.surgery,
                                {"benchmark": args.name, "top1": row["top1"], "config": result.config})
                report["checkpoints"][method] = path.name
    return report


def add_latency(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Time the structured models saved by the run against the teacher (rebuilt from the checkpoints)."""
    models = {"teacher": load_model("builtin").model}
    models.update({m: load_compressed(args.out / f).model for m, f in report["checkpoints"].items()})
    ms = openvino_latency_ms(models, args.latency_runs, args.threads)
    report["latency"] = {"backend": "openvino CPU, batch 1, LATENCY hint, median, interleaved",
                         "runs": args.latency_runs, "threads": args.threads, "ms": ms,
                         "speedup": {m: ms["teacher"] / ms[m] for m in ms if m != "teacher"}}


def markdown(report: dict[str, Any]) -> str:
    t = report["teacher"]
    lat = report.get("latency", {})
    lines = [
        f"# SWD vs prune + fine-tune ({report['train_images']} training images, {report['device']})", "",
        f"Command: `{report['command']}`", "",
        f"Teacher: {t['top1']:.4f} top-1 on {report['test_images']} Fashion-MNIST test images, {t['params']:,} parameters.",
        "Unstructured: fraction of conv/linear weights kept. Structured: fraction of all parameters kept,",
        "channels really removed; latency is OpenVINO CPU, batch 1, median (ms, speed-up vs teacher).", "",
        "| mode | method | top-1 | kept fraction | params (non-zero) | train steps | train s | latency ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        ms = lat.get("ms", {}).get(r["method"]) if r["mode"] == "structured" else None
        timing = "| | |" if ms is None else f"| {ms:.3f} | {lat['speedup'][r['method']]:.2f}x |"
        lines.append(
            f"| {r['mode']} | {METHODS[r['method']]} | {r['top1']:.4f} | {r['kept_fraction']:.4f} | "
            f"{r.get('nonzero_params_after', '')} | {r.get('steps', 0)} | {r.get('train_seconds', 0):.0f} {timing}"
        )
    if "ms" in lat:
        lines += ["", f"Teacher latency: {lat['ms']['teacher']:.3f} ms ({lat['backend']}, {lat['runs']} runs)."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    modes = list(dict.fromkeys(r["mode"] for r in report["runs"]))
    for i, method in enumerate(METHODS):
        vals = [next(r["top1"] for r in report["runs"] if r["mode"] == m and r["method"] == method) for m in modes]
        ax1.bar([j + (i - 1) * 0.27 for j in range(len(modes))], vals, width=0.27, label=METHODS[method])
    ax1.axhline(report["teacher"]["top1"], color="k", ls="--", lw=1, label="teacher")
    ax1.set_xticks(range(len(modes)), [f"{m}\nkept {next(r['kept_fraction'] for r in report['runs'] if r['mode'] == m):.3f}"
                              for m in modes])
    ax1.set_ylabel("top-1 (Fashion-MNIST test)")
    ax1.set_ylim(0, 1.25)
    ax1.legend(fontsize=8, loc="upper center", ncol=2)
    for r in report["runs"]:
        hist = r.get("history") or r.get("finetune_history")
        if hist:
            ax2.plot([h["epoch"] for h in hist], [h["train_acc"] for h in hist], marker="o",
                     label=f"{r['mode']} {METHODS[r['method']]}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("train accuracy (running, during training)")
    ax2.legend(fontsize=8)
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.name}.json"
    t0 = time.perf_counter()
    if args.reuse and not json_path.exists():
        print(f"error: {json_path} does not exist; run the benchmark with --name {args.name} first", file=sys.stderr)
        return 2
    report = json.loads(json_path.read_text()) if args.reuse else run(args)
    if not args.no_latency:
        add_latency(report, args)
    report.setdefault("wall_seconds", {})["reuse" if args.reuse else "run"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(json_path, report)
    atomic_write_text(args.out / f"{args.name}.md", markdown(report))
    plot(report, args.out / f"{args.name}.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
