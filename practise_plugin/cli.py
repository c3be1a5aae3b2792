"""The ``practise`` command: a thin layer over the Python API.

Each subcommand lives in ``practise_plugin/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; this file only assembles them and turns user errors into a clean message and
exit status 2 (no traceback), while Ctrl-C exits with 130 and leaves no partial files (every writer is
atomic).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from .commands import COMMANDS
from .errors import PractiseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="practise",
        description="Few-shot and data-free network acceleration: PRACTISE block dropping, SWD, UDFC; "
        "OpenVINO export and latency. Run `practise compress` with no arguments for the built-in demo.",
    )
    parser.add_argument("--version", action="version", version=f"practise-plugin {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show warnings from torch, timm, NNCF and OpenVINO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not args.verbose:
        for category in (UserWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(torch|timm|nncf|openvino)")
    try:
        return int(args.func(args) or 0)
    except PractiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial outputs were written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
