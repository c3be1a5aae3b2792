"""``practise bench MODEL``: base latency and, per droppable block, the latency its removal saves."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import SPEC_FORMS
from ..runtime import BACKENDS, COMPARE_TIME_S, MEASURE_TIME_S
from .argtypes import positive_float, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure latency: the whole model and what dropping each block saves",
        description=(
            "Measure the model's latency (median and p10-p90 over many runs) and, with --blocks or --all-blocks, "
            "the fraction of it that dropping each block alone saves. Each block is timed against the base model "
            "in alternating order (A/B) so machine drift cancels; the table is what PRACTISE ranks blocks by. "
            "Backends: openvino (deployment runtime on CPU), torch (eager CPU), cuda (eager GPU, CUDA events), "
            "macs (multiply-accumulates instead of time: deterministic)."
        ),
        epilog="example: practise bench timm:resnet34 --all-blocks --threads 1 --json bench.json",
    )
    p.add_argument("model", metavar="MODEL", help=f"model spec: {SPEC_FORMS}")
    p.add_argument("--backend", choices=BACKENDS, default="openvino", help="how latency is measured (default: openvino)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N (implies --backend cuda) (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per inference (default: 1)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads for openvino/torch (default: the runtime's choice; 1 reproduces the paper's CPU setting)")
    p.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="input size to time at (default: the model's own)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--blocks", nargs="+", metavar="NAME", help="time dropping these blocks (names as in the table)")
    which.add_argument("--all-blocks", action="store_true", help="time dropping each droppable block")
    p.add_argument("--time", type=positive_float, default=None, metavar="S",
                   help=f"seconds of timing for the base model and for each block (default: {MEASURE_TIME_S:g} / {COMPARE_TIME_S:g})")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="store the block table here and reuse it when nothing it depends on changed")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose base model is package.module:function to import and run that code")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..api import bench
    from ..core.files import atomic_write_json, check_output_file
    from ..models.loading import load_model
    from .output import shown

    if args.json is not None:
        check_output_file(args.json)
    report = bench(load_model(args.model, trust_code=args.trust_code), backend=args.backend, device=args.device, batch_size=args.batch_size,
                   num_threads=args.threads, input_size=tuple(args.input_size) if args.input_size else None,
                   blocks=args.blocks, all_blocks=args.all_blocks, time_s=args.time, cache_dir=args.cache_dir,
                   progress=not args.no_progress)
    base = report["base"]
    console = Console()
    size = "x".join(map(str, report["input_size"]))
    threads = "" if base["threads"] is None else f", {base['threads']} thread(s)"
    console.print(
        f"[bold]{report['model']}[/] input {args.batch_size}x{size}, {base['backend']} on {base['device']}"
        f"{threads}: median {base['median_ms']:.3f} "
        f"{base['unit']} (p10 {base['p10_ms']:.3f}, p90 {base['p90_ms']:.3f}, {base['runs']} runs), "
        f"{report['macs_per_image'] / 1e6:.1f} MMAC per image"
    )
    if "table" in report:
        table, unit = report["table"], base["unit"]
        view = Table("block", "MMAC", "params", f"saved {unit}", "saved %", "spread % (p10..p90)",
                     title=f"dropping one block at a time ({table['backend']}, A/B against a base of "
                           f"{table['base_ms']:.3f} {unit})")
        for b in report["blocks"]:
            lo, hi = b["saved_spread"]
            view.add_row(b["name"], f"{b['macs'] / 1e6:.1f}", f"{b['params']:,}", f"{b['saved_ms']:.3f}",
                         f"{100 * b['saved_fraction']:.1f}", f"{100 * lo:.1f} .. {100 * hi:.1f}")
        console.print(view)
    else:
        console.print("add --all-blocks (or --blocks NAME ...) for the per-block table")
    if args.json is not None:
        atomic_write_json(args.json, report)
        console.print(f"wrote {shown(args.json)}")
    return 0
