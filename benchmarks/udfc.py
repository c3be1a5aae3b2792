"""UDFC vs Neuron Merging vs plain pruning on a real trained network and real test images.

Why it exists: the paper's claim is an ordering (UDFC > Neuron Merging > Prune at 30/40/50% pruning
with 4- and 6-bit weights, no data, no fine-tuning). This reproduces that grid on the built-in
Fashion-MNIST ResNet-34-layout network (``practise_plugin.models.load_model("builtin")``) with the full
10k Fashion-MNIST test split, adds quantization-only rows, and times the whole pass on ResNet-50 on CPU.
A per-layer diagnosis (``udfc-layers.*``) shows where the ordering is won or lost: each chain pruned
alone, consumer-output error with and without the ReLU between the pruned layer and its consumer.

    python benchmarks/udfc.py --quick          # smoke test, <= 60 s, prints the tables
    python benchmarks/udfc.py                  # full grid; writes benchmarks/results/udfc{,-layers}.{json,md}, udfc.png
    python benchmarks/udfc.py --layers-only    # the per-layer diagnosis alone (seconds)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from practise_plugin.core.files import (
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    save_png,
)  # noqa: E402
from practise_plugin.data import ImageSet  # noqa: E402
from practise_plugin.models.loading import load_model  # noqa: E402
from practise_plugin.udfc.chains import analyse  # noqa: E402
from practise_plugin.udfc.compensate import coefficients, select_filters  # noqa: E402
from practise_plugin.udfc.pipeline import run_pass  # noqa: E402

METHODS = ("prune", "nm", "udfc")
LAYER_SETTING = ("l2", 0.5)  # the per-layer diagnosis at the setting where NM leads UDFC most
LABEL = {"prune": "Prune", "nm": "NM", "udfc": "UDFC", "plain": "plain quant", "udfc+bn": "UDFC + BN fold"}
# METHODS.md section 3: CIFAR-10 ResNet-56 (93.88), 4-bit weights, l2/l1 criterion.
PAPER_R56_W4 = {
    0.3: {"prune": (76.95, 74.46), "nm": (85.22, 84.41), "udfc": (90.33, 90.28)},
    0.4: {"prune": (46.44, 49.68), "nm": (76.56, 77.89), "udfc": (86.99, 87.29)},
    0.5: {"prune": (24.34, 25.58), "nm": (56.18, 56.45), "udfc": (81.90, 81.60)},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1000 test images, 30%% / 4-bit / l2 only, ResNet-18 timing; prints only")
    p.add_argument("--out", type=Path, default=None, help="results folder (full mode default: benchmarks/results)")
    p.add_argument("--criteria", default="l2,l1", help="comma-separated filter criteria (full mode)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--layers-only", action="store_true",
                   help="only the per-layer diagnosis (udfc-layers.json/.md, seconds): skip the grid and the timing")
    return p.parse_args(argv)


def accuracy(model: torch.nn.Module, images: ImageSet, batch_size: int = 1000) -> float:
    with torch.inference_mode():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in images.batches(batch_size))
    return correct / len(images)


def one_row(bundle, images, *, criterion: str, ratio: float, bits: int | None, method: str, fold: bool = False) -> dict:
    compressed, _, report = run_pass(
        bundle.model, bundle.example_input(), ratio=ratio, criterion=criterion, bits=bits, method=method,
        a1=0.01, a2=0.008, fold_into_bn=fold,
    )
    label = "udfc+bn" if fold else ("plain" if ratio == 0 and method == "prune" else method)
    row = {"criterion": criterion, "ratio": ratio, "bits": bits, "method": label, "top1": accuracy(compressed, images),
           "params": report.params_after, "pass_seconds": round(report.seconds["total"], 3)}
    print(f"  {criterion} ratio={ratio:.1f} bits={bits} {LABEL[label]:>14s}: top-1 {100 * row['top1']:.2f}%", flush=True)
    return row


def layer_errors(bundle, images: ImageSet, *, criterion: str, ratio: float) -> list[dict[str, Any]]:
    """Where the ordering is decided: each chain pruned alone, error of its consumer's output on real images.

    For every prunable chain conv -> BN -> ReLU -> conv, prune ``ratio`` of the head's filters, compensate
    with each method, and report the consumer's output error relative to the teacher's, twice: through
    the ReLU (what the network computes) and with the ReLU removed (the linear relation between
    pre-activations that UDFC's closed form minimises, data-free). Diagnosis only; the methods see no image.
    """
    model = bundle.model.eval()
    chains = [c for c in analyse(model, bundle.example_input()) if c.prunable and c.bn is not None and c.homogeneous
              and isinstance(model.get_submodule(c.consumer), torch.nn.Conv2d)]
    inputs: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(c.path).register_forward_pre_hook(lambda m, a, p=c.path: inputs.__setitem__(p, a[0]))
             for c in chains]
    try:
        with torch.no_grad():
            model(images.images)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        return [_layer_row(model, c, inputs[c.path], criterion, ratio) for c in chains]


def _layer_row(model: torch.nn.Module, chain, x: torch.Tensor, criterion: str, ratio: float) -> dict[str, Any]:
    """One chain's row of :func:`layer_errors`, from its head's real input ``x``."""
    conv, bn, nxt = (model.get_submodule(p) for p in (chain.path, chain.bn, chain.consumer))
    y = bn(conv(x))
    pruned, kept = select_filters(conv.weight, ratio, criterion)
    row: dict[str, Any] = {"layer": chain.path}
    for method in METHODS:
        S, _ = coefficients(conv, bn, pruned, kept, method)
        w = nxt.weight[:, kept] + torch.einsum("ojhw,ji->oihw", nxt.weight[:, pruned], S)
        for tag, act in (("relu", torch.relu), ("linear", lambda t: t)):
            ref = torch.nn.functional.conv2d(act(y), nxt.weight, None, nxt.stride, nxt.padding)
            out = torch.nn.functional.conv2d(act(y[:, kept]), w, None, nxt.stride, nxt.padding)
            row[f"{method}_{tag}"] = float((out - ref).pow(2).sum() / ref.pow(2).sum())
    return row


def time_pass(arch: str, repeats: int) -> dict[str, Any]:
    """Wall time of the full UDFC pass (30% pruning + 6-bit) on a random-init torchvision model, 224x224."""
    import torchvision

    model = torchvision.models.get_model(arch, weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(repeats):
        _, _, report = run_pass(model, x, ratio=0.3, criterion="l2", bits=6, method="udfc", a1=0.01, a2=0.008)
        runs.append(report.seconds)
    best = min(runs, key=lambda s: s["total"])
    return {"arch": arch, "repeats": repeats, "median_total_s": statistics.median(r["total"] for r in runs),
            "best": {k: round(v, 3) for k, v in best.items()}, "load_avg_1min": os.getloadavg()[0],
            "threads": torch.get_num_threads()}


def ordering(rows: list[dict]) -> list[dict]:
    """Per (criterion, ratio, bits): the three accuracies and whether UDFC > NM > Prune holds."""
    out = []
    keys = sorted({(r["criterion"], r["ratio"], r["bits"] or 0) for r in rows if r["ratio"] > 0})
    for crit, ratio, bits in keys:
        acc = {r["method"]: r["top1"] for r in rows
               if (r["criterion"], r["ratio"], r["bits"] or 0) == (crit, ratio, bits)}
        if all(m in acc for m in METHODS):
            out.append({"criterion": crit, "ratio": ratio, "bits": bits or None, **acc,
                        "udfc>nm>prune": acc["udfc"] > acc["nm"] > acc["prune"]})
    return out


def layer_markdown(layers: list[dict], criterion: str, ratio: float, images: int, command: str) -> str:
    lines = [f"# UDFC per layer: where the ordering is decided ({criterion}, {int(100 * ratio)}%, each chain pruned alone)", "",
             f"Command: `{command}`. Network: the built-in Fashion-MNIST ResNet (fp32).", "",
             f"Consumer-output error relative to the teacher's on {images} real training images (diagnosis only). "
             "*linear*: ReLU removed, the relation UDFC's closed form optimises; *relu*: what the network computes.", "",
             "| layer | Prune linear | NM linear | UDFC linear | Prune relu | NM relu | UDFC relu |", "|---|---|---|---|---|---|---|"]
    cols = [f"{m}_{t}" for t in ("linear", "relu") for m in METHODS]
    for r in layers:
        lines.append(f"| {r['layer']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    lines.append("| **sum** | " + " | ".join(f"**{sum(r[c] for r in layers):.3f}**" for c in cols) + " |")
    for tag in ("linear", "relu"):
        wins = sum(r[f"udfc_{tag}"] < r[f"nm_{tag}"] for r in layers)
        lines += ["", f"UDFC below NM ({tag}): {wins} of {len(layers)} layers."]
    return "\n".join(lines) + "\n"


def markdown(base: float, rows: list[dict], grid: list[dict], timing: dict, meta: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [
        "# UDFC benchmark (measured)", "",
        f"Network: {meta['network']}; test set: {meta['test_set']}; fp32 top-1 **{pct(base)}**.",
        f"Command: `{meta['command']}`. Data-free: no image is used by any method; no fine-tuning.", "",
        "## Pruning + quantization (uniform ratio on every prunable conv; weights k-bit, symmetric per tensor)", "",
        "| criterion | pruned | bits | Prune | NM | UDFC | UDFC > NM > Prune |", "|---|---|---|---|---|---|---|",
    ]
    for g in grid:
        bits = g["bits"] if g["bits"] else "fp32"
        lines.append(f"| {g['criterion']} | {int(100 * g['ratio'])}% | {bits} | {pct(g['prune'])} | {pct(g['nm'])} | "
                     f"{pct(g['udfc'])} | {'yes' if g['udfc>nm>prune'] else '**no**'} |")
    q = [r for r in rows if r["ratio"] == 0]
    if q:
        lines += ["", "## Quantization only", "", "| bits | plain quant | UDFC (scale into consumer) | UDFC + BN fold |",
                  "|---|---|---|---|"]
        for bits in sorted({r["bits"] for r in q}):
            acc = {r["method"]: r["top1"] for r in q if r["bits"] == bits}
            lines.append(f"| {bits} | {pct(acc['plain'])} | {pct(acc['udfc'])} | "
                         f"{pct(acc['udfc+bn']) if 'udfc+bn' in acc else '-'} |")
    b = timing["best"]
    lines += ["", "## Pass time", "",
              f"{timing['arch']} (random init, 224x224), 30% pruning + 6-bit, CPU, {timing['threads']} threads, "
              f"1-min load average {timing['load_avg_1min']:.1f} (shared machine): median of {timing['repeats']} "
              f"runs **{timing['median_total_s']:.2f} s**; best run: analyse {b['analyse']} s, closed forms + "
              f"compensation {b['compensate']} s, channel removal {b['remove']} s, quantization {b['quantize']} s "
              f"(paper: 2 s on one GPU).", "",
              "## Paper, for reference (CIFAR-10 ResNet-56, 93.88, 4-bit, l2/l1)", "",
              "| pruned | Prune | NM | UDFC |", "|---|---|---|---|"]
    for ratio, r in PAPER_R56_W4.items():
        lines.append(f"| {int(100 * ratio)}% | " + " | ".join(f"{r[m][0]}/{r[m][1]}" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"


def plot(base: float, rows: list[dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits_list = sorted({r["bits"] for r in rows if r["ratio"] > 0 and r["bits"]})
    fig, axes = plt.subplots(1, len(bits_list), figsize=(5 * len(bits_list), 4), squeeze=False)
    for ax, bits in zip(axes[0], bits_list):
        for method, color in zip(METHODS, ("tab:red", "tab:orange", "tab:blue")):
            for crit, style in (("l2", "-"), ("l1", "--")):
                pts = sorted((r["ratio"], r["top1"]) for r in rows
                             if r["bits"] == bits and r["method"] == method and r["criterion"] == crit and r["ratio"] > 0)
                if pts:
                    ax.plot([100 * p[0] for p in pts], [100 * p[1] for p in pts], style, marker="o", color=color,
                            label=f"{LABEL[method]} ({crit})")
        ax.axhline(100 * base, color="grey", lw=0.8, label="fp32")
        ax.set(title=f"{bits}-bit weights", xlabel="filters pruned per layer (%)", ylabel="top-1 (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Built-in Fashion-MNIST ResNet, data-free, no fine-tuning")
    save_png(fig, dest, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    out = args.out or (None if args.quick else Path(__file__).resolve().parent / "results")
    if out is not None:
        ensure_writable_dir(out)
    from practise_plugin.models.builtin import test_set, tiny_set

    t0 = time.perf_counter()
    bundle = load_model("builtin")
    crit, ratio = LAYER_SETTING
    probe = tiny_set(64 if args.quick else 500, 0)
    layers = layer_errors(bundle, probe, criterion=crit, ratio=ratio)
    command = "python benchmarks/udfc.py" + (" --quick" if args.quick else "")
    layer_text = layer_markdown(layers, crit, ratio, len(probe), command + (" --layers-only" if args.layers_only else ""))
    print(layer_text)
    if out is not None:
        atomic_write_json(out / "udfc-layers.json", {"criterion": crit, "ratio": ratio, "images": len(probe), "layers": layers})
        atomic_write_text(out / "udfc-layers.md", layer_text)
    if args.layers_only:
        return 0
    images = test_set()
    if args.quick:
        images = images.subset(torch.arange(0, len(images), max(1, len(images) // 1000)))
        criteria, ratios, bits_list, qbits, arch, repeats = ["l2"], [0.3], [4], [4], "resnet18", 1
    else:
        criteria, ratios, bits_list, qbits, arch, repeats = args.criteria.split(","), [0.3, 0.4, 0.5], [4, 6], [4, 6], "resnet50", 3
    base = accuracy(bundle.model, images)
    print(f"fp32 top-1 {100 * base:.2f}% on {len(images)} images ({images.source})", flush=True)
    rows = []
    for crit in criteria:
        for bits in bits_list:
            for ratio in ratios:
                rows += [one_row(bundle, images, criterion=crit, ratio=ratio, bits=bits, method=m) for m in METHODS]
    if not args.quick:  # pruning alone separates the two halves of the method
        rows += [one_row(bundle, images, criterion=criteria[0], ratio=r, bits=None, method=m) for r in ratios for m in METHODS]
    for bits in qbits:
        rows += [one_row(bundle, images, criterion="l2", ratio=0.0, bits=bits, method=m) for m in ("prune", "udfc")]
        if not args.quick:  # our extension: residual-stream layers compensated through their BN
            rows.append(one_row(bundle, images, criterion="l2", ratio=0.0, bits=bits, method="udfc", fold=True))
    timing = time_pass(arch, repeats)
    grid = ordering(rows)
    command += "" if args.criteria == "l2,l1" else f" --criteria {args.criteria}"
    meta = {"network": f"builtin ({bundle.spec}, trained top-1 {bundle.meta.get('test_top1')})",
            "test_set": f"{images.source}, {len(images)} images", "command": command,
            "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
    text = markdown(base, rows, grid, timing, meta)
    print("\n" + text)
    if out is not None:
        atomic_write_json(out / "udfc.json", {"meta": meta, "fp32_top1": base, "rows": rows, "ordering": grid, "timing": timing})
        atomic_write_text(out / "udfc.md", text)
        plot(base, rows, out / "udfc.png")
        print(f"wrote {out / 'udfc.json'}, {out / 'udfc.md'}, {out / 'udfc.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
