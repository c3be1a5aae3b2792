"""The registered ``swd`` strategy and the prune + fine-tune reference it is compared with.

The algorithm lives in :mod:`practise_plugin.swd.pipeline`, imported only when a run starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from ..core.registry import register_strategy
from ..core.strategy import CompressionContext, CompressionResult, Strategy, StrategyConfig
from .config import SWDConfig

if TYPE_CHECKING:
    from torch import nn

    from ..core.inputs import ImageSet


@register_strategy
class SWDStrategy(Strategy):
    """Selective Weight Decay: decay what the final prune will remove, harder and harder, then prune once.

    Needs labelled training images (the task loss is cross-entropy). ``apply`` returns a pruned copy:
    unstructured zeroes weights (same shapes, ``surgery`` empty); structured removes channels for real
    (``surgery`` holds the replayable Torch-Pruning record). Checkpoints go to ``ctx.work_dir``, and a run
    interrupted there resumes where it stopped.
    """

    name = "swd"
    config_cls = SWDConfig
    description = "Selective Weight Decay: train with a growing penalty on what will be pruned, prune once"
    needs_data = True
    needs_labels = True

    def apply(self, model: nn.Module, data: ImageSet | None, config: StrategyConfig,
              ctx: CompressionContext) -> CompressionResult:
        return _run(model, data, _as_swd_config(config), ctx, with_swd=True)


def magnitude_prune_finetune(model: nn.Module, data: ImageSet | None, config: SWDConfig,
                             ctx: CompressionContext) -> CompressionResult:
    """The paper's reference: prune once by global magnitude (or BatchNorm |gamma| when structured) to the
    same ``config.target``, then fine-tune with the same schedule SWD trains with. For benchmarks."""
    return _run(model, data, _as_swd_config(config), ctx, with_swd=False)


def _as_swd_config(config: StrategyConfig) -> SWDConfig:
    if not isinstance(config, SWDConfig):
        raise ConfigError(f"SWD takes an SWDConfig, got {type(config).__name__}; build it with build_config('swd', ...)")
    return config


def _run(model: nn.Module, data: ImageSet | None, config: SWDConfig, ctx: CompressionContext,
         with_swd: bool) -> CompressionResult:
    from .pipeline import run_swd

    pruned, surgery, stats = run_swd(model, data, config, with_swd=with_swd, input_size=tuple(ctx.data_config.input_size),
                                     device=ctx.device, work_dir=ctx.work_dir, progress=ctx.progress)
    return CompressionResult(pruned, stats["method"], config.to_dict(), surgery, stats)
