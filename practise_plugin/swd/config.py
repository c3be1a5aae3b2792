"""The options of SWD: one dataclass, checked at construction, shared by the strategy, the benchmark and a
user's own training loop (:class:`~practise_plugin.swd.regularizer.SWDRegularizer`).

Why it exists: keeping the options in one place, checked when built, reports a bad value with its fix
before any training starts, never as a NaN an hour later. Imports nothing heavy (``--help`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.config import StrategyConfig, option
from ..core.errors import ConfigError


@dataclass
class SWDConfig(StrategyConfig):
    """Options of SWD (Tessier et al., J. Imaging 2022); defaults follow the paper unless noted."""

    mode: Literal["unstructured", "structured"] = option(
        "unstructured", "unstructured: zero single conv/linear weights (global magnitude); structured: remove "
        "whole channels chosen by BatchNorm |gamma|, decaying every parameter they take with them (the model "
        "really gets smaller and faster)")
    target: float = option(
        0.9, "fraction of parameters removed, in (0, 1): of conv/linear weights (unstructured) or of all "
        "parameters, counted after real channel removal (structured)")
    a_min: float = option(0.1, "SWD strength a(t) at the first step (paper: 0.1)")
    a_max: float = option(1e5, "SWD strength a(t) at the last step; a(t) grows geometrically (paper: 1e5)")
    mu: float = option(5e-4, "weight decay on all parameters, also the multiplier of the SWD term (paper: 5e-4)")
    epochs: int = option(3, "passes over the training images (ignored when steps is set)")
    steps: int | None = option(None, "total training batches T; overrides epochs (useful for tiny sets)")
    lr: float = option(0.01, "SGD learning rate at the start (paper: 0.1 when training from scratch; "
                       "0.01 suits starting from a trained model)")
    momentum: float = option(0.9, "SGD momentum (paper: 0.9)")
    batch_size: int = option(128, "training batch size (paper: 128)")
    lr_milestones: tuple[float, ...] = option(
        (), "fractions of the training at which the learning rate is multiplied by lr_gamma (paper: 1/3, 2/3 "
        "over hundreds of epochs; our default keeps lr constant: in a run of a few epochs the x0.1 steps leave "
        "a(t) large only when lr is too small to adapt, 51% vs 88% top-1 in benchmarks/swd.py, structured)")
    lr_gamma: float = option(0.1, "learning-rate factor at each milestone (paper: 0.1)")
    warmup_epochs: float = option(
        0.0, "epochs over which the learning rate rises linearly from lr/steps to lr (paper: none; a network "
        "without BatchNorm trained from scratch at lr 0.1, momentum 0.9 can blow up in its first batches: "
        "LeNet-5 on Fashion-MNIST hit NaN at step 34 in benchmarks/swd_scratch.py, one epoch of warm-up fixes it)")
    finetune_epochs: int = option(0, "epochs of plain fine-tuning after the hard prune (paper setting: 0)")
    checkpoint_every: int = option(200, "write a resumable checkpoint to the work dir every N steps (0: never)")
    mixed_precision: bool = option(True, "on CUDA: training under autocast (bf16, else fp16 with a loss scaler, "
                                   "unscaled before the SWD term) and channels-last; no effect on CPU")

    def __post_init__(self) -> None:
        _check(self.mode in ("unstructured", "structured"), f"mode must be 'unstructured' or 'structured', got {self.mode!r}")
        _check(0.0 < self.target < 1.0, f"target must be in (0, 1) (fraction of parameters removed), got {self.target}")
        _check(self.a_min > 0, f"a_min must be > 0 (a(t) grows geometrically from it), got {self.a_min}")
        _check(self.a_max >= self.a_min, f"a_max ({self.a_max}) must be >= a_min ({self.a_min})")
        _check(self.mu > 0, f"mu must be > 0: it scales the SWD term, with mu = 0 nothing is decayed (got {self.mu})")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.steps is None or self.steps >= 1, f"steps must be >= 1 (or unset to use epochs), got {self.steps}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        ms = tuple(self.lr_milestones)
        _check(all(0.0 < m < 1.0 for m in ms) and list(ms) == sorted(set(ms)),
               f"lr_milestones must be increasing fractions in (0, 1), e.g. 0.333,0.667; got {ms}")
        _check(0.0 < self.lr_gamma <= 1.0, f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        _check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0 (0: no warm-up), got {self.warmup_epochs}")
        _check(self.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        _check(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0 (0 disables), got {self.checkpoint_every}")
        self._check_stability()

    @property
    def final_lr(self) -> float:
        return self.lr * self.lr_gamma ** len(self.lr_milestones)

    def _check_stability(self) -> None:
        """Refuse schedules under which the decayed weights would oscillate and blow up.

        At the end, a masked weight follows heavy-ball SGD on a quadratic of curvature k = mu * (1 + a_max);
        that converges only if lr * k < 2 * (1 + momentum). Past it the run ends in NaN, so say so now.
        """
        step = self.final_lr * self.mu * (1.0 + self.a_max)
        bound = 2.0 * (1.0 + self.momentum)
        _check(step < bound,
               f"lr * mu * (1 + a_max) at the last step is {step:.3g}, above {bound:.3g} = 2 * (1 + momentum): "
               "the decayed weights would oscillate and diverge; lower a_max, lr or mu, or add lr_milestones")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
