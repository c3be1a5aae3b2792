"""Apply UDFC's coefficients to real layers: pick filters, fold compensation into the next layer, quantize.

Why it exists: :mod:`closed_form` works on flat tensors; this module is the thin bridge to ``nn.Conv2d``,
``nn.BatchNorm2d`` and ``nn.Linear``. It is also the entry point for other pruners:
:func:`compensate_next_layer` lets a Torch-Pruning adapter keep its own channel selection and removal and
still get UDFC's (or Neuron Merging's) data-free compensation before the channels disappear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError
from .closed_form import merge_coefficients, prune_coefficients, quant_scales, quantize_symmetric
from .config import A1, A2

Method = Literal["udfc", "nm", "prune"]
Criterion = Literal["l1", "l2"]
BatchNorms = nn.modules.batchnorm._BatchNorm


def channel_affine(layer: nn.Module, bn: BatchNorms | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, K)`` with pre-activation ``y_n = a_n * (W_n * x) + K_n`` (BN in eval mode, conv bias folded)."""
    w = layer.weight.detach()
    bias = layer.bias.detach() if getattr(layer, "bias", None) is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    if bn is None:
        return torch.ones_like(bias), bias.clone()
    if bn.running_var is None:
        raise ModelError("UDFC needs BatchNorm running statistics (track_running_stats=True)")
    a = 1.0 / torch.sqrt(bn.running_var.detach() + bn.eps)
    shift = torch.zeros_like(a)
    if bn.affine:
        a = a * bn.weight.detach()
        shift = bn.bias.detach().clone()
    return a, shift + a * (bias - bn.running_mean.detach())


def select_filters(weight: torch.Tensor, ratio: float, criterion: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pruned, kept)`` indices: the ``round(ratio * N)`` filters of smallest l1/l2 norm (ties: lower index
    first), always leaving at least one filter."""
    if criterion not in ("l1", "l2"):
        raise ConfigError(f"criterion must be 'l1' or 'l2', got {criterion!r}")
    n = weight.shape[0]
    k = min(int(math.floor(ratio * n + 0.5)), n - 1)
    norms = weight.detach().reshape(n, -1).norm(p=1 if criterion == "l1" else 2, dim=1)
    order = torch.argsort(norms, stable=True)
    return order[:k].sort().values, order[k:].sort().values


def _as_index(idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor([int(getattr(i, "idx", i)) for i in idx] if not isinstance(idx, torch.Tensor) else idx,
                           dtype=torch.long)


def coefficients(
    layer: nn.Module, bn: BatchNorms | None, pruned: torch.Tensor, kept: torch.Tensor,
    method: Method = "udfc", a1: float = A1, nm_threshold: float = 0.0,
) -> tuple[torch.Tensor, str]:
    """``(S, solver)``: the (n_pruned, n_kept) coefficients of ``method`` for these filters of ``layer``."""
    a, K = channel_affine(layer, bn)
    R = a.unsqueeze(1) * layer.weight.detach().reshape(layer.weight.shape[0], -1)
    if method == "udfc":
        return prune_coefficients(R[kept], K[kept], R[pruned], K[pruned], a[pruned], a1)
    if method == "nm":
        return merge_coefficients(R[kept], R[pruned], nm_threshold), "merge"
    if method == "prune":
        return R.new_zeros((len(pruned), len(kept))), "none"
    raise ConfigError(f"method must be 'udfc', 'nm' or 'prune', got {method!r}")


def _channel_view(next_layer: nn.Module, width: int) -> torch.Tensor:
    """The consumer's weight as (out, channels of the producer, rest): a flatten before a Linear makes
    each producer channel a contiguous block of input features."""
    w = next_layer.weight.data
    if w.shape[1] % width:
        raise ModelError(f"{type(next_layer).__name__} reads {w.shape[1]} features, not a multiple of {width} channels")
    return w.view(w.shape[0], width, -1)


@torch.no_grad()
def absorb(next_layer: nn.Module, S: torch.Tensor, pruned: torch.Tensor, kept: torch.Tensor, width: int) -> None:
    """``W'[:, i] = W[:, i] + sum_j S[j, i] * W[:, j]`` for every kept i (pruned slices are left as they are:
    they are removed afterwards)."""
    W = _channel_view(next_layer, width)
    W[:, kept] += torch.einsum("ojr,ji->oir", W[:, pruned], S.to(W.dtype))


def compensate_next_layer(
    conv: nn.Module, bn: BatchNorms | None, next_layer: nn.Module, pruned: Sequence[int] | torch.Tensor,
    kept: Sequence[int] | torch.Tensor | None = None, a1: float = A1, *, method: Method = "udfc",
    nm_threshold: float = 0.0,
) -> torch.Tensor:
    """Fold the information of ``conv``'s ``pruned`` filters into ``next_layer``'s kept input slices, in place.

    ``kept`` defaults to every other filter. Removing the channels is the caller's job (Torch-Pruning, or
    :func:`practise_plugin.surgery.channel_removal.remove_channels`), *after* this call. Returns the coefficients
    (n_pruned, n_kept). ``next_layer`` is a Conv2d or, after a flatten, a Linear.
    """
    width = conv.weight.shape[0]
    pruned_t = _as_index(pruned)
    kept_t = _as_index(kept) if kept is not None else torch.tensor(
        sorted(set(range(width)) - set(pruned_t.tolist())), dtype=torch.long)
    if len(set(pruned_t.tolist()) & set(kept_t.tolist())):
        raise ConfigError("a channel cannot be both pruned and kept")
    S, _ = coefficients(conv, bn, pruned_t, kept_t, method, a1, nm_threshold)
    absorb(next_layer, S, pruned_t, kept_t, width)
    return S


@torch.no_grad()
def quantize_layer(layer: nn.Module, bn: BatchNorms | None, bits: int, a2: float = A2) -> torch.Tensor:
    """Replace ``layer.weight`` by its ``bits``-bit version; return the per-channel compensation scales s~."""
    a, K = channel_affine(layer, bn)
    W = layer.weight.data
    Wq = quantize_symmetric(W, bits)
    n = W.shape[0]
    scales = quant_scales(a.unsqueeze(1) * W.reshape(n, -1), a.unsqueeze(1) * Wq.reshape(n, -1), K, a2)
    W.copy_(Wq)
    return scales


@torch.no_grad()
def scale_input_channels(next_layer: nn.Module, scales: torch.Tensor) -> None:
    """Multiply the consumer's input slice of each producer channel m by ``scales[m]``."""
    W = _channel_view(next_layer, len(scales))
    W.mul_(scales.to(W.dtype).view(1, -1, 1))


@torch.no_grad()
def scale_batchnorm(bn: BatchNorms, scales: torch.Tensor) -> bool:
    """Scale a BN's output per channel (gamma and beta), so the channel's pre-activation becomes
    ``s~ * y~`` whatever reads it: the target when there is no single consumer to absorb the scale (a
    residual add, several readers, a depthwise conv). False if the BN has no affine parameters."""
    if not bn.affine:
        return False
    bn.weight.mul_(scales.to(bn.weight.dtype))
    bn.bias.mul_(scales.to(bn.bias.dtype))
    return True
