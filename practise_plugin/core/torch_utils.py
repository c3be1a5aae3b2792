"""Small torch helpers every layer uses: eval mode and thread counts held for a block, the seeded example
input, model copies, parameter counts, the first tensor of a model's output.

Why it exists: each of these was written several times (parameter counting five times, the seeded input
twice); one definition keeps their behaviour identical, e.g. every backend times the same input tensor.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .errors import ModelError


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the duration of the block, then restore each module's own flag."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count (None: leave it) for the block, then restore the caller's."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def example_input(input_size: Sequence[int], batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """The fixed, seeded input that tracing, MAC counting and every latency backend use."""
    return torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(seed))


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``, even one holding tensors computed from its parameters.

    Why: models cache tensors derived from their weights in eval mode (timm's EfficientFormer keeps its
    attention biases in a dict after the first forward); such a tensor is not a graph leaf and
    ``copy.deepcopy`` refuses it. The copy gets detached clones of those caches (the model recomputes or
    reuses them; their values are the same) and plain deep copies of everything else.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for name, value in vars(module).items():
            if name in ("_parameters", "_buffers", "_modules"):
                continue
            held = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            for t in held:
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def first_tensor(out: object) -> torch.Tensor:
    """The first tensor of a model output (a tensor, or a dict/list/tuple holding tensors)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise ModelError(f"the model returned {type(out).__name__} without a tensor; give a module that returns its logits")


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device
