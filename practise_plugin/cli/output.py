"""How the CLI shows things: help that states every default, one style for paths, the "next:" hints."""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, plus ``(default: X)`` on every option whose help does not state its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The same, keeping the description's own line breaks."""


def shown(path: str | Path) -> str:
    """A path as the CLI prints it: relative to the working directory when inside it, else absolute."""
    p = Path(path).expanduser().absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def next_step(*commands: str) -> str:
    """The one-line hint printed after a command that produced something."""
    return "next: " + "  or  ".join(commands)


def quote(path: str | Path) -> str:
    text = shown(path)
    return f"'{text}'" if any(c.isspace() for c in text) or not text else text


