"""Built-in strategies; importing this package registers each of them by name."""

from . import swd  # noqa: F401
