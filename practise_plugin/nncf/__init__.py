"""NNCF integration: NNCF-style JSON configs with our strategies as new ``"algorithm"`` names.

``runner`` applies a config's entries in order (``create_compressed_model``, ``run_config``); ``config``
reads and orders them; ``schema`` validates them against a JSON schema completed from the strategy
registry; ``native`` hands NNCF's own entries to the installed NNCF 3.x; ``legacy`` registers the
strategies with an NNCF 2.x installation. Names are resolved lazily, so ``practise nncf --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"create_compressed_model": "runner", "run_config": "runner", "CompressionController": "runner",
            "REPORT_NAME": "runner", "load_config": "config", "NNCFStyleConfig": "config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
