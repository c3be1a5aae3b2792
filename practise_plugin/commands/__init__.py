"""CLI subcommands, one module each; ``COMMANDS`` fixes their order in ``practise --help``."""

from . import bench, compress, discover, export, strategies

COMMANDS = [compress, discover, bench, export, strategies]
