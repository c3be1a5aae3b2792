"""Save and load compressed models without pickling code.

Why it exists: ``torch.save(model)`` needs ``weights_only=False`` to load (arbitrary code: trusted files
only), and a pruned model no longer fits its original class's state dict. We store *how to rebuild it*:
the base model spec, the list of structural edits ("surgery": dropped blocks, Torch-Pruning history),
and the state dict. Loading rebuilds the base model, replays the edits and loads the weights, all with
``weights_only=True``. Each edit kind registers its replay function here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import DataConfig
from .errors import ModelError
from .io import atomic_torch_save

FORMAT = "practise-plugin/1"
SurgeryFn = Callable[[nn.Module, dict[str, Any], DataConfig], nn.Module]
_SURGERY: dict[str, SurgeryFn] = {}


def register_surgery(op: str) -> Callable[[SurgeryFn], SurgeryFn]:
    """Decorator: ``fn(model, op_dict, data_config) -> model`` replays a structural edit named ``op``."""

    def deco(fn: SurgeryFn) -> SurgeryFn:
        _SURGERY[op] = fn
        return fn

    return deco


def replay_surgery(model: nn.Module, surgery: list[dict[str, Any]], data_config: DataConfig) -> nn.Module:
    from . import channels, drop  # noqa: F401 - importing registers their replay functions

    for op in surgery:
        if op.get("op") not in _SURGERY:
            raise ModelError(f"checkpoint uses unknown edit {op.get('op')!r}; known: {', '.join(sorted(_SURGERY))}")
        model = _SURGERY[op["op"]](model, op, data_config)
    return model


def save_compressed(
    path: str | Path, model: nn.Module, base_spec: str, data_config: DataConfig,
    surgery: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint that :func:`load_compressed` (and ``--model PATH``) can rebuild."""
    if base_spec in (None, "module"):
        raise ModelError("cannot save a model built from an in-memory module: pass a spec (timm:..., pkg.mod:fn)")
    path = Path(path)
    atomic_torch_save({
        "format": FORMAT, "base_spec": base_spec, "data_config": data_config.to_dict(),
        "surgery": list(surgery or []), "meta": dict(meta or {}), "state_dict": model.state_dict(),
    }, path)
    return path


def load_compressed(path: str | Path):
    """Rebuild a model saved by :func:`save_compressed` (``weights_only=True``: no code is unpickled)."""
    from .models import ModelBundle, load_model

    path = Path(path)
    if not path.exists():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"{path} is not a practise checkpoint readable with weights_only=True ({e.__class__.__name__}). "
            "For a plain state_dict use --model ARCH --weights PATH."
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a practise checkpoint; for a plain state_dict use --model ARCH --weights PATH")
    base = load_model(ckpt["base_spec"])
    dc = DataConfig.from_dict(ckpt["data_config"])
    model = replay_surgery(base.model, ckpt["surgery"], dc)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ModelError(f"weights in {path} do not fit the rebuilt model: {str(e).splitlines()[0]}") from e
    return ModelBundle(model.eval(), dc, str(path), base.num_classes, True,
                       {**ckpt["meta"], "base_spec": ckpt["base_spec"], "surgery": ckpt["surgery"]})
