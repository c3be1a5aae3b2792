"""The ``practise`` command: it parses and prints; the library (:mod:`practise_plugin.api`) does the work.

Each subcommand lives in ``practise_plugin/cli/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; heavy libraries are imported inside ``run``, so ``practise --help`` and every
``practise <command> --help`` answer without loading torch, OpenVINO, NNCF or Torch-Pruning. This file
assembles the commands and turns user errors into one clean ``error:`` line and exit status 2 (no
traceback), while Ctrl-C exits with 130 and leaves no partial files (every writer is atomic).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .. import __version__
from ..core.errors import PractiseError
from . import bench, compress, discover, export, nncf, strategies
from .output import HelpFormatter, RawHelpFormatter

COMMANDS = [compress, nncf, discover, bench, export, strategies]
# Libraries that log on their own at import or first use; their lines are noise in a normal run.
QUIET_LOGGERS = ("torch.utils.cpp_extension", "nncf", "openvino", "timm")


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
    for command in sub.choices.values():  # every flag's help states its default
        raw = command.formatter_class is argparse.RawDescriptionHelpFormatter
        command.formatter_class = RawHelpFormatter if raw else HelpFormatter
    return parser


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings as ``warning: <message>``, without the file, line and source Python shows by default."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not args.verbose:
        for category in (UserWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(torch|timm|nncf|openvino)")
        for name in QUIET_LOGGERS:  # a filter, not a level: torch sets its loggers' levels when it is imported
            logging.getLogger(name).addFilter(_errors_only)
    formatted, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    log = logging.getLogger("practise_plugin")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except PractiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial outputs were written", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).removeFilter(_errors_only)
        warnings.formatwarning = formatted
