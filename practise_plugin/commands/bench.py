"""``practise bench MODEL``: base latency and, per droppable block, the latency its removal saves."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..discover import Block, count_macs, discover_blocks
from ..errors import ConfigError
from ..io import atomic_write_json
from ..latency import BACKENDS, COMPARE_TIME_S, MEASURE_TIME_S, block_latency_table, eval_mode, measure_latency
from ..models import SPEC_FORMS, load_model


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
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per inference (default: 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for openvino/torch (default: the runtime's choice; 1 reproduces the paper's CPU setting)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="input size to time at (default: the model's own)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--blocks", nargs="+", metavar="NAME", help="time dropping these blocks (names as in the table)")
    which.add_argument("--all-blocks", action="store_true", help="time dropping each droppable block")
    p.add_argument("--time", type=float, default=None, metavar="S",
                   help=f"seconds of timing for the base model and for each block (default: {MEASURE_TIME_S:g} / {COMPARE_TIME_S:g})")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="store the block table here and reuse it when nothing it depends on changed")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _selected_blocks(model, x, args: argparse.Namespace) -> list[Block]:
    if args.all_blocks:
        return discover_blocks(model, x)
    found = {b.name: b for b in discover_blocks(model, x, include_stage_entry=True)}
    unknown = [n for n in args.blocks if n not in found]
    if unknown:
        raise ConfigError(f"no droppable block named {', '.join(unknown)}; droppable blocks: {', '.join(found)}")
    return [found[n] for n in args.blocks]


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.time is not None and args.time <= 0:
        raise ConfigError(f"--time must be positive, got {args.time}")
    bundle = load_model(args.model, input_size=tuple(args.input_size) if args.input_size else None)
    model, input_size = bundle.model, bundle.data_config.input_size
    common = dict(backend=args.backend, batch_size=args.batch_size, num_threads=args.threads, device=args.device)
    console = Console()
    base = measure_latency(model, input_size, min_time_s=args.time or MEASURE_TIME_S, **common)
    x = bundle.example_input()
    with eval_mode(model):
        macs = count_macs(model, x)
    console.print(
        f"[bold]{bundle.spec}[/] input {args.batch_size}x{'x'.join(map(str, input_size))}, {base.backend} on {base.device}"
        f"{'' if base.threads is None else f', {base.threads} thread(s)'}: median {base.median_ms:.3f} {base.unit} "
        f"(p10 {base.p10_ms:.3f}, p90 {base.p90_ms:.3f}, {base.runs} runs), {macs / 1e6:.1f} MMAC per image"
    )
    report: dict = {"model": bundle.spec, "input_size": list(input_size), "macs_per_image": macs, "base": base.to_dict()}
    if args.blocks or args.all_blocks:
        blocks = _selected_blocks(model, x, args)
        table = block_latency_table(model, blocks, input_size, cache_dir=args.cache_dir, progress=not args.no_progress,
                                    min_time_s=args.time or COMPARE_TIME_S, **common)
        unit = base.unit
        view = Table("block", "MMAC", "params", f"saved {unit}", "saved %", "spread % (p10..p90)",
                     title=f"dropping one block at a time ({table.backend}, A/B against a base of {table.base_ms:.3f} {unit})")
        rows = []
        for b in blocks:
            saved, (lo, hi) = table.saved[b.name], table.spread[b.name]
            view.add_row(b.name, f"{b.macs / 1e6:.1f}", f"{b.params:,}", f"{saved * table.base_ms:.3f}",
                         f"{100 * saved:.1f}", f"{100 * lo:.1f} .. {100 * hi:.1f}")
            rows.append({**b.to_dict(), "saved_fraction": saved, "saved_spread": [lo, hi],
                         "saved_ms": saved * table.base_ms})
        console.print(view)
        report.update(table=table.to_dict(), blocks=rows)
    else:
        console.print("add --all-blocks (or --blocks NAME ...) for the per-block table")
    if args.json is not None:
        atomic_write_json(args.json, report)
        console.print(f"wrote {args.json}")
    return 0
