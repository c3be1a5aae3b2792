"""The registered ``practise`` strategy: drop the most recoverable blocks to meet a latency target, then
recover by feature mimicking. The steps run in :mod:`practise_plugin.practise.pipeline`, imported only
when the strategy runs (the registry and ``--help`` stay light)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.registry import register_strategy
from ..core.strategy import CompressionContext, CompressionResult, Strategy, StrategyConfig
from .config import PractiseConfig

if TYPE_CHECKING:
    from torch import nn

    from ..core.inputs import ImageSet


@register_strategy
class PractiseStrategy(Strategy):
    name = "practise"
    config_cls = PractiseConfig
    description = "drop the most recoverable residual blocks to meet a latency target; recover by feature mimicking"
    needs_data = False  # synthesises images from BN statistics when given none
    needs_latency = True

    def apply(self, model: nn.Module, data: ImageSet | None, config: StrategyConfig,
              ctx: CompressionContext) -> CompressionResult:
        from .pipeline import run

        return run(model, data, config, ctx)
