"""Tool speed and agreement: recoverability by SGD (the paper) vs closed form vs the bare hole.

    python benchmarks/recoverability.py --quick               # CI smoke test (tiny settings)
    python benchmarks/recoverability.py --device cuda         # full: both models, SGD with 500 iterations

For each model, every drop candidate is scored three ways on the same tiny set: ``sgd`` (adaptors trained
with the paper's recipe), ``closed_form`` (ridge least squares, forward order) and ``none`` (no adaptors).
We report the seconds each takes, the Spearman rank correlation of the closed form (and of the bare hole)
with the SGD ranking, and recovery speed (iterations/s of feature mimicking at batch 64).

Models: the built-in Fashion-MNIST ResNet (500 real training images) and EfficientNet-Lite0 with real
ImageNet weights (80 natural images: the CIFAR-10/100 and (Fashion-)MNIST photos shipped in the foolbox
wheel, upsampled to 224: out-of-domain, which PRACTISE's label-free scoring allows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from scipy.stats import spearmanr

from practise_plugin.core.files import atomic_write_json, atomic_write_text, save_png
from practise_plugin.data import ImageSet
from practise_plugin.data.images import load_image_files
from practise_plugin.graph.discover import discover_blocks
from practise_plugin.models import builtin
from practise_plugin.models.loading import load_model
from practise_plugin.practise.recoverability import RecoverabilityScorer
from practise_plugin.practise.recovery import RecoveryConfig, recover
from practise_plugin.surgery.drop import drop_blocks

RESULTS = Path(__file__).resolve().parent / "results"
MODES = {"full": {"sgd_iters": 500, "fmnist_images": 500, "recover_iters": 50, "ood_per_source": 20},
         "quick": {"sgd_iters": 3, "fmnist_images": 32, "recover_iters": 2, "ood_per_source": 4}}


def ood_photos(cfg, per_source: int) -> ImageSet:
    """Natural photos that are not ImageNet's: foolbox's CIFAR-10/100, MNIST and Fashion-MNIST samples."""
    root = builtin.foolbox_image_dir()
    files = [f for prefix in ("cifar10_", "cifar100_", "mnist_", "fashionMNIST_")
             for f in sorted(root.glob(f"{prefix}*"))[:per_source]]
    return load_image_files(files, cfg, None, "foolbox CIFAR/MNIST samples (out-of-domain)")


def earlier_sgd(path: Path, spec: str, data: ImageSet, sgd_iters: int, blocks: list[str]) -> dict:
    """The SGD row of an earlier run on the same model, tiny set and iterations (the SGD path is deterministic
    for a seed, so re-running it after a change to the closed form only would reproduce the same scores)."""
    try:
        earlier = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--reuse-sgd {path}: cannot read an earlier result file ({e})") from e
    for r in earlier:
        if (r["model"], r["images"], r["source"], r["blocks"]) == (spec, len(data), data.source, blocks) \
                and r.get("sgd_iters") == sgd_iters:
            return dict(r["methods"]["sgd"], reused_from=str(path))
    raise SystemExit(f"--reuse-sgd {path}: no result for {spec} on {len(data)} images ({data.source}) with "
                     f"{sgd_iters} SGD iterations; run without --reuse-sgd")


def bench_model(name: str, bundle, data: ImageSet, mode: dict, device: str, reuse_sgd: Path | None = None) -> dict:
    teacher = bundle.model.to(device)
    blocks = discover_blocks(teacher, data.images[:1].to(device))
    rows: dict[str, dict] = {}
    if reuse_sgd is not None:
        rows["sgd"] = earlier_sgd(reuse_sgd, bundle.spec, data, mode["sgd_iters"], [b.name for b in blocks])
    for method in ("none", "closed_form", "sgd"):
        if method in rows:
            continue
        t0 = time.perf_counter()
        scorer = RecoverabilityScorer(teacher, data, method=method, iters=mode["sgd_iters"], seed=0, device=device)
        setup = time.perf_counter() - t0
        scores = scorer.score(blocks, progress=False)
        rows[method] = {"seconds": time.perf_counter() - t0, "setup_seconds": setup,
                        "mse": {r.block: r.mse for r in scores}}
        print(f"{name} {method}: {rows[method]['seconds']:.1f} s", flush=True)
    names = [b.name for b in blocks]
    sgd = [rows["sgd"]["mse"][n] for n in names]
    out = {"model": bundle.spec, "images": len(data), "source": data.source, "device": device, "blocks": names,
           "methods": rows, "sgd_iters": mode["sgd_iters"],
           "spearman_closed_form_vs_sgd": float(spearmanr([rows["closed_form"]["mse"][n] for n in names], sgd).statistic),
           "spearman_none_vs_sgd": float(spearmanr([rows["none"]["mse"][n] for n in names], sgd).statistic),
           "speedup_closed_form_vs_sgd": rows["sgd"]["seconds"] / rows["closed_form"]["seconds"]}
    student = drop_blocks(teacher, names[:2])
    cfg = RecoveryConfig(iters=mode["recover_iters"], seed=0)
    t0 = time.perf_counter()
    recover(student, teacher, data, cfg, device=device, progress=False)
    out["recovery_iters_per_s"] = mode["recover_iters"] / (time.perf_counter() - t0)
    return out


def markdown(results: list[dict]) -> str:
    lines = ["| model | images | device | candidates | SGD (s) | closed form (s) | speed-up | Spearman CF vs SGD | "
             "Spearman none vs SGD | recovery it/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['images']} | {r['device']} | {len(r['blocks'])} | {r['methods']['sgd']['seconds']:.1f} "
                     f"| {r['methods']['closed_form']['seconds']:.1f} | {r['speedup_closed_form_vs_sgd']:.1f}x "
                     f"| {r['spearman_closed_form_vs_sgd']:.3f} | {r['spearman_none_vs_sgd']:.3f} "
                     f"| {r['recovery_iters_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        sgd = [r["methods"]["sgd"]["mse"][n] for n in r["blocks"]]
        for method, marker in (("closed_form", "o"), ("none", "x")):
            ax.scatter(sgd, [r["methods"][method]["mse"][n] for n in r["blocks"]], marker=marker, label=method)
        lo, hi = min(sgd), max(sgd)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"R(B) by SGD ({r['sgd_iters']} iterations)")
        ax.set_ylabel("R(B) by the fast paths")
        ax.set_title(f"{r['model']}: Spearman CF {r['spearman_closed_form_vs_sgd']:.2f}")
        ax.legend(fontsize=8)
    save_png(fig, dest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--models", nargs="+", choices=["builtin", "efficientnet_lite0"], default=["builtin", "efficientnet_lite0"])
    p.add_argument("--sgd-iters", type=int, default=None, help="override the SGD iterations per candidate")
    p.add_argument("--ood-per-source", type=int, default=None, help="override the photos per foolbox source (EfficientNet)")
    p.add_argument("--input-size", type=int, default=None, help="EfficientNet input side (default: its 224)")
    p.add_argument("--name", default=None, help="output file stem (default: recoverability[-quick])")
    p.add_argument("--reuse-sgd", type=Path, default=None,
                   help="take the SGD scores and seconds from this earlier result file (same model, tiny set and "
                        "iterations) instead of re-training: for re-measuring the closed form after changing it")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    mode = dict(MODES["quick" if a.quick else "full"])
    for key in ("sgd_iters", "ood_per_source"):
        if getattr(a, key) is not None:
            mode[key] = getattr(a, key)
    results = []
    for name in a.models:
        if name == "builtin":
            bundle, data = load_model("builtin"), builtin.tiny_set(mode["fmnist_images"], 0)
        else:
            size = None if a.input_size is None else (3, a.input_size, a.input_size)
            bundle = load_model("builtin:efficientnet_lite0", input_size=size)
            data = ood_photos(bundle.data_config, mode["ood_per_source"])
        results.append(bench_model(name, bundle, data, mode, a.device, a.reuse_sgd))
    stem = a.name or ("recoverability-quick" if a.quick else "recoverability")
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out / f"{stem}.json", {"mode": mode, "torch": torch.__version__, "results": results})
    atomic_write_text(a.out / f"{stem}.md", markdown(results))
    plot(results, a.out / f"{stem}.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
