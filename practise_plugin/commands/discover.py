"""``practise discover MODEL``: the drop candidates of a model, with shapes, MACs and parameters."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ..discover import count_macs, discover_blocks
from ..io import atomic_write_json
from ..models import SPEC_FORMS, load_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discover", help="list the droppable residual blocks of a model",
                       description="Find the residual blocks (x + f(x), identity shortcut) that PRACTISE can drop, "
                                   "from the model's structure, and show what each one costs.")
    p.add_argument("model", metavar="MODEL", help=f"model spec: {SPEC_FORMS}")
    p.add_argument("--include-stage-entry", action="store_true", help="also list the first block of each stage")
    p.add_argument("--json", metavar="PATH", help="also write the candidates as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bundle = load_model(args.model)
    x = bundle.example_input()
    blocks = discover_blocks(bundle.model, x, include_stage_entry=args.include_stage_entry)
    total = count_macs(bundle.model, x)
    table = Table("block", "kind", "module", "input shape", "MACs (M)", "% of model", "params (k)",
                  title=f"{len(blocks)} drop candidates of {bundle.spec} ({total / 1e6:.1f} M MACs)")
    for b in blocks:
        table.add_row(b.name, b.kind, b.module_type, "x".join(map(str, b.in_shape[1:])), f"{b.macs / 1e6:.1f}",
                      f"{100 * b.macs / total:.1f}", f"{b.params / 1e3:.1f}")
    Console().print(table)
    if args.json:
        atomic_write_json(args.json, {"model": bundle.spec, "macs": total, "candidates": [b.to_dict() for b in blocks]})
    return 0
