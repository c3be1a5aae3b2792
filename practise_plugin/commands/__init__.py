"""CLI subcommands, one module each; ``COMMANDS`` fixes their order in ``practise --help``."""

from . import bench, compress, discover, export, nncf, strategies

COMMANDS = [compress, nncf, discover, bench, export, strategies]
