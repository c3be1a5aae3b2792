"""Pre-pooling features: what the student mimics and what recoverability is measured on.

Why it exists: PRACTISE (like MiR) matches the teacher's last feature map *before* global pooling,
which carries far more signal per image than logits, and needs no labels. Where that map is depends on
the model: timm models expose ``forward_features``; for others we take the output of the last top-level
child that still returns a spatial map (N, C, H, W with H*W > 1) or a token sequence (N, T, C). The
point is chosen once on the teacher and applied by module path to students, whose top-level layout the
block surgery preserves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ModelError


@dataclass(frozen=True)
class FeaturePoint:
    """``kind`` is "forward_features" or "module" (then ``path`` names the top-level child)."""

    kind: str
    path: str = ""

    def describe(self) -> str:
        return "model.forward_features(x)" if self.kind == "forward_features" else f"output of {self.path}"


class _Stop(Exception):
    """Raised by a hook to end the forward once the feature map is known (the head is never run)."""


def find_feature_point(model: nn.Module, example_input: torch.Tensor) -> FeaturePoint:
    """Choose where the pre-pooling feature map of ``model`` is taken."""
    if callable(getattr(model, "forward_features", None)):
        with torch.no_grad():
            out = model.forward_features(example_input)
        if isinstance(out, torch.Tensor) and out.ndim in (3, 4):
            return FeaturePoint("forward_features")
    outs: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    handles = []
    for name, child in model.named_children():
        def hook(mod, args, out, name=name):
            if isinstance(out, torch.Tensor):
                outs[name] = tuple(out.shape)
                order.append(name)
        handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    spatial = [n for n in order if (len(outs[n]) == 4 and outs[n][2] * outs[n][3] > 1) or len(outs[n]) == 3]
    if not spatial:
        raise ModelError(
            f"cannot find a pre-pooling feature map in {type(model).__name__}: no top-level child returns "
            "(N, C, H, W) or (N, T, C); give the model a forward_features(x) method"
        )
    return FeaturePoint("module", spatial[-1])


def capture(model: nn.Module, path: str, fn: Callable[[torch.Tensor], object], x: torch.Tensor, *,
            output: bool = True) -> torch.Tensor:
    """The output (or first input) of module ``path`` when ``fn(x)`` runs ``model``; the forward stops
    right there, so nothing after that module is computed."""
    box: list[torch.Tensor] = []

    def keep(value: torch.Tensor) -> None:
        box.append(value)
        raise _Stop

    module = model.get_submodule(path)
    if output:
        h = module.register_forward_hook(lambda mod, args, out: keep(out))
    else:
        h = module.register_forward_pre_hook(lambda mod, args: keep(args[0]))
    try:
        fn(x)
    except _Stop:
        pass
    finally:
        h.remove()
    if not box:
        raise ModelError(f"{path} did not run in the forward pass of {type(model).__name__}")
    return box[0]


def feature_fn(model: nn.Module, point: FeaturePoint) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x -> pre-pooling features of ``model`` (differentiable; the head is not computed)."""
    if point.kind == "forward_features":
        return model.forward_features
    return lambda x: capture(model, point.path, model, x)


@torch.no_grad()
def collect_features(model: nn.Module, point: FeaturePoint, images: torch.Tensor, batch_size: int = 128,
                     device: str = "cpu") -> torch.Tensor:
    """Features of ``images`` in eval mode, on CPU (the teacher's targets, computed once)."""
    was_training = model.training
    model.eval()
    fn = feature_fn(model, point)
    out = [fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def feature_mse(student_feats: torch.Tensor, teacher_feats: torch.Tensor) -> float:
    """Mean squared error over all elements: the recoverability and mimicking measure."""
    return float(torch.mean((student_feats - teacher_feats) ** 2))
