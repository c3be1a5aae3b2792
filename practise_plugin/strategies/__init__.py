"""Built-in strategies; importing this package registers each of them by name."""

from . import practise  # noqa: F401
