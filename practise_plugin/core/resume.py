"""Resumable training state: one checkpoint file per run identity, written atomically, read back only by
the same run.

Why it exists: recovery and SWD training both run for minutes to hours and must survive an
interruption, resuming to exactly the weights an uninterrupted run reaches. Both need the same three
things: a fingerprint of what the state depends on (options, data, model shape), an atomic write every N
steps, and a load that refuses state written by another run. The fingerprint is part of the file name, so
runs with other options never meet each other's state; the work-directory lock
(:func:`~practise_plugin.core.files.work_dir_lock`) keeps two live runs apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .errors import TrainingError
from .files import atomic_torch_save

log = logging.getLogger("practise_plugin")
FORMAT = "practise-plugin/train-state/1"


def fingerprint(**parts: Any) -> str:
    """A stable hash of ``parts``: JSON values, tensors (by shape, dtype and a checksum) and modules
    (by their parameter and buffer shapes)."""

    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            return {"shape": list(t.shape), "dtype": str(t.dtype), "sum": float(t.double().sum())}
        if isinstance(v, torch.nn.Module):
            return [[k, list(t.shape)] for k, t in v.state_dict().items()]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    blob = json.dumps(plain(parts), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class TrainState:
    """The checkpoint of one run ``kind`` in ``work_dir`` (None: no checkpoints, nothing to resume)."""

    def __init__(self, work_dir: Path | str | None, kind: str, **identity: Any) -> None:
        self.kind = kind
        self.fingerprint = fingerprint(kind=kind, **identity)
        self.path = None if work_dir is None else Path(work_dir) / f"{kind}-{self.fingerprint[:16]}.pt"

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The saved state, or None when there is none; a damaged or foreign file is an error naming it."""
        if self.path is None or not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
            raise TrainingError(f"cannot read the training checkpoint {self.path} ({e.__class__.__name__}); "
                                "delete it to start again") from e
        if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("fingerprint") != self.fingerprint:
            raise TrainingError(f"{self.path} is not a checkpoint of this {self.kind} run; delete it to start again")
        log.info("resuming %s from step %d (checkpoint %s)", self.kind, saved["step"], self.path)
        return saved["state"] | {"step": int(saved["step"])}

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the state (rank 0 only under torchrun: every rank holds the same one)."""
        if self.path is not None and distributed.is_main():
            atomic_torch_save({"format": FORMAT, "fingerprint": self.fingerprint, "step": step, "state": state},
                              self.path)

    def clear(self) -> None:
        if self.path is not None and distributed.is_main() and self.path.exists():
            self.path.unlink()
