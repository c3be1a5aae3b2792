"""The options of UDFC; ``ratio=0`` with ``bits`` set is quantization only. Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.config import StrategyConfig, option
from ..core.errors import ConfigError

A1 = 0.01  # weight of the bias term in the pruning objective (the paper's alpha_1)
A2 = 0.008  # weight of the bias term in the quantization-scale objective (the paper's alpha_2)
MAX_BITS = 16


@dataclass
class UDFCConfig(StrategyConfig):
    """Options of UDFC; ``ratio=0`` with ``bits`` set is quantization only."""

    ratio: float = option(0.3, "fraction of filters removed from every prunable conv (0: quantize only)")
    criterion: Literal["l1", "l2"] = option("l2", "filter norm that picks the filters to prune")
    bits: int | None = option(None, "weight bit-width k of the symmetric per-tensor quantizer; None: no quantization")
    method: Literal["udfc", "nm", "prune"] = option(
        "udfc", "udfc: closed-form compensation; nm: Neuron Merging (one kept partner per pruned filter); "
        "prune: no compensation (baseline)")
    a1: float = option(A1, "weight of the BN-shift term in the pruning objective (paper: 0.01)")
    a2: float = option(A2, "weight of the BN-shift term in the quantization-scale objective (paper: 0.008)")
    nm_threshold: float = option(0.0, "Neuron Merging only: minimum cosine similarity to merge a pruned filter")
    fold_into_bn: bool = option(
        False, "quantization: also compensate layers with no single consumer (residual outputs, stem, shortcuts) "
        "by scaling their BatchNorm (our extension, not in the paper)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"ratio must be in [0, 1), got {self.ratio}; e.g. ratio=0.3 removes 30% of filters")
        if self.bits is not None and not 2 <= self.bits <= MAX_BITS:
            raise ConfigError(f"bits must be between 2 and {MAX_BITS} (or None for no quantization), got {self.bits}")
        if self.ratio == 0 and self.bits is None:
            raise ConfigError("nothing to do: set ratio > 0 to prune and/or bits (e.g. 6) to quantize")
        if self.a1 < 0 or self.a2 < 0:
            raise ConfigError(f"a1 and a2 must be >= 0, got a1={self.a1}, a2={self.a2}")
        if not -1.0 <= self.nm_threshold <= 1.0:
            raise ConfigError(f"nm_threshold is a cosine similarity in [-1, 1], got {self.nm_threshold}")
