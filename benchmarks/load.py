"""Does the latency claim hold on a busy machine? Selection's measurement against the final report's.

PRACTISE picks blocks until the *measured* latency reduction meets the target, and the report measures the
finished student again. Both are interleaved A/B measurements with a confidence interval; this benchmark
runs the same selection on the built-in teacher (a) on the machine as it is and (b) with a second process
spinning one core beside it, each with a fresh latency cache, then (c) once more under load with the cache
(b) wrote, and checks that the selection's interval and the report's interval agree (overlap) and that both
say whether the target is met with confidence.

    python benchmarks/load.py                       # 22% target, 128 images, OpenVINO CPU, 1 thread
    python benchmarks/load.py --quick               # a smoke run (MACs-sized budgets), used by the tests

Results: ``benchmarks/results/load.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from practise_plugin.api import compress, measure
from practise_plugin.core.files import atomic_write_json, atomic_write_text
from practise_plugin.models import builtin
from practise_plugin.models.loading import load_model
from practise_plugin.runtime.latency import machine_load

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def cpu_burner(cores: int) -> Iterator[list[int]]:
    """``cores`` processes that each spin one core until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(1.0)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_condition(name: str, cache: Path, args: argparse.Namespace, teacher, tiny) -> dict:
    os.environ["PRACTISE_CACHE_DIR"] = str(cache)
    before = machine_load(1.0)
    t0 = time.perf_counter()
    res = compress(teacher, tiny, "practise", latency_reduction=args.target, recover="none", fold_adaptors=False,
                   latency_backend="openvino", num_threads=args.threads, progress=False, seed=0)
    t_select = time.perf_counter() - t0
    sel, table = res.stats["selection"], res.stats["latency_table"]
    final = measure(teacher.model, res.model, teacher.data_config, backend="openvino", num_threads=args.threads,
                    time_s=args.report_time, target=args.target)["latency"]
    lo_s, hi_s = sel["measured_interval"]
    lo_f, hi_f = final["reduction_interval"]
    return {
        "condition": name, "blocks": sel["blocks"], "selection": {
            "measured": sel["measured"], "interval": [lo_s, hi_s], "confidence": sel["confidence"],
            "attempts": len(sel["history"])},
        "final": {"measured": final["reduction"], "interval": [lo_f, hi_f], "verdict": final["verdict"],
                  "pairs": final["pairs"], "converged": final["converged"], "load": final["load"]},
        "agree": max(lo_s, lo_f) <= min(hi_s, hi_f),
        "table": {"resolved": table["resolved"], "resolution": table["resolution"], "note": table["note"],
                  "load": table["load"]},
        "seconds_selection": round(t_select, 1), "load_before": before.to_dict(),
    }


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"Target: {args.target:.0%} latency reduction, built-in teacher, {args.images} images, OpenVINO CPU, "
             f"{args.threads} thread(s); 95% intervals.", "",
             "| condition | blocks | selection: measured (interval) | final report: measured (interval) | verdict | "
             "intervals agree | table | cores busy with other work | selection s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, f = r["selection"], r["final"]
        load = f["load"] or {}
        lines.append(
            f"| {r['condition']} | {', '.join(r['blocks'])} | {100 * s['measured']:.1f}% "
            f"({100 * s['interval'][0]:.1f}-{100 * s['interval'][1]:.1f}%), {s['confidence']} | "
            f"{100 * f['measured']:.1f}% ({100 * f['interval'][0]:.1f}-{100 * f['interval'][1]:.1f}%) | "
            f"{f['verdict']} | {'yes' if r['agree'] else 'no'} | "
            f"{'resolved' if r['table']['resolved'] else 'MACs prior'} | {load.get('others')} of {load.get('cpus')} | "
            f"{r['seconds_selection']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=float, default=0.22)
    p.add_argument("--images", type=int, default=128, help="tiny-set size for scoring (default 128)")
    p.add_argument("--threads", type=int, default=1, help="OpenVINO inference threads (default 1)")
    p.add_argument("--report-time", type=float, default=3.0, help="time budget of the final measurement (s)")
    p.add_argument("--burn", type=int, default=1, help="cores the load generator spins (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 32 images, quiet condition only")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="load")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.images = 32
    teacher = load_model("builtin")
    tiny = builtin.tiny_set(args.images, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(run_condition("as is", Path(tmp) / "quiet", args, teacher, tiny))
        if not args.quick:
            with cpu_burner(args.burn):
                rows.append(run_condition(f"{args.burn} core(s) burning", Path(tmp) / "busy", args, teacher, tiny))
                rows.append(run_condition(f"{args.burn} core(s) burning, cache of the run above", Path(tmp) / "busy",
                                          args, teacher, tiny))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{args.name}.json", {"target": args.target, "images": args.images,
                                                       "threads": args.threads, "rows": rows})
    atomic_write_text(args.out / f"{args.name}.md", markdown(rows, args))
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
