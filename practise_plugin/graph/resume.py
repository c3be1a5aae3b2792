"""Forwards that start at a module, fed with that module's inputs computed once.

Why it exists: scoring a drop candidate runs the student a dozen times over the tiny set, and the student
*is* the teacher up to the unit before the hole. Computing the teacher's input of that unit once and
starting every later pass there removes the prefix (at 224 px, the stem and the early stages) from each
of them, without changing a single value that is computed.

How, for any model: while a :class:`StartAt` is active, every module that runs before the unit (its earlier
siblings at each level of its path) answers zeros of its traced output shape instead of computing, so the
code between them still runs, on cheap values; a pre-hook on the unit then swaps whatever reaches it for
the cached batch. The module tree is left intact (only instance ``forward`` attributes are set), so hooks
placed by path still attach. This is exact only if nothing computed before the unit is used after it
(a dense connection, an FPN reading earlier stages, a module shared before and after): :func:`reproduces`
checks it once per unit against the full forward, and a unit that fails is simply run in full.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .trace import ForwardTrace, children_in_order, parent_path


def _prefix_modules(model: nn.Module, path: str, trace: ForwardTrace) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """(module, output shape) of every module that runs before ``path``: its earlier siblings at each level."""
    found = []
    child = path
    while child:
        parent = parent_path(child)
        for sibling in children_in_order(model, parent, trace):
            if trace.order[sibling] >= trace.order[child]:
                break
            if trace.calls.get(sibling) == 1 and sibling in trace.out_shape:  # shared ones run again later
                found.append((model.get_submodule(sibling), trace.out_shape[sibling]))
        child = parent
    return found


class StartAt:
    """While active (``with``), forwards of ``model`` start at module ``path``, whose input is ``batch``.

    Enter it after any change to the module at ``path`` (a dropped block is replaced): the hook goes on
    the module found there at entry. Set :attr:`batch` (``feed``) before each forward.
    """

    def __init__(self, model: nn.Module, path: str, trace: ForwardTrace, inputs: torch.Tensor) -> None:
        self.model, self.path, self.inputs = model, path, inputs
        self.prefix = _prefix_modules(model, path, trace)
        self.batch: torch.Tensor | None = None
        self._saved: list[tuple[nn.Module, object]] = []
        self._handle = None

    def feed(self, index: slice | torch.Tensor, device: str = "cpu") -> None:
        """Make the cached inputs of these images the unit's input in the next forwards."""
        self.batch = self.inputs[index].to(device)

    def __enter__(self) -> StartAt:
        for module, shape in self.prefix:
            self._saved.append((module, module.__dict__.get("forward")))
            module.forward = _zeros_like_output(shape)
        self._handle = self.model.get_submodule(self.path).register_forward_pre_hook(self._swap)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        for module, own in reversed(self._saved):
            if own is None:
                del module.forward
            else:
                module.forward = own
        self._saved = []

    def _swap(self, module: nn.Module, args: tuple) -> tuple:
        if self.batch is None:
            raise RuntimeError(f"StartAt({self.path!r}): feed() a batch before running the model")
        return (self.batch, *args[1:])


def _zeros_like_output(shape: tuple[int, ...]) -> Callable[..., torch.Tensor]:
    """A forward answering zeros of ``shape`` (batch from its input) without allocating them: a broadcast
    view of one zero, since nothing reads these values (an in-place write to it raises, and the start is
    then found inexact and not used)."""
    def forward(x: object = None, *args: object, **kwargs: object) -> torch.Tensor:
        like = x if isinstance(x, torch.Tensor) else None
        n = like.shape[0] if like is not None and like.dim() else 1
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
        zero = torch.zeros((), dtype=dtype, device=like.device if like is not None else "cpu")
        return zero.expand(n, *shape[1:])

    return forward


@torch.no_grad()
def reproduces(start: StartAt, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, expected: torch.Tensor,
               index: slice) -> bool:
    """Whether ``fn(x)`` started at the unit (fed ``index`` of its cached inputs) gives ``expected``."""
    try:
        with start:
            start.feed(index, str(x.device))
            out = fn(x).float().cpu()
    except Exception:  # noqa: BLE001 - any failure of the shortcut only means: run this unit in full
        return False
    scale = float(expected.abs().max()) or 1.0
    return out.shape == expected.shape and bool(torch.allclose(out, expected, rtol=1e-4, atol=1e-5 * scale))
