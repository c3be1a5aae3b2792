"""The CUDA path, timed on the first machine with a GPU: recovery it/s, scoring seconds, CUDA-event latency.

For each model (random weights but the built-in, its own input size) and a dropped student:

- recovery it/s in full precision and with the fast path (autocast bf16/fp16 + channels-last + cuDNN
  autotuning + pinned copies), alternately, and the final feature MSE of each (same steps, same batches);
- closed-form scoring of every candidate on the GPU against the CPU (same images), and whether the scores agree;
- the latency reduction of the student measured with CUDA events at batch 1 and at the recovery batch.

    python benchmarks/gpu.py                         # resnet50 and the built-in network, 256 images
    python benchmarks/gpu.py --models resnet18 --images 512 --iters 100

Results: ``benchmarks/results/gpu.{json,md}``. Without a GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import MODELS, _load  # noqa: E402 - the same models and loading as the CPU scale benchmark

from practise_plugin import RecoverabilityScorer, discover_blocks, drop_blocks  # noqa: E402
from practise_plugin.core.files import atomic_write_json, atomic_write_text  # noqa: E402
from practise_plugin.data import sample_tiny_set  # noqa: E402
from practise_plugin.data.images import from_uint8  # noqa: E402
from practise_plugin.graph.features import collect_features, feature_mse, find_feature_point  # noqa: E402
from practise_plugin.models.builtin.fmnist import load_fmnist_split  # noqa: E402
from practise_plugin.practise.recovery import RecoveryConfig, recover  # noqa: E402
from practise_plugin.runtime.latency import compare_latency  # noqa: E402


def images(bundle, n: int):  # noqa: ANN001, ANN201
    x, y = load_fmnist_split("train")
    idx = sample_tiny_set(y, n, seed=0)
    return from_uint8(x[idx], y[idx], bundle.data_config, f"Fashion-MNIST train ({n} images)")


def timed(fn) -> tuple[float, object]:  # noqa: ANN001
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, out


def run_model(name: str, args: argparse.Namespace) -> dict:
    bundle = _load(MODELS[name])
    teacher = bundle.model.eval()
    data = images(bundle, args.images)
    blocks = discover_blocks(teacher, data.images[:1], count_cost=False)
    student = drop_blocks(teacher, [b.name for b in blocks[len(blocks) // 3 :: max(1, len(blocks) // 3)]][:2])
    point = find_feature_point(teacher, data.images[:1])
    targets = collect_features(teacher, point, data.images)
    row: dict = {"model": name, "images": args.images, "candidates": len(blocks), "recovery": {}}
    for _ in range(args.repeats):  # alternate: full precision, fast path
        for mp in (False, True):
            cfg = RecoveryConfig(iters=args.iters, batch_size=args.batch_size, mixed_precision=mp, augment=False,
                                 checkpoint_every=0)
            sec, (out, _) = timed(lambda cfg=cfg: recover(student, teacher.cuda(), data, cfg, point=point,
                                                           device="cuda", progress=False))
            entry = row["recovery"].setdefault("fast" if mp else "fp32", {"it_s": [], "feature_mse": None})
            entry["it_s"].append(args.iters / sec)
            entry["feature_mse"] = feature_mse(collect_features(out.cpu(), point, data.images), targets)
    t_cpu = time.perf_counter()
    cpu = RecoverabilityScorer(teacher.cpu(), data, method="closed_form").score(blocks, progress=False)
    t_cpu = time.perf_counter() - t_cpu
    sec, gpu = timed(lambda: RecoverabilityScorer(teacher.cuda(), data, method="closed_form",
                                                  device="cuda").score(blocks, progress=False))
    row["scoring"] = {"cpu_s": t_cpu, "cuda_s": sec, "max_rel_diff": max(
        abs(a.mse - b.mse) / max(abs(a.mse), 1e-12) for a, b in zip(cpu, gpu))}
    row["latency"] = {}
    for bs in sorted({1, args.batch_size}):
        ab = compare_latency(teacher, student, bundle.data_config.input_size, "cuda", batch_size=bs, device="cuda")
        row["latency"][str(bs)] = {"reduction": 1 - ab.ratio_median, "p10": ab.ratio_p10, "p90": ab.ratio_p90}
    return row


def markdown(rows: list[dict], device: str) -> str:
    lines = [f"# CUDA path ({device})", "", "| model | images | recovery fp32 it/s | fast it/s | speed-up | "
             "MSE fp32 | MSE fast | scoring CPU s | scoring CUDA s | max rel. diff | latency saved b1 | at batch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f32, fast = r["recovery"]["fp32"], r["recovery"]["fast"]
        a, b = max(f32["it_s"]), max(fast["it_s"])
        lat = list(r["latency"].values())
        lines.append(f"| {r['model']} | {r['images']} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {f32['feature_mse']:.4g} | "
                     f"{fast['feature_mse']:.4g} | {r['scoring']['cpu_s']:.1f} | {r['scoring']['cuda_s']:.1f} | "
                     f"{r['scoring']['max_rel_diff']:.1e} | {lat[0]['reduction']:.1%} | {lat[-1]['reduction']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["builtin", "resnet50"], choices=list(MODELS))
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU here; run this on a machine with one", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    rows = []
    for name in args.models:
        rows.append(run_model(name, args))
        print(markdown(rows, device), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "gpu.json", {"device": device, "rows": rows, "argv": argv or sys.argv[1:]})
    atomic_write_text(args.out / "gpu.md", markdown(rows, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
