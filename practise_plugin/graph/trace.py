"""What one forward pass shows: which modules ran, in which order, how often, on which shapes.

Why it exists: the structure of a model (its module tree) does not say in which order children run, nor
which shapes they see; block discovery, adaptor placement and the feature point all need that, from one
hooked forward pass.
"""

from __future__ import annotations

import inspect
import itertools
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ForwardTrace:
    """What one forward pass showed: execution order, call counts, shapes and tensor identities."""

    order: dict[str, int]
    calls: dict[str, int]
    in_shape: dict[str, tuple[int, ...]]
    out_shape: dict[str, tuple[int, ...]]
    in_id: dict[str, int]  # which tensor: equal numbers, the same tensor (or a view of it at the same address)
    out_id: dict[str, int]
    none_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # optional arguments left None, per module


def trace_forward(model: nn.Module, example_input: torch.Tensor, fn=None) -> ForwardTrace:
    """Run ``fn(model, x)`` (default ``model(x)``) once under hooks on every module."""
    t = ForwardTrace({}, {}, {}, {}, {}, {})
    handles = []
    seen: dict[int, tuple[weakref.ref, int]] = {}  # address -> (the tensor last seen there, its number)
    numbers = itertools.count()

    def identity(x: torch.Tensor) -> int:
        """A number per tensor. An address alone is not one: once a tensor is freed, the allocator hands its
        memory to a later one, and two readers of different tensors (a ViT's norm2 output and the next
        block's norm1 output) looked like readers of one. A live tensor at that address shares its storage."""
        last = seen.get(x.data_ptr())
        if last is not None and last[0]() is not None:
            return last[1]
        number = next(numbers)
        seen[x.data_ptr()] = (weakref.ref(x), number)
        return number

    def first_tensor(args):
        for a in args:
            if isinstance(a, torch.Tensor):
                return a
        return None

    def pre(name):
        def hook(mod, args, kwargs):
            if name not in t.order:
                t.none_args[name] = _none_args(mod, args, kwargs)
            t.order.setdefault(name, len(t.order))
            t.calls[name] = t.calls.get(name, 0) + 1
            x = first_tensor(args)
            if x is not None:
                t.in_shape.setdefault(name, tuple(x.shape))
                t.in_id.setdefault(name, identity(x))
        return hook

    def post(name):
        def hook(mod, args, out):
            if isinstance(out, torch.Tensor):
                t.out_shape.setdefault(name, tuple(out.shape))
                t.out_id.setdefault(name, identity(out))
        return hook

    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(m.register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            (fn or (lambda m, x: m(x)))(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return t


def _none_args(module: nn.Module, args: tuple, kwargs: dict) -> tuple[str, ...]:
    """Names of ``module.forward``'s optional parameters after the first that this call left None."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return ()
    out = []
    for i, p in enumerate(params[1:], start=1):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not None:
            continue
        value = args[i] if i < len(args) else kwargs.get(p.name)
        if value is None:
            out.append(p.name)
    return tuple(out)


def parent_path(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def children_in_order(model: nn.Module, path: str, trace: ForwardTrace) -> list[str]:
    """Executed children of the module at ``path``, in execution order."""
    parent = model.get_submodule(path) if path else model
    names = [f"{path}.{n}" if path else n for n, _ in parent.named_children()]
    return sorted((n for n in names if n in trace.order), key=trace.order.__getitem__)
