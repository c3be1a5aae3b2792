"""PRACTISE: drop the most recoverable blocks to meet a latency target, then recover by mimicking.

Why it exists: this is the pipeline ``discover -> score -> select -> recover`` glued together with the
latency table, as one registered strategy. Each step lives in its own module; this file only decides
the order, passes options through and collects the measurements for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..data import ImageSet
from ..discover import discover_blocks
from ..drop import drop_blocks
from ..errors import ConfigError, ModelError
from ..features import FeaturePoint, collect_features, feature_mse, find_feature_point
from ..recover import RecoveryConfig, recover
from ..registry import register_strategy
from ..score import RecoverabilityScorer
from ..select import select_blocks
from ..synthetic import SynthesisConfig, synthesize
from .base import CompressionContext, CompressionResult, Strategy, StrategyConfig, option


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
    recover_bn: Literal["train", "frozen"] = option(
        "train", "BatchNorm during recovery: train (the paper) or frozen at the teacher's statistics (use it when "
        "the images are out-of-domain or synthetic)")
    checkpoint_every: int = option(200, "write a resumable recovery checkpoint every N steps (needs a work dir)")
    include_stage_entry: bool = option(False, "also consider the first block of each stage (the paper does not)")
    synthetic_images: int = option(256, "data-free: number of images synthesised when no data is given")
    synthetic_iters: int = option(200, "data-free: optimisation steps per synthetic batch")

    def __post_init__(self) -> None:
        given = [n for n in ("latency_reduction", "num_blocks", "blocks") if getattr(self, n)]
        if len(given) > 1:
            raise ConfigError(f"set only one of latency_reduction, num_blocks and blocks (got {', '.join(given)})")
        if not given:
            self.latency_reduction = DEFAULT_LATENCY_REDUCTION
        if self.latency_reduction is not None and not 0 < self.latency_reduction < 1:
            raise ConfigError(f"latency_reduction must be in (0, 1), e.g. 0.22; got {self.latency_reduction}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ConfigError(f"num_blocks must be >= 1, got {self.num_blocks}")
        for name in ("score_iters", "recover_iters", "batch_size", "synthetic_images", "synthetic_iters"):
            if getattr(self, name) < (1 if name == "batch_size" else 0):
                raise ConfigError(f"{name} must be non-negative (batch_size >= 1), got {getattr(self, name)}")


@register_strategy
class PractiseStrategy(Strategy):
    name = "practise"
    config_cls = PractiseConfig
    description = "drop the most recoverable residual blocks to meet a latency target; recover by feature mimicking"
    needs_data = False  # synthesises images from BN statistics when given none

    def apply(self, model: nn.Module, data: ImageSet | None, config: StrategyConfig,
              ctx: CompressionContext) -> CompressionResult:
        from ..latency import block_latency_table, measure_reduction

        cfg: PractiseConfig = config  # type: ignore[assignment]
        teacher = model.eval()
        if data is None:
            data = synthesize(teacher, ctx.data_config, SynthesisConfig(
                num_images=cfg.synthetic_images, iters=cfg.synthetic_iters, seed=cfg.seed,
                batch_size=cfg.batch_size), cache_dir=ctx.work_dir, device=ctx.device, progress=ctx.progress)
        data.check_input_size(ctx.data_config.input_size)
        example = data.images[:1].to(ctx.device)
        candidates = discover_blocks(teacher, example, include_stage_entry=cfg.include_stage_entry)
        by_name = {b.name: b for b in candidates}
        point = find_feature_point(teacher, example)
        lat_kw = dict(batch_size=ctx.latency_batch_size, num_threads=ctx.num_threads, device=ctx.device)

        def measure(names: list[str]) -> float:
            return measure_reduction(teacher, drop_blocks(teacher, names), ctx.data_config.input_size,
                                     ctx.latency_backend, **lat_kw)[0]

        scorer = RecoverabilityScorer(
            teacher, data, method=cfg.recoverability, point=point, batch_size=cfg.batch_size,
            iters=cfg.score_iters, lr=cfg.score_lr, ridge=cfg.ridge, seed=cfg.seed, device=ctx.device)
        stats: dict = {"candidates": [b.to_dict() for b in candidates], "feature_point": point.describe(),
                       "data": {"source": data.source, "images": len(data)}}
        if cfg.blocks:
            unknown = [n for n in cfg.blocks if n not in by_name]
            if unknown:
                raise ModelError(f"not drop candidates of this model: {', '.join(unknown)}; "
                                 f"candidates: {', '.join(by_name)}")
            chosen = list(cfg.blocks)
            stats["selection"] = {"blocks": chosen, "measured": measure(chosen)}
        else:
            scores = scorer.score(candidates, progress=ctx.progress)
            table = block_latency_table(teacher, list(by_name), ctx.data_config.input_size, ctx.latency_backend,
                                        cache_dir=ctx.work_dir, progress=ctx.progress, **lat_kw)
            selection = select_blocks(
                {r.block: r.mse for r in scores}, table.saved, latency_reduction=cfg.latency_reduction,
                num_blocks=cfg.num_blocks, measure=measure if cfg.latency_reduction is not None else None)
            chosen = selection.blocks
            if selection.measured is None:
                selection.measured = measure(chosen)
            stats.update(recoverability=[r.to_dict() for r in scores], latency_table=table.to_dict(),
                         selection=selection.to_dict())

        student = drop_blocks(teacher, chosen)
        targets = collect_features(teacher, point, data.images, cfg.batch_size, ctx.device)
        stats["feature_mse"] = {"dropped": _mse(student, point, data, targets, cfg.batch_size, ctx.device)}
        if cfg.fold_adaptors and cfg.recoverability != "none":
            rec, adaptors = scorer.fit([by_name[n] for n in chosen])
            adaptors.fold_into(student)
            stats["feature_mse"]["adaptors_folded"] = _mse(student, point, data, targets, cfg.batch_size, ctx.device)
            stats["adaptor_sites"] = rec.sites
        if cfg.recover != "none":
            rcfg = RecoveryConfig(method=cfg.recover, iters=cfg.recover_iters, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  batch_size=cfg.batch_size, augment=cfg.augment,
                                  checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, bn=cfg.recover_bn)
            student, log = recover(student, teacher, data, rcfg, point=point, work_dir=ctx.work_dir,
                                   device=ctx.device, progress=ctx.progress)
            stats["recovery"] = log.to_dict()
        stats["feature_mse"]["recovered"] = _mse(student, point, data, targets, cfg.batch_size, ctx.device)
        return CompressionResult(student.eval(), self.name, cfg.to_dict(), [{"op": "drop_blocks", "blocks": chosen}], stats)


def _mse(model: nn.Module, point: FeaturePoint, data: ImageSet, targets: torch.Tensor, batch_size: int,
         device: str) -> float:
    return feature_mse(collect_features(model, point, data.images, batch_size, device), targets)
