"""The registered ``udfc`` strategy: data-free structured pruning and low-bit weights, compensated in
closed form (Bai et al., ICCV 2023), with its two baselines, plain pruning ("prune") and Neuron Merging
("nm"). The algorithm lives in :mod:`practise_plugin.udfc.pipeline`, imported only when a run starts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from ..core.registry import register_strategy
from ..core.strategy import CompressionContext, CompressionResult, Strategy, StrategyConfig
from .config import UDFCConfig

if TYPE_CHECKING:
    from torch import nn

    from ..core.inputs import ImageSet

log = logging.getLogger(__name__)


@register_strategy
class UDFCStrategy(Strategy):
    name = "udfc"
    config_cls = UDFCConfig
    description = "data-free filter pruning + k-bit weights with closed-form compensation (UDFC, ICCV 2023)"
    needs_data = False

    def apply(self, model: nn.Module, data: ImageSet | None, config: StrategyConfig,
              ctx: CompressionContext) -> CompressionResult:
        from ..core.torch_utils import example_input
        from .pipeline import run_pass

        if not isinstance(config, UDFCConfig):
            raise ConfigError(f"strategy 'udfc' takes a UDFCConfig, got {type(config).__name__}")
        if data is not None:
            log.info("udfc is data-free: the %d images given are not used", len(data))
        compressed, surgery, report = run_pass(
            model, example_input(ctx.data_config.input_size, seed=config.seed), ratio=config.ratio,
            criterion=config.criterion, bits=config.bits, method=config.method, a1=config.a1, a2=config.a2,
            nm_threshold=config.nm_threshold, fold_into_bn=config.fold_into_bn,
        )
        stats = {"layers_pruned": len(report.pruned_layers), **report.to_dict()}
        return CompressionResult(compressed, self.name, config.to_dict(), surgery, stats)
