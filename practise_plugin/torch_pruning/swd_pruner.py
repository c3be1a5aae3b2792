"""``SWDPruner``: Selective Weight Decay in Torch-Pruning's sparse-training shape.

Why it exists: Torch-Pruning's training-time pruners expose ``pruner.regularize(model)`` (after
``loss.backward()``) and ``pruner.step()`` (the prune). SWD (Tessier et al., 2022; :mod:`practise_plugin.swd`)
fits that shape exactly: at every batch, decay, with a strength ``a(t)`` that grows from ``a_min`` to ``a_max``
(:func:`~practise_plugin.swd.swd_strength`), the weights that the prune would remove *now*, so that by the
end they are ~0 and the one hard prune barely changes the network.

"What the prune would remove now" is Torch-Pruning's own decision: this pruner asks its ``BasePruner``
machinery (importance, ratios, global ranking, ``round_to``, ``ignored_layers``) which groups and indices the
next ``step()`` would remove, and decays every parameter slice of those groups: filters and biases, BatchNorm
scales and shifts, and the next layers' input slices, as :class:`~practise_plugin.swd.ChannelCriterion` does
(the reference code's ``structuredF`` mode: decaying BatchNorm alone lets the next layer's weights grow back). The gradient is added in place with ``index_add_`` on each
``.grad``: Torch-Pruning's ``GrowingRegPruner`` writes to an indexed copy for BatchNorm, which is lost.
Ordinary weight decay ``mu`` stays the optimizer's job (``weight_decay=mu``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..core.errors import ConfigError
from ..surgery.channel_removal import plain_indices
from ..swd.masks import channel_slices
from ..swd.regularizer import swd_strength
from .history import channel_surgery


class SWDPruner(tp.pruner.BasePruner):
    """``BasePruner`` + SWD: call :meth:`regularize` after each ``loss.backward()``, :meth:`step` once at the end.

    ``total_steps`` is the number of training batches T of ``a(t) = a_min * (a_max / a_min) ** (t / T)``
    (paper defaults a_min=0.1, a_max=1e5; ``a`` stays at ``a_max`` past T); ``mu`` multiplies the SWD term
    (paper: 5e-4, also the ordinary weight decay). Other arguments are ``BasePruner``'s; the paper ranks
    globally, so pass ``global_pruning=True`` to follow it. The decay targets the indices of the *next*
    ``step()``; with ``iterative_steps > 1`` call ``step()`` when you want each cut.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        importance: tp.importance.Importance,
        *,
        total_steps: int,
        a_min: float = 0.1,
        a_max: float = 1e5,
        mu: float = 5e-4,
        **kwargs: Any,
    ) -> None:
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1 (the number of batches SWD runs for), got {total_steps}")
        if not 0 < a_min <= a_max:
            raise ConfigError(f"need 0 < a_min <= a_max (a(t) grows geometrically), got a_min={a_min}, a_max={a_max}")
        if mu <= 0:
            raise ConfigError(f"mu must be > 0: it scales the SWD term (paper: 5e-4), got {mu}")
        if kwargs.get("prune_num_heads"):
            raise ConfigError("SWDPruner does not support prune_num_heads: Torch-Pruning updates head counts while "
                              "it decides, and SWD asks for that decision at every batch")
        super().__init__(model, example_inputs, importance, **kwargs)
        self.total_steps, self.a_min, self.a_max, self.mu = total_steps, a_min, a_max, mu
        self.t = 0

    def a(self) -> float:
        """SWD strength at the current batch."""
        return swd_strength(min(self.t, self.total_steps), self.total_steps, self.a_min, self.a_max)

    def selection(self) -> list[tp.Group]:
        """The groups, with the indices, that the next :meth:`step` would remove from the current weights."""
        if self.current_step >= self.iterative_steps:
            return []
        self.current_step += 1  # BasePruner reads the target ratio of the step being taken
        try:
            return list(self._prune())
        finally:
            self.current_step -= 1

    @torch.no_grad()
    def regularize(self, model: nn.Module | None = None, loss: Any = None) -> None:
        """Add ``mu * a(t) * w`` to ``.grad`` of every parameter slice the next step would remove; t += 1.

        Call it after ``loss.backward()`` and before ``optimizer.step()`` (the arguments are accepted for
        Torch-Pruning's ``regularize(model)`` call shape and not needed)."""
        coef = self.mu * self.a()
        for group in self.selection():
            done: set[tuple[int, int]] = set()
            for item in group:
                for param, dim in self._slices(item.dep):
                    if (id(param), dim) in done:
                        continue  # a depthwise conv's input and output channels are the same slice
                    done.add((id(param), dim))
                    idx = torch.as_tensor(plain_indices(item.idxs), dtype=torch.long, device=param.device)
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)
                    param.grad.index_add_(dim, idx, param.detach().index_select(dim, idx), alpha=coef)
        self.t += 1

    def _slices(self, dep: Any) -> list[tuple[nn.Parameter, int]]:
        """(parameter, dim) pairs that removing ``dep``'s channels deletes."""
        module = dep.target.module
        if not isinstance(module, nn.Module):
            return []
        return channel_slices(module, "out" if self.DG.is_out_channel_pruning_fn(dep.handler) else "in")

    def surgery(self) -> list[dict[str, Any]]:
        """The replayable record for :func:`practise_plugin.models.checkpoint.save_compressed`."""
        return channel_surgery(self)
