"""Built-in strategies; importing this package registers each of them by name."""

from importlib.util import find_spec

from . import udfc  # noqa: F401

if find_spec(f"{__name__}.practise") is not None:  # lands with the PRACTISE slice; absent on other branches
    from . import practise  # noqa: F401
