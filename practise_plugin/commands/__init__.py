"""CLI subcommands, one module each; ``COMMANDS`` fixes their order in ``practise --help``."""

from . import strategies

COMMANDS = [strategies]
