"""Selective Weight Decay as a regulariser that drops into any training loop.

Why it exists: SWD is a training-time penalty, not a training recipe. Keeping it independent of our
trainer lets a user add it to their own loop in three lines, and lets the Torch-Pruning adapter wrap it
as a ``regularize(model)`` hook (call :meth:`SWDRegularizer.apply_to_grad` then :meth:`step`).

The penalty is ``mu * sum (a(t)/2) * ||w * (1 - m)||^2`` where ``m`` is the keep-mask that the pruning
criterion gives for the current weights, recomputed (once) at every step, and
``a(t) = a_min * (a_max / a_min) ** (t / T)`` grows from a gentle nudge to a hard constraint, so that
at the end the weights to be removed are ~0 and the hard prune barely changes the function.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError
from .config import SWDConfig
from .masks import Decision, make_criterion


def swd_strength(t: float, total_steps: int, a_min: float, a_max: float) -> float:
    """a(t) = a_min * (a_max / a_min) ** (t / T): geometric growth from a_min (t = 0) to a_max (t = T)."""
    return a_min * (a_max / a_min) ** (t / total_steps)


class SWDRegularizer:
    """The SWD penalty on ``model``'s weights, for ``total_steps`` training steps.

    Use either :meth:`penalty` (add it to the loss before ``backward``) or :meth:`apply_to_grad` (after
    ``backward``; cheaper, no autograd graph), then :meth:`step` once per batch. ``example_input`` (one
    input batch on the model's device) is needed for ``mode="structured"``, to trace channel coupling.
    Ordinary weight decay ``mu`` is the optimizer's job (``weight_decay=config.mu``).
    """

    def __init__(
        self, model: nn.Module, config: SWDConfig, total_steps: int, example_input: torch.Tensor | None = None
    ) -> None:
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1 (the number of batches SWD runs for), got {total_steps}")
        self.config = config
        self.total_steps = total_steps
        self.t = 0
        self.criterion = make_criterion(model, config.mode, config.target, example_input)
        self._decision: Decision | None = None

    def a(self, t: float | None = None) -> float:
        """SWD strength at step ``t`` (default: the current step)."""
        c = self.config
        return swd_strength(self.t if t is None else t, self.total_steps, c.a_min, c.a_max)

    def decision(self) -> Decision:
        """The criterion's verdict on the current weights, computed once per step."""
        if self._decision is None:
            self._decision = self.criterion.decide()
        return self._decision

    def masks(self) -> list[torch.Tensor]:
        """Keep-masks (bool) aligned with :attr:`params`: False marks what the hard prune would remove now."""
        return self.decision().masks

    @property
    def params(self) -> list[nn.Parameter]:
        """The parameters SWD decays: conv/linear weights, or every parameter slice a channel removal deletes (structured)."""
        return self.criterion.params

    def penalty(self) -> torch.Tensor:
        """``mu * a(t)/2 * sum ||w * (1 - m)||^2``, differentiable: add it to the task loss."""
        total = sum(((p * ~m) ** 2).sum() for p, m in zip(self.params, self.masks()))
        return self.config.mu * self.a() / 2 * total

    @torch.no_grad()
    def apply_to_grad(self) -> None:
        """Add the penalty's gradient ``mu * a(t) * w * (1 - m)`` to each ``.grad`` in place (after backward)."""
        coef = self.config.mu * self.a()
        for p, m in zip(self.params, self.masks()):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(p * ~m, alpha=coef)

    def step(self) -> None:
        """Advance to the next batch: t += 1; the mask is recomputed from the weights at next use."""
        self.t += 1
        self._decision = None

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self._decision = None
