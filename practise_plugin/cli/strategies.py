"""``practise strategies [NAME]``: list the registered strategies, or one strategy's options."""

from __future__ import annotations

import argparse

from ..strategies import get_strategy, list_strategies


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategies", help="list strategies, or the options of one",
                       description="List the registered compression strategies, or describe one strategy's options.")
    p.add_argument("name", nargs="?", help="a strategy name (e.g. practise, swd, udfc)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.name is None:
        table = Table("strategy", "needs data", "description", title="registered strategies")
        for name in list_strategies():
            s = get_strategy(name)
            table.add_row(name, "yes" if s.needs_data else "no (data-free)", s.description)
        console.print(table)
        return 0
    s = get_strategy(args.name)
    table = Table("option", "type", "default", "meaning", title=f"{s.name}: {s.description}")
    for name, typ, default, help_ in s.config_cls.describe():
        table.add_row(name, typ, repr(default), help_)
    console.print(table)
    return 0
