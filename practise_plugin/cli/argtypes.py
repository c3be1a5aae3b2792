"""argparse value types for counts, sizes and times: a zero or negative value is refused while the command line
is parsed (argparse's usage error, exit status 2), so nothing loads, runs or writes for a run that cannot make
sense. ``--num-samples 0`` once fell through to the demo's default set size and ran for minutes."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (images, batch size, threads, pixels)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (seconds of timing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value
