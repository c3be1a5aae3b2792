"""Model specs: the short strings that name a network (``timm:resnet50``, ``torchvision:resnet34``,
``builtin``, ``pkg.module:factory``), resolved to the network plus the input it expects.

Why it exists: the CLI, the NNCF runner and the benchmarks all take models as such strings; one resolver
keeps their behaviour and error messages identical. Checkpoint paths are handled by
:mod:`~practise_plugin.models.loading`, which sits above the checkpoint reader.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ModelError
from ..core.inputs import DataConfig
from . import SPEC_FORMS, builtin
from .bundle import ModelBundle

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CONFIG = DataConfig((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875)


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
    kwargs: dict = {} if num_classes is None else {"num_classes": num_classes}
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
        kwargs["weights_backbone"] = None  # detection/segmentation builders would download a backbone otherwise
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    size = int(getattr(model, "image_size", None) or (299 if name == "inception_v3" else 224))
    dc = DataConfig((3, size, size), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875)
    return ModelBundle(model, dc, f"torchvision:{name}", num_classes or getattr(model, "num_classes", None) or 1000)


def _builtin(name: str) -> ModelBundle:
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


SAFE_PREFIXES = ("builtin:", "timm:", "torchvision:", "timm-features:")


def is_safe_spec(spec: str) -> bool:
    """Whether building ``spec`` runs only this package's and its dependencies' own model constructors:
    ``builtin``, ``builtin:NAME``, ``timm:NAME`` or ``torchvision:NAME`` (not ``package.module:function``,
    which imports and calls whatever it names)."""
    return spec == "builtin" or (spec.startswith(SAFE_PREFIXES) and "/" not in spec)


def _submodule(spec: str, num_classes: int | None) -> ModelBundle:
    """``SPEC#PATH``: the module at PATH of the model SPEC names, e.g. a detector's backbone."""
    base, _, path = spec.partition("#")
    whole = resolve_spec(base, num_classes)
    try:
        module = whole.model.get_submodule(path)
    except AttributeError as e:
        names = ", ".join(n for n, _ in whole.model.named_children())
        raise ModelError(f"{base} has no module {path!r}; its top-level modules: {names}") from e
    return ModelBundle(module, whole.data_config, spec, None, whole.pretrained, dict(whole.meta))


def _timm_features(name: str) -> ModelBundle:
    """timm's ``features_only`` network: the model's feature maps at every reduction, as a list."""
    import timm

    whole = _timm(name, None)
    model = timm.create_model(name, pretrained=False, features_only=True)
    return ModelBundle(model, whole.data_config, f"timm-features:{name}", None)


def resolve_spec(spec: str, num_classes: int | None = None) -> ModelBundle:
    """Build the model a (non-file) spec names: ``builtin[:NAME]``, ``timm:NAME``, ``torchvision:NAME``,
    ``timm-features:NAME`` (timm's features_only backbone), any of these with ``#PATH`` (a submodule, e.g.
    ``torchvision:fasterrcnn_resnet50_fpn#backbone``), or ``package.module:function`` (the last imports and
    calls code: callers that read specs from files check :func:`is_safe_spec` first)."""
    if "#" in spec:
        return _submodule(spec, num_classes)
    if spec.startswith("timm-features:"):
        return _timm_features(spec[len("timm-features:"):])
    if spec == "builtin" or spec.startswith("builtin:"):
        return _builtin(spec.partition(":")[2] or "fmnist_resnet34q")
    if spec.startswith("timm:"):
        return _timm(spec[5:], num_classes)
    if spec.startswith("torchvision:"):
        return _torchvision(spec[12:], num_classes)
    if ":" in spec:
        return _factory(spec, num_classes)
    raise ModelError(f"cannot resolve model {spec!r}; accepted forms: {SPEC_FORMS}")


def load_weights(model: nn.Module, path: Path) -> None:
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
