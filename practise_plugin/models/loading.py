"""``load_model``: any model a user can name (a spec, a checkpoint path, a module, a bundle), in eval mode.

Why it exists: every entry point (API, CLI, NNCF runner, benchmarks) accepts the same model arguments and
must treat them alike: resolve the spec or read the checkpoint, load user weights, set the input size,
and warn when a hub architecture is randomly initialised.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from ..core.errors import ModelError
from . import SPEC_FORMS
from .checkpoint import CHECKPOINT_SUFFIXES, load_compressed
from .specs import IMAGENET_CONFIG, ModelBundle, load_weights, resolve_spec


def load_model(
    spec: str | Path | nn.Module | ModelBundle,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int, int] | None = None,
    trust_code: bool = False,
) -> ModelBundle:
    """Build the model named by ``spec`` in eval mode.

    ``weights`` loads a state dict (``weights_only=True``) onto it, the way to bring your own trained
    weights to a timm/torchvision architecture. ``input_size`` overrides the (C, H, W) it is fed with.
    A checkpoint whose base model is ``package.module:function`` loads only with ``trust_code=True``.
    """
    if isinstance(spec, Path):
        spec = str(spec)
    built = isinstance(spec, str)  # a bundle or module passed in was already warned about, if at all
    if isinstance(spec, ModelBundle):
        bundle = spec
    elif isinstance(spec, nn.Module):
        bundle = ModelBundle(spec, IMAGENET_CONFIG, "module", getattr(spec, "num_classes", None))
    elif not isinstance(spec, str) or not spec:
        raise ModelError(f"model spec must be a non-empty string; accepted forms: {SPEC_FORMS}")
    elif Path(spec).suffix in CHECKPOINT_SUFFIXES or Path(spec).exists():
        bundle = load_compressed(spec, trust_code=trust_code)
    else:
        bundle = resolve_spec(spec, num_classes)
    if weights is not None:
        load_weights(bundle.model, Path(weights))
        bundle.pretrained = True
    if input_size is not None:
        bundle.data_config = bundle.data_config.with_input_size(tuple(input_size))
    if built and not bundle.pretrained and bundle.spec.split(":")[0] in {"timm", "torchvision", "timm-features"}:
        warnings.warn(
            f"{bundle.spec} is randomly initialised (model hubs are not used); pass weights=... / --weights "
            "to compress a trained network", stacklevel=2,
        )
    bundle.model.eval()
    return bundle
