"""Strategy ``udfc``: data-free structured pruning and low-bit weight quantization, compensated in closed form.

Why it exists: the registry entry through which the CLI, the NNCF-style runner and the Python API reach
UDFC (Bai et al., ICCV 2023; METHODS.md section 3) and its two baselines, plain pruning ("prune") and
Neuron Merging ("nm"). The algorithm lives in :mod:`practise_plugin.udfc`; this file holds the options
and turns a pass into a :class:`CompressionResult`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..data import ImageSet
from ..errors import ConfigError
from ..registry import register_strategy
from ..udfc.closed_form import A1, A2
from ..udfc.pipeline import run_pass
from .base import CompressionContext, CompressionResult, Strategy, StrategyConfig, option

log = logging.getLogger(__name__)
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


@register_strategy
class UDFCStrategy(Strategy):
    name = "udfc"
    config_cls = UDFCConfig
    description = "data-free filter pruning + k-bit weights with closed-form compensation (UDFC, ICCV 2023)"
    needs_data = False

    def apply(
        self, model: nn.Module, data: ImageSet | None, config: StrategyConfig, ctx: CompressionContext
    ) -> CompressionResult:
        if not isinstance(config, UDFCConfig):
            raise ConfigError(f"strategy 'udfc' takes a UDFCConfig, got {type(config).__name__}")
        if data is not None:
            log.info("udfc is data-free: the %d images given are not used", len(data))
        example = torch.randn(1, *ctx.data_config.input_size, generator=torch.Generator().manual_seed(config.seed))
        compressed, surgery, report = run_pass(
            model, example, ratio=config.ratio, criterion=config.criterion, bits=config.bits,
            method=config.method, a1=config.a1, a2=config.a2, nm_threshold=config.nm_threshold,
            fold_into_bn=config.fold_into_bn,
        )
        stats = {"layers_pruned": len(report.pruned_layers), **report.to_dict()}
        return CompressionResult(compressed, self.name, config.to_dict(), surgery, stats)
