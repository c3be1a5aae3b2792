"""Save and load compressed models without pickling code.

Why it exists: ``torch.save(model)`` needs ``weights_only=False`` to load (arbitrary code: trusted files
only), and a pruned model no longer fits its original class's state dict. We store *how to rebuild it*:
the base model spec, the list of structural edits ("surgery": dropped blocks, Torch-Pruning history),
and the state dict. Loading rebuilds the base model, replays the edits (:mod:`practise_plugin.surgery.log`)
and loads the weights, all with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import ModelError
from ..core.files import atomic_torch_save
from ..core.inputs import DataConfig
from ..surgery.log import replay_surgery
from .specs import ModelBundle, is_safe_spec, resolve_spec

FORMAT = "practise-plugin/1"
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin"}


def save_compressed(
    path: str | Path, model: nn.Module, base_spec: str, data_config: DataConfig,
    surgery: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint that :func:`load_compressed` (and ``--model PATH``) can rebuild."""
    if not isinstance(base_spec, str) or base_spec in ("", "module"):
        raise ModelError("cannot save a model built from an in-memory module: pass a spec (timm:..., pkg.mod:fn)")
    if Path(base_spec).suffix in CHECKPOINT_SUFFIXES:
        raise ModelError(f"the base of a checkpoint must be a model spec, not the file {base_spec!r}; pass the "
                         "checkpoint's own base spec (bundle.meta['base_spec'])")
    path = Path(path)
    atomic_torch_save({
        "format": FORMAT, "base_spec": base_spec, "data_config": data_config.to_dict(),
        "surgery": list(surgery or []), "meta": dict(meta or {}), "state_dict": model.state_dict(),
    }, path)
    return path


def _check_record(path: Path, ckpt: object, trust_code: bool) -> dict[str, Any]:
    """The checkpoint's fields, each of the type it must have, before any of them is used; the base model
    must be named in a safe form unless ``trust_code``."""
    def bad(what: str) -> ModelError:
        return ModelError(f"{path} is not a usable practise checkpoint: {what}. Re-save it with practise "
                          "(save_compressed / practise compress); for a plain state_dict use --model ARCH --weights PATH")

    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a practise checkpoint; for a plain state_dict use --model ARCH --weights PATH")
    missing = [k for k in ("base_spec", "data_config", "surgery", "meta", "state_dict") if k not in ckpt]
    if missing:
        raise bad(f"it lacks {', '.join(missing)}")
    base = ckpt["base_spec"]
    if not isinstance(base, str) or not base:
        raise bad("base_spec is not a model spec string")
    if Path(base).suffix in CHECKPOINT_SUFFIXES or "/" in base or base.startswith("."):
        raise bad(f"its base model {base!r} is a file; a checkpoint's base must be builtin, timm:NAME or "
                  "torchvision:NAME")
    if not is_safe_spec(base) and not trust_code:
        raise ModelError(
            f"{path} names its base model as {base!r}, which would import and run that code to rebuild it. "
            "Load it only if you trust the file: pass trust_code=True (CLI: --trust-code)"
        )
    dc = ckpt["data_config"]
    if not isinstance(dc, dict):
        raise bad("data_config is not a mapping")
    try:
        data_config = DataConfig.from_dict(dc)
        ok = (len(data_config.input_size) == 3 and all(isinstance(v, int) and v > 0 for v in data_config.input_size)
              and all(isinstance(v, (int, float)) for v in (*data_config.mean, *data_config.std, data_config.crop_pct)))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise bad("data_config is not {input_size: [C, H, W], mean: [...], std: [...]}")
    surgery = ckpt["surgery"]
    if not isinstance(surgery, list) or not all(isinstance(op, dict) and isinstance(op.get("op"), str) for op in surgery):
        raise bad('surgery is not a list of {"op": ...} records')
    if not isinstance(ckpt["meta"], dict):
        raise bad("meta is not a mapping")
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise bad("state_dict is not a mapping of names to tensors")
    return {**ckpt, "data_config": data_config}


def load_compressed(path: str | Path, *, trust_code: bool = False) -> ModelBundle:
    """Rebuild a model saved by :func:`save_compressed`. The file is read with ``weights_only=True`` (no
    code is unpickled), its fields are checked, and a base model named as ``package.module:function`` is
    refused unless ``trust_code=True``: nothing is imported before that check."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelError(
            f"{path} is not a practise checkpoint readable with weights_only=True ({e.__class__.__name__}). "
            "For a plain state_dict use --model ARCH --weights PATH."
        ) from e
    ckpt = _check_record(path, raw, trust_code)
    base = resolve_spec(ckpt["base_spec"])
    dc = ckpt["data_config"]
    model = replay_surgery(base.model, ckpt["surgery"], dc)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ModelError(f"weights in {path} do not fit the rebuilt model: {str(e).splitlines()[0]}") from e
    return ModelBundle(model.eval(), dc, str(path), base.num_classes, True,
                       {**ckpt["meta"], "base_spec": ckpt["base_spec"], "surgery": ckpt["surgery"]})
