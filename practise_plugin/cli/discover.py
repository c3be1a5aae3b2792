"""``practise discover MODEL``: the drop candidates of a model, with shapes, MACs and parameters."""

from __future__ import annotations

import argparse

from ..models import SPEC_FORMS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discover", help="list the droppable residual blocks of a model",
                       description="Find the residual blocks (x + f(x), identity shortcut) that PRACTISE can drop, "
                                   "from the model's structure, and show what each one costs.")
    p.add_argument("model", metavar="MODEL", help=f"model spec: {SPEC_FORMS}")
    p.add_argument("--include-stage-entry", action="store_true", help="also list the first block of each stage")
    p.add_argument("--json", metavar="PATH", help="also write the candidates as JSON")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose base model is package.module:function to import and run that code")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..api import discover
    from ..core.files import atomic_write_json, check_output_file
    from ..models.loading import load_model
    from .output import next_step, quote

    if args.json:
        check_output_file(args.json)
    found = discover(load_model(args.model, trust_code=args.trust_code), include_stage_entry=args.include_stage_entry)
    total = found["macs"]
    table = Table("block", "kind", "module", "input shape", "MACs (M)", "% of model", "params (k)",
                  title=f"{len(found['candidates'])} drop candidates of {found['model']} ({total / 1e6:.1f} M MACs)")
    for b in found["candidates"]:
        table.add_row(b["name"], b["kind"], b["module_type"], "x".join(map(str, b["in_shape"][1:])),
                      f"{b['macs'] / 1e6:.1f}", f"{100 * b['macs'] / total:.1f}", f"{b['params'] / 1e3:.1f}")
    Console().print(table)
    if args.json:
        atomic_write_json(args.json, found)
    model = quote(args.model)
    Console(stderr=True).print(next_step(f"practise bench {model} --all-blocks",
                                         f"practise compress --model {model} --data FOLDER"), highlight=False, soft_wrap=True)
    return 0
