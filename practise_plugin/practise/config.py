"""The options of the ``practise`` strategy: one dataclass, also the CLI flags and the JSON config keys.

Imports nothing heavy, so ``practise compress --help`` can build its flags from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.config import StrategyConfig, option
from ..core.errors import ConfigError

DEFAULT_LATENCY_REDUCTION = 0.22  # the paper's larger budget (3 of ResNet-34's blocks)


@dataclass
class PractiseConfig(StrategyConfig):
    """Options of the ``practise`` strategy (each is also a CLI flag and a JSON config key)."""

    latency_reduction: float | None = option(
        None, "target fraction of measured latency to remove; 0.22 when neither num_blocks nor blocks is set")
    num_blocks: int | None = option(None, "drop exactly this many blocks instead of meeting a latency target")
    blocks: tuple[str, ...] = option((), "drop exactly these blocks (names from `practise discover`); skips scoring")
    recoverability: Literal["closed_form", "sgd", "none"] = option(
        "closed_form", "how adaptors are fitted when scoring: closed_form (fast), sgd (the paper), none (bare hole)")
    score_iters: int = option(1000, "SGD iterations per candidate when recoverability=sgd")
    score_lr: float = option(0.02, "SGD learning rate of the adaptors when recoverability=sgd")
    ridge: float = option(1e-3, "ridge strength of the closed-form adaptor fit (relative to the input energy)")
    fold_adaptors: bool = option(True, "fit adaptors for the chosen set and fold them into the student before recovery")
    recover: Literal["mimic", "bp", "kd", "none"] = option("mimic", "recovery: mimic (features, no labels), bp, kd, none")
    recover_iters: int = option(2000, "recovery iterations (the paper uses ~2000)")
    lr: float = option(0.02, "recovery learning rate (SGD, momentum 0.9, x0.1 at 40% and 80%)")
    weight_decay: float = option(1e-4, "recovery weight decay")
    batch_size: int = option(64, "batch size for scoring and recovery")
    augment: bool = option(True, "random flips and shifts during recovery")
    mixed_precision: bool = option(True, "on CUDA: recovery under autocast (bf16, else fp16 with a loss scaler) and "
                                   "channels-last; no effect on CPU")
    recover_bn: Literal["train", "frozen"] = option(
        "train", "BatchNorm during recovery: train (the paper) or frozen at the teacher's statistics (use it when "
        "the images are out-of-domain or synthetic)")
    checkpoint_every: int = option(200, "write a resumable recovery checkpoint every N steps (needs a work dir)")
    include_stage_entry: bool = option(False, "also consider the first block of each stage (the paper does not)")
    feature_point: tuple[str, ...] = option(
        (), "where student and teacher are compared: module path(s) (several: their outputs joined), or 'output' for "
        "everything the model returns (backbones); default: the pre-pooling feature map")
    synthetic_images: int = option(256, "data-free: number of images synthesised when no data is given")
    synthetic_iters: int = option(200, "data-free: optimisation steps per synthetic batch")

    def __post_init__(self) -> None:
        given = [n for n in ("latency_reduction", "num_blocks") if getattr(self, n) is not None]
        given += ["blocks"] if self.blocks else []
        if len(given) > 1:
            raise ConfigError(f"set only one of latency_reduction, num_blocks and blocks (got {', '.join(given)})")
        if not given:
            self.latency_reduction = DEFAULT_LATENCY_REDUCTION
        if self.latency_reduction is not None and not 0 < self.latency_reduction < 1:
            raise ConfigError(f"latency_reduction must be in (0, 1), e.g. 0.22; got {self.latency_reduction}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ConfigError(f"num_blocks must be >= 1, got {self.num_blocks}")
        for name in ("score_iters", "recover_iters", "synthetic_images", "synthetic_iters", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("score_lr", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.ridge < 0:
            raise ConfigError(f"weight_decay and ridge must be >= 0, got {self.weight_decay} and {self.ridge}")
