"""Where the time of a compression goes, how each stage grows, and how far from the physical limit it runs.

Four parts, each model in a process of its own (one torch thread, so rows compare across models):

- **stages**: ``practise compress`` (the library call behind it, :func:`practise_plugin.api.compress_job`)
  on the built-in network and on random-weight resnet18, resnet50, mobilenetv2_100, convnext_atto and
  vit_tiny at their own input sizes, with 64 / 256 / ... real Fashion-MNIST images (resized, grey to
  RGB); the per-stage wall and CPU seconds of its report (load, discover, score, latency table, select,
  fold, recovery per iteration, measure, evaluate, export + check), and each stage's growth exponent in
  the number of images (t ~ images^k between the two sizes).
- **baseline**: closed-form scoring of the same candidates on the same images by this revision and by the
  revision before the scorer started its passes part-way (``--baseline``, default 2caa93c, extracted with
  ``git archive``), run alternately in one sweep.
- **demo**: ``practise compress`` with defaults (the built-in demo) by both revisions, alternately, each
  with a fresh latency cache: seconds end to end and the chosen blocks.
- **limit**: recovery's it/s against a bare torch loop doing the same teacher forward and student
  forward/backward/SGD step on the same batches, alternately; and scoring's seconds against the forward
  passes it cannot avoid (one teacher pass over the tiny set).

    python benchmarks/scale.py                                   # all parts (~1 h on 2 cores)
    python benchmarks/scale.py --parts stages --models resnet50 --images 256
    python benchmarks/scale.py --quick --out /tmp/x               # the test suite's smoke run

Results: ``benchmarks/results/scale.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {  # name -> model spec (random weights but the built-in)
    "builtin": "builtin", "resnet18": "torchvision:resnet18", "resnet50": "torchvision:resnet50",
    "mobilenetv2_100": "timm:mobilenetv2_100", "convnext_atto": "timm:convnext_atto",
    "vit_tiny": "timm:vit_tiny_patch16_224",
}
STAGES = ("load", "discover", "score", "latency_table", "select", "fold_adaptors", "recover", "measure", "evaluate",
          "export")


# -- workers (run in a subprocess: ``--one PART JSON``) ------------------------------------------------------
def make_images(spec: str, n: int, into: Path) -> str:
    """Real Fashion-MNIST training images (class-balanced, resized for ``spec``, grey to RGB) in a file, so that
    both revisions score exactly the same tensors."""
    path = into / f"{spec.replace(':', '_')}-{n}.pt"
    if not path.exists():
        import torch

        from practise_plugin.data import sample_tiny_set
        from practise_plugin.data.images import from_uint8
        from practise_plugin.models.builtin.fmnist import load_fmnist_split

        x, y = load_fmnist_split("train")
        idx = sample_tiny_set(y, n, seed=0)
        data = from_uint8(x[idx], y[idx], _load(spec).data_config, "")
        torch.save({"images": data.images, "labels": data.labels}, path)
    return str(path)


def _data(job: dict):  # noqa: ANN202 - an ImageSet of whichever revision runs
    import torch

    from practise_plugin import ImageSet

    saved = torch.load(job["data"], weights_only=True)
    return ImageSet(saved["images"], saved["labels"], source=f"Fashion-MNIST train ({len(saved['images'])} images)")


def _load(spec: str):  # noqa: ANN202
    import warnings

    import torch

    from practise_plugin import load_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(spec)


def work_stages(job: dict) -> dict:
    """One compress job; its report's per-stage seconds."""
    from practise_plugin.api import compress_job

    t0, c0 = time.perf_counter(), time.process_time()
    bundle = _load(job["spec"])
    load = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "calls": 1}
    data = _data(job)
    with tempfile.TemporaryDirectory() as out:
        report = compress_job(out, bundle, data=data, eval_data=data, recover_iters=job["recover_iters"],
                              num_threads=job.get("threads", 1), latency_time=job["latency_time"], latency_cache=Path(out) / "cache",
                              latency_backend=job.get("latency_backend", "openvino"),
                              progress=False, seed=0)
    stages = {"load": load, **report["stages"]}
    return {"stages": stages, "candidates": len(report["blocks"]["candidates"]), "chosen": report["blocks"]["chosen"],
            "input": list(bundle.data_config.input_size), "seconds": report["seconds"] + load["wall_s"]}


def work_score(job: dict) -> dict:
    """Closed-form scoring with whichever ``practise_plugin`` is on the path (this revision or the baseline)."""
    import torch

    from practise_plugin import RecoverabilityScorer, discover_blocks

    bundle = _load(job["spec"])
    data = _data(job)
    model = bundle.model.eval()
    blocks = discover_blocks(model, data.images[:1], count_cost=False)
    t0, c0 = time.perf_counter(), time.process_time()
    scorer = RecoverabilityScorer(model, data, method="closed_form", batch_size=64)
    scores = scorer.score(blocks, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()  # the passes scoring cannot avoid: the teacher over the tiny set, once
    with torch.no_grad():
        for i in range(0, len(data), 64):
            model(data.images[i : i + 64])
    return {"wall_s": wall, "cpu_s": cpu, "one_teacher_pass_s": time.perf_counter() - t1, "candidates": len(blocks),
            "mse": {r.block: r.mse for r in scores}}


def work_limit(job: dict) -> dict:
    """Recovery against a bare loop with the same work per step (augmented batch, teacher forward, student
    forward/backward, SGD step), alternately, on one dropped student."""
    import torch
    import torch.nn.functional as F

    from practise_plugin import discover_blocks
    from practise_plugin.graph.features import feature_fn, find_feature_point
    from practise_plugin.practise.recovery import RecoveryConfig, recover
    from practise_plugin.surgery.drop import drop_blocks

    bundle = _load(job["spec"])
    data = _data(job)
    teacher = bundle.model.eval()
    blocks = discover_blocks(teacher, data.images[:1], count_cost=False)
    student = drop_blocks(teacher, [blocks[len(blocks) // 2].name])
    point = find_feature_point(teacher, data.images[:1])
    iters, bs = job["iters"], job["batch_size"]
    cfg = RecoveryConfig(iters=iters, batch_size=bs, checkpoint_every=0)  # the default: augmented batches

    def ours() -> float:
        t = time.perf_counter()
        recover(student, teacher, data, cfg, point=point, progress=False)
        return iters / (time.perf_counter() - t)

    def bare() -> float:  # a hand-written loop with the same work per step: no checks, no logging
        from practise_plugin.core.torch_utils import copy_model
        from practise_plugin.practise.recovery import augment_batch

        net = copy_model(student).train()
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        s_fn, t_fn = feature_fn(net, point), feature_fn(teacher, point)
        gen = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        for _ in range(iters):
            x = augment_batch(data.images[torch.randint(0, len(data), (bs,), generator=gen)], gen)
            with torch.no_grad():
                target = t_fn(x)
            loss = F.mse_loss(s_fn(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return iters / (time.perf_counter() - t)

    runs = {"ours": [], "bare": []}
    for _ in range(job["repeats"]):
        runs["ours"].append(ours())
        runs["bare"].append(bare())
    return runs


def work_demo(job: dict) -> dict:
    """``practise compress`` with defaults (the built-in demo), as a user runs it."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        code = "import sys; from practise_plugin.cli import main; sys.exit(main())"
        proc = subprocess.run([sys.executable, "-c", code, "compress", "--out", out, *job.get("args", [])],
                              capture_output=True, text=True, env={**os.environ, "PRACTISE_CACHE_DIR": out + "/cache"})
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        report = json.loads((Path(out) / "report.json").read_text())
    return {"seconds": seconds, "chosen": report["blocks"]["chosen"], "reduction": report["latency"]["reduction"],
            "stages": report.get("stages"), **{k: report.get(k) for k in ("latency", "macs", "params", "accuracy")}}


def work_shard(job: dict) -> dict:
    """Closed-form scoring of every candidate on this torchrun group (one thread per rank); rank 0 reports."""
    import torch

    from practise_plugin import RecoverabilityScorer, discover_blocks
    from practise_plugin.core import distributed

    distributed.init_from_env("cpu")
    bundle = _load(job["spec"])
    data = _data(job)
    blocks = discover_blocks(bundle.model.eval(), data.images[:1], count_cost=False)
    if distributed.active():
        torch.distributed.barrier()  # every rank has loaded: time the scoring only
    t0 = time.perf_counter()
    scores = RecoverabilityScorer(bundle.model, data, method="closed_form", batch_size=64).score(blocks, False)
    wall = time.perf_counter() - t0
    out = {"ranks": distributed.world_size(), "wall_s": wall, "mse": [r.mse for r in scores]}
    distributed.shutdown()
    return out if distributed.is_main() else {}


WORKERS = {"stages": work_stages, "score": work_score, "limit": work_limit, "demo": work_demo, "shard": work_shard}


def spawn(part: str, job: dict, code_root: Path, timeout: float, ranks: int = 0) -> dict:
    """Run one worker in a fresh process (or, with ``ranks``, a torchrun group of that many) with
    ``code_root``'s ``practise_plugin`` first on the path, with ``job["threads"]`` torch threads (default 1)."""
    threads = str(job.get("threads", 1))
    env = {**os.environ, "PYTHONPATH": f"{code_root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": threads, "SCALE_THREADS": threads}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks \
        else [sys.executable]
    cmd = [*launch, str(Path(__file__).resolve()), "--one", part, json.dumps(job)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=code_root)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-1500:]}
    row, _ = json.JSONDecoder().raw_decode(lines[-1])  # a rank's stray output may follow on the line
    row["process_s"] = round(time.perf_counter() - t0, 1)
    return row


def revision() -> str:
    """This checkout's commit (short), with ``+`` when its ``practise_plugin`` differs from it: which code a row timed."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "practise_plugin"])
    return head.stdout.strip() + ("+" if dirty.returncode else "") if head.returncode == 0 else "unknown"


def baseline_tree(rev: str, into: Path) -> Path | None:
    """The baseline revision's files (``git archive``), or None where the history is not available."""
    proc = subprocess.run(f"git -C {ROOT} archive {rev} | tar -x -C {into}", shell=True, capture_output=True)
    return into if proc.returncode == 0 and (into / "practise_plugin").is_dir() else None


# -- the sweep -----------------------------------------------------------------------------------------------
def growth(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per model and stage, k in t ~ images^k between the smallest and the largest image count."""
    out: dict[str, dict[str, float]] = {}
    for model in {r["model"] for r in rows}:
        mine = sorted((r for r in rows if r["model"] == model and "stages" in r and r.get("threads", 1) == 1),
                      key=lambda r: r["images"])
        if len(mine) < 2:
            continue
        lo, hi = mine[0], mine[-1]
        ratio = math.log(hi["images"] / lo["images"])
        out[model] = {s: round(math.log(hi["stages"][s]["wall_s"] / lo["stages"][s]["wall_s"]) / ratio, 2)
                      for s in STAGES if s in lo["stages"] and s in hi["stages"]
                      and min(lo["stages"][s]["wall_s"], hi["stages"][s]["wall_s"]) > 0.05}
    return out


def _stage_cell(row: dict, stage: str) -> str:
    if stage not in row["stages"]:
        return "-"
    v = row["stages"][stage]["wall_s"] / (row["recover_iters"] if stage == "recover" else 1)
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _old_fit(rows: list[dict], model: str) -> tuple[float, float] | None:
    """(a, b) of t = a + b * images over the baseline's measured runs of ``model`` (least squares)."""
    pts = [(r["images"], r["old"]["wall_s"]) for r in rows if r["model"] == model and "wall_s" in r.get("old", {})]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return my - slope * mx, slope


def markdown(res: dict) -> str:
    lines = [f"# Scale: cost per stage ({res['machine']})", "", f"Command: `{res['command']}`", ""]
    rows = [r for r in res["stages"] if "stages" in r]
    if rows:
        lines += ["## Stages (wall seconds; recover: per iteration)", "",
                  "| model | input | images | threads | candidates | " + " | ".join(STAGES) + " | total | at |",
                  "|" + "---|" * (len(STAGES) + 7)]
        for r in rows:
            lines.append(f"| {r['model']} | {r['input'][1]} | {r['images']} | {r.get('threads', 1)} | {r['candidates']} | "
                         + " | ".join(_stage_cell(r, s) for s in STAGES) + f" | {r['seconds']:.0f} | {r.get('at', '-')} |")
        for r in res["stages"]:
            if "error" in r:
                lines.append(f"\n{r['model']} with {r['images']} images: {r['error'].splitlines()[-1]}")
    if res.get("growth"):
        lines += ["", "## Growth in the number of images (k in t ~ images^k)", "",
                  "| model | " + " | ".join(STAGES) + " |", "|" + "---|" * (len(STAGES) + 1)]
        for model, ks in sorted(res["growth"].items()):
            lines.append(f"| {model} | " + " | ".join(str(ks.get(s, "-")) for s in STAGES) + " |")
    if res.get("baseline"):
        lines += ["", f"## Closed-form scoring: this revision vs {res['baseline_rev']} (same candidates, same images)",
                  "", "| model | images | candidates | baseline s | now s | speed-up | one teacher pass s | same MSEs | now at |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b in res["baseline"]:
            old, new = b.get("old"), b["new"]
            at = b.get("at", "-") + (" (both at once)" if b.get("together") else "")
            if "error" in new or (old is not None and "error" in old):
                err = (new.get("error") or old.get("error")).strip().splitlines()[-1][:80]
                lines.append(f"| {b['model']} | {b['images']} | error: {err} | | | | | | {at} |")
                continue
            if old is None:
                fit = _old_fit(res["baseline"], b["model"])
                if fit is None:
                    lines.append(f"| {b['model']} | {b['images']} | {new['candidates']} | not run (over the budget) | "
                                 f"{new['wall_s']:.1f} | - | {new['one_teacher_pass_s']:.1f} | - | {at} |")
                    continue
                t_old, same, mark = fit[0] + fit[1] * b["images"], "-", " (extrapolated: linear fit of the runs above)"
            else:
                t_old, mark = old["wall_s"], ""
                same = "yes" if all(abs(old["mse"][k] - v) <= 1e-4 * max(abs(v), 1e-12)
                                    for k, v in new["mse"].items() if k in old["mse"]) else "no"
            lines.append(f"| {b['model']} | {b['images']} | {new['candidates']} | {t_old:.1f}{mark} | {new['wall_s']:.1f}"
                         f" | {t_old / new['wall_s']:.2f}x | {new['one_teacher_pass_s']:.1f} | {same} | {at} |")
    if res.get("demo"):
        lines += ["", f"## `practise compress` with defaults: this revision vs {res['baseline_rev']}", "",
                  "| run | revision | seconds | chosen blocks | measured reduction |", "|---|---|---|---|---|"]
        for i, d in enumerate(res["demo"]):
            run = f"{i} ({' '.join(d['args'])})" if d.get("args") else str(i)
            for rev in ("old", "new"):
                x = d[rev]
                if "error" in x:
                    lines.append(f"| {run} | {rev} | error: {x['error'].splitlines()[-1][:80]} | | |")
                else:
                    lines.append(f"| {run} | {rev} | {x['seconds']:.0f} | {', '.join(x['chosen'])} | "
                                 f"{x['reduction']:.1%} |")
    if res.get("shard"):
        lines += ["", "## Sharded scoring under torchrun (one thread per rank, alternate runs)", "",
                  "| model | images | 1 rank s | 2 ranks s | ratio | same scores |", "|---|---|---|---|---|---|"]
        for m in res["shard"]:
            one, two = m.get("1", []), m.get("2", [])
            ok = [r for r in one + two if "wall_s" in r]
            if len(ok) < len(one + two) or not one:
                lines.append(f"| {m['model']} | {m['images']} | error | | | |")
                continue
            a, b = min(r["wall_s"] for r in one), min(r["wall_s"] for r in two)
            same = all(r["mse"] == one[0]["mse"] for r in one + two)
            lines.append(f"| {m['model']} | {m['images']} | {a:.1f} | {b:.1f} | {b / a:.2f} | {'yes' if same else 'no'} |")
    if res.get("limit"):
        lines += ["", "## Recovery against a bare torch loop (it/s, alternate runs)", "",
                  "| model | batch | recovery it/s | bare loop it/s | ratio |", "|---|---|---|---|---|"]
        for m in res["limit"]:
            if "error" in m:
                lines.append(f"| {m['model']} | error: {m['error'].splitlines()[-1][:80]} | | | |")
                continue
            ours, bare = sorted(m["ours"])[len(m["ours"]) // 2], sorted(m["bare"])[len(m["bare"]) // 2]
            lines.append(f"| {m['model']} | {m['batch_size']} | {ours:.2f} | {bare:.2f} | {ours / bare:.2f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    rows = [r for r in res["stages"] if "stages" in r]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels, bottom = [f"{r['model']}\n{r['images']}" for r in rows], [0.0] * len(rows)
    for s in STAGES:
        vals = [r["stages"].get(s, {}).get("wall_s", 0.0) for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=s)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("wall seconds")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title("practise compress: seconds per stage (model / images)")
    ax.legend(fontsize=7, ncol=2)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    from practise_plugin.core.files import save_png

    save_png(fig, path)
    plt.close(fig)


def run_parts(args: argparse.Namespace, res: dict[str, Any], tmp: Path, save: Callable[[], None]) -> None:
    """The parts in the order of what they decide (baseline and demo first); results saved after each job."""
    def log(msg: str) -> None:
        print(msg, flush=True)
        save()

    def done(part: str, model: str, n: int | None = None, threads: int | None = None) -> bool:
        return any(r.get("model") == model and (n is None or r.get("images") == n)
                   and (threads is None or r.get("threads", 1) == threads) for r in res[part])

    def job(model: str, n: int, **kw: Any) -> dict[str, Any]:
        return {"spec": MODELS[model], "data": make_images(MODELS[model], n, tmp), **kw}

    old = None
    if {"baseline", "demo"} & set(args.parts):
        (tmp / "old").mkdir()
        old = baseline_tree(args.baseline, tmp / "old")
        if old is None:
            log(f"baseline {args.baseline} not in this clone's history: baseline and demo parts skipped")
    if old is not None and "baseline" in args.parts:
        for model in args.baseline_models:
            for k, n in enumerate(args.baseline_images):
                if done("baseline", model, n):
                    continue
                revs = ("old", "new") if k % 2 == 0 else ("new", "old")  # alternate who goes first
                timed = [r for r in res["baseline"] if r["model"] == model and "wall_s" in r.get("old", {})]
                projected = timed[-1]["old"]["wall_s"] * n / timed[-1]["images"] if timed else 0.0
                spec = job(model, n)
                revs = tuple(rev for rev in revs if rev == "new" or projected <= args.baseline_budget)
                with ThreadPoolExecutor(len(revs) if args.baseline_together else 1) as pool:
                    runs = {rev: pool.submit(spawn, "score", spec, old if rev == "old" else ROOT, args.timeout)
                            for rev in revs}
                    pair = {rev: f.result() for rev, f in runs.items()}
                res["baseline"].append({"model": model, "images": n, "at": revision(), **pair,
                                        **({"together": True} if args.baseline_together and len(revs) > 1 else {})})
                log(f"baseline {model} {n}: old {pair.get('old', {}).get('wall_s')} new {pair['new'].get('wall_s')}")
    if old is not None and "demo" in args.parts:
        for i in range(len(res["demo"]), args.demo_runs):
            revs = ("old", "new") if i % 2 == 0 else ("new", "old")
            pair = {rev: spawn("demo", {"args": args.demo_args}, old if rev == "old" else ROOT, args.timeout)
                    for rev in revs}
            res["demo"].append({**pair, **({"args": args.demo_args} if args.demo_args else {})})
            log(f"demo {i}: old {pair['old'].get('seconds')} new {pair['new'].get('seconds')}")
    if "limit" in args.parts:
        for model in args.limit_models:
            if done("limit", model):
                continue
            spec = job(model, 64, iters=4 if args.quick else 20, batch_size=32, repeats=1 if args.quick else 3)
            row = spawn("limit", spec, ROOT, args.timeout)
            res["limit"].append({"model": model, "batch_size": spec["batch_size"], **row})
            log(f"limit {model}: {row}")
    if "shard" in args.parts:
        for model in args.shard_models:
            if done("shard", model):
                continue
            spec = job(model, args.shard_images)
            pair = {}
            for k in range(args.shard_repeats):  # alternate 1 and 2 ranks
                for ranks in ((1, 2) if k % 2 == 0 else (2, 1)):
                    pair.setdefault(str(ranks), []).append(spawn("shard", spec, ROOT, args.timeout, ranks=ranks))
            res["shard"].append({"model": model, "images": args.shard_images, **pair})
            log(f"shard {model}: {pair}")
    if "stages" in args.parts:
        for model in args.models:
            for n in args.images:
                if done("stages", model, n, args.threads):
                    continue
                row = spawn("stages", job(model, n, recover_iters=args.recover_iters, latency_time=args.latency_time,
                                          latency_backend="macs" if args.quick else "openvino", threads=args.threads),
                            ROOT, args.timeout)
                res["stages"].append({"model": model, "images": n, "recover_iters": args.recover_iters,
                                      "threads": args.threads, "at": revision(), **row})
                res["growth"] = growth(res["stages"])
                log(f"stages {model} {n}: {row.get('seconds', row.get('error', '')[-200:])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["stages", "baseline", "demo", "limit", "shard"],
                   choices=["stages", "baseline", "demo", "limit", "shard"])
    p.add_argument("--shard-models", nargs="+", default=["builtin", "resnet18"], choices=list(MODELS))
    p.add_argument("--shard-images", type=int, default=128)
    p.add_argument("--shard-repeats", type=int, default=2)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--images", type=int, nargs="+", default=[64, 256])
    p.add_argument("--recover-iters", type=int, default=10, help="recovery iterations timed per job")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each stages job (1: rows compare across models; 2: the whole 2-core machine)")
    p.add_argument("--baseline", default="2caa93c", help="the revision to compare against")
    p.add_argument("--baseline-models", nargs="+", default=["builtin", "resnet50"], choices=list(MODELS))
    p.add_argument("--baseline-images", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--baseline-budget", type=float, default=900.0,
                   help="skip a baseline run projected (linearly) past this many seconds; its time is then "
                        "extrapolated from a linear fit of its runs")
    p.add_argument("--baseline-together", action="store_true",
                   help="run both revisions of a baseline pair at once, one core each, so that a pair of long runs "
                        "shares one stretch of the machine's load instead of two (the old one, being longer, then "
                        "runs its tail beside whatever else the machine does)")
    p.add_argument("--latency-time", type=float, default=2.0, help="seconds per latency comparison (the default)")
    p.add_argument("--demo-runs", type=int, default=1)
    p.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[],
                   help="(last) options both revisions' `practise compress` get, e.g. --latency-backend macs: a "
                        "deterministic latency table, so the chosen blocks show whether the scores agree")
    p.add_argument("--limit-models", nargs="+", default=["builtin", "resnet18"], choices=list(MODELS))
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one job may take")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the built-in network, 16 images, stages (MACs for latency) and limit")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: run one worker, print its JSON
    p.add_argument("--resume", action="store_true", help="keep the rows of an earlier run in --out and run the rest")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    if args.one:
        import torch

        torch.set_num_threads(int(os.environ.get("SCALE_THREADS", "1")))
        row = WORKERS[args.one[0]](json.loads(args.one[1]))
        if row:  # torchrun's other ranks have nothing to say
            print(json.dumps(row), flush=True)
        return 0
    if args.quick:
        args.models, args.images, args.recover_iters, args.latency_time = ["builtin"], [16], 2, 0.2
        args.parts = [x for x in args.parts if x in ("stages", "limit")]
        args.limit_models = ["builtin"]
    name = args.name or ("scale-quick" if args.quick else "scale")
    res: dict[str, Any] = {"command": "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "machine": f"{os.cpu_count()} cores, 1 torch thread per job unless a row says otherwise", "baseline_rev": args.baseline,
                           "stages": [], "baseline": [], "demo": [], "limit": [], "shard": []}
    from practise_plugin.core.files import atomic_write_json, atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    earlier = args.out / f"{name}.json"
    if args.resume and earlier.exists():
        kept = json.loads(earlier.read_text())
        for part in ("stages", "baseline", "demo", "limit", "shard"):
            res[part] = [r for r in kept.get(part, []) if "error" not in r]
        res["stages_history"] = kept.get("stages_history", [])  # rows a later revision's run of the job replaced
        res["command"] = kept.get("command", "") + " ; " + res["command"]

    def save() -> None:
        atomic_write_json(args.out / f"{name}.json", res)
        atomic_write_text(args.out / f"{name}.md", markdown(res))

    tmp = Path(tempfile.mkdtemp(prefix="practise-scale-"))
    try:
        run_parts(args, res, tmp, save)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save()
    plot(res, args.out / f"{name}.png")
    print(markdown(res))
    failed = [r for r in res["stages"] + res["limit"] if "error" in r]
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
