"""The replayable surgery log: the structural edits that turn a base model into a compressed one.

Why it exists: a compressed model no longer fits its original class's state dict, and pickling the module
would let a file run code on load. We record *how to rebuild it* instead, as plain JSON-able records
(``{"op": "drop_blocks", "blocks": [...]}``, ``{"op": "torch_pruning", "history": [...]}``), and replay them
on a freshly built base model. Checkpoints (:mod:`practise_plugin.models.checkpoint`) and the NNCF 2.x
builders resume through :func:`replay_surgery`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..core.errors import ModelError
from ..core.inputs import DataConfig
from .channel_removal import replay_history
from .drop import drop_blocks

ReplayFn = Callable[[nn.Module, dict[str, Any], DataConfig], nn.Module]
REPLAY: dict[str, ReplayFn] = {
    "drop_blocks": lambda model, op, data_config: drop_blocks(model, op["blocks"], inplace=True),
    "torch_pruning": replay_history,
}


def replay_surgery(model: nn.Module, surgery: list[dict[str, Any]], data_config: DataConfig) -> nn.Module:
    """Apply the recorded edits, in order, to ``model`` (in place where possible); returns the result."""
    for op in surgery:
        if not isinstance(op, dict) or op.get("op") not in REPLAY:
            name = op.get("op") if isinstance(op, dict) else type(op).__name__
            raise ModelError(f"checkpoint uses unknown edit {name!r}; known: {', '.join(sorted(REPLAY))}")
        model = REPLAY[op["op"]](model, op, data_config)
    return model
