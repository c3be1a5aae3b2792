"""CLI subcommands, one module each; ``COMMANDS`` fixes their order in ``practise --help``."""

from . import bench, export, nncf, strategies

COMMANDS = [strategies, bench, export, nncf]
