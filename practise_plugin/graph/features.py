"""Pre-pooling features: what the student mimics and what recoverability is measured on.

Why it exists: PRACTISE (like MiR) matches the teacher's last feature map *before* global pooling,
which carries far more signal per image than logits, and needs no labels. Where that map is depends on
the model: timm models expose ``forward_features``; a backbone (a detector's FPN, timm ``features_only``)
returns its feature maps as its output, and all of them are mimicked; otherwise the output of the last
top-level child that returns a map (N, C, H, W, of any size: 1 x 1 at 32 px is still the pre-pooling map)
or a token sequence (N, T, C), pooling and classifier excluded. Users can name the point themselves. It
is chosen once on the teacher and applied by module path to students, whose layout block surgery keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ModelError

HEAD_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Linear, nn.Dropout)
HEAD_CLASS_NAMES = {"SelectAdaptivePool2d", "ClassifierHead", "NormMlpClassifierHead"}


@dataclass(frozen=True)
class FeaturePoint:
    """``kind``: "forward_features", "module" (the output of ``paths[0]``), "modules" (the outputs of every
    module in ``paths``, flattened and joined) or "output" (everything the model returns, joined)."""

    kind: str
    paths: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return self.paths[0] if self.paths else ""

    def describe(self) -> str:
        if self.kind == "forward_features":
            return "model.forward_features(x)"
        if self.kind == "output":
            return "every output of the model"
        return "output of " + ", ".join(self.paths)


class _Stop(Exception):
    """Raised by a hook to end the forward once what it waits for is known (what follows never runs).

    Each capture raises its own instance and catches only that one: captures nest (a feature function
    that stops at the feature map, called inside a capture that stops earlier), and the inner one must
    let the outer one's stop pass."""


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for v in values for t in _tensors(v)]


def _joined(outs: list[torch.Tensor]) -> torch.Tensor:
    return outs[0] if len(outs) == 1 else torch.cat([o.flatten(1) for o in outs], 1)


def _is_head(m: nn.Module) -> bool:
    return isinstance(m, HEAD_TYPES) or type(m).__name__ in HEAD_CLASS_NAMES


def find_feature_point(model: nn.Module, example_input: torch.Tensor,
                       paths: tuple[str, ...] | list[str] = ()) -> FeaturePoint:
    """Choose where the pre-pooling feature map of ``model`` is taken (``paths``: the user's choice:
    module paths, or ``("output",)`` for the model's whole output)."""
    if paths:
        return _chosen(model, example_input, tuple(paths))
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
            result = model(example_input)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(result, torch.Tensor) and len(_tensors(result)) >= 1:
        return FeaturePoint("output")  # a backbone: its feature maps are its outputs
    maps = [n for n in order if len(outs[n]) in (3, 4) and not _is_head(model.get_submodule(n))]
    if not maps:
        raise ModelError(
            f"cannot find a pre-pooling feature map in {type(model).__name__}: no top-level child before the head "
            "returns (N, C, H, W) or (N, T, C); name one with feature_point=PATH (--feature-point PATH), or give "
            "the model a forward_features(x) method"
        )
    return FeaturePoint("module", (maps[-1],))


def _chosen(model: nn.Module, example_input: torch.Tensor, paths: tuple[str, ...]) -> FeaturePoint:
    if paths == ("output",):
        return FeaturePoint("output")
    missing = []
    for p in paths:
        try:
            model.get_submodule(p)
        except AttributeError:
            missing.append(p)
    if missing:
        names = [n for n, _ in model.named_children()]
        raise ModelError(f"feature point {', '.join(missing)} is not a module of {type(model).__name__}; top-level "
                         f"modules: {', '.join(names)} (or 'output' for everything the model returns)")
    point = FeaturePoint("module" if len(paths) == 1 else "modules", paths)
    with torch.no_grad():
        feature_fn(model, point)(example_input)  # every named module must run and return tensors
    return point


def capture(model: nn.Module, path: str, fn: Callable[[torch.Tensor], object], x: torch.Tensor, *,
            output: bool = True) -> torch.Tensor:
    """The output (or first input) of module ``path`` when ``fn(x)`` runs ``model``; the forward stops
    right there, so nothing after that module is computed."""
    return capture_many(model, [path], fn, x, output=output)[0]


def capture_many(model: nn.Module, paths: list[str], fn: Callable[[torch.Tensor], object], x: torch.Tensor, *,
                 output: bool = True) -> list[torch.Tensor]:
    """The outputs (or first inputs) of the modules ``paths``, from one forward that stops once all have run."""
    got: dict[int, torch.Tensor] = {}
    stop = _Stop()

    def keep(i: int, value: torch.Tensor) -> None:
        got.setdefault(i, value)
        if len(got) == len(paths):
            raise stop

    handles = []
    for i, path in enumerate(paths):
        module = model.get_submodule(path)
        if output:
            handles.append(module.register_forward_hook(lambda mod, args, out, i=i: keep(i, out)))
        else:
            handles.append(module.register_forward_pre_hook(lambda mod, args, i=i: keep(i, args[0])))
    try:
        fn(x)
    except _Stop as e:
        if e is not stop:
            raise
    finally:
        for h in handles:
            h.remove()
    if len(got) != len(paths):
        lost = [p for i, p in enumerate(paths) if i not in got]
        raise ModelError(f"{', '.join(lost)} did not run in the forward pass of {type(model).__name__}")
    return [got[i] for i in range(len(paths))]


def feature_fn(model: nn.Module, point: FeaturePoint) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x -> features of ``model`` at ``point`` (differentiable; what follows is not computed)."""
    if point.kind == "forward_features":
        return model.forward_features
    if point.kind == "output":
        return lambda x: _joined(_tensors(model(x)))
    if point.kind == "module":
        return lambda x: capture(model, point.path, model, x)
    modules = [model.get_submodule(p) for p in point.paths]

    def run(x: torch.Tensor) -> torch.Tensor:
        got: dict[int, torch.Tensor] = {}
        stop = _Stop()

        def keep(i: int, out: object) -> None:
            got[i] = _joined(_tensors(out))
            if len(got) == len(modules):
                raise stop

        handles = [m.register_forward_hook(lambda mod, a, out, i=i: keep(i, out)) for i, m in enumerate(modules)]
        try:
            model(x)
        except _Stop as e:
            if e is not stop:
                raise
        finally:
            for h in handles:
                h.remove()
        if len(got) != len(modules):
            lost = [p for i, p in enumerate(point.paths) if i not in got]
            raise ModelError(f"{', '.join(lost)} did not run in the forward pass of {type(model).__name__}")
        return _joined([got[i] for i in range(len(modules))])

    return run


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
