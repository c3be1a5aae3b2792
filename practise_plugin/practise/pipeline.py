"""PRACTISE in order: discover -> score -> latency table -> select -> drop -> fold adaptors -> recover.

Why it exists: each step lives in its own module; this one decides the order, passes options through,
times every stage (``ctx.stages``) and collects the measurements for the report. Latency is measured by
the :class:`~practise_plugin.core.strategy.LatencyMeter` the caller put in the context.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError, ModelError
from ..core.inputs import ImageSet
from ..core.strategy import CompressionContext, CompressionResult, StrategyConfig
from ..data.synthetic import SynthesisConfig, synthesize
from ..graph.discover import discover_blocks
from ..graph.features import FeaturePoint, collect_features, feature_fn, feature_mse, find_feature_point
from ..graph.trace import trace_forward
from ..surgery.drop import drop_blocks
from .config import PractiseConfig
from .recoverability import RecoverabilityScorer
from .recovery import RecoveryConfig, recover
from .selection import select_blocks


def run(model: nn.Module, data: ImageSet | None, config: StrategyConfig, ctx: CompressionContext) -> CompressionResult:
    """Compress a copy of ``model``; ``model`` itself is never modified."""
    if not isinstance(config, PractiseConfig):
        raise ConfigError(f"strategy 'practise' takes a PractiseConfig, got {type(config).__name__}")
    if ctx.latency is None:
        raise ConfigError("practise measures latency: give the CompressionContext a latency meter "
                          "(practise_plugin.runtime.latency.LatencyMeter); practise_plugin.compress builds one")
    cfg, meter, stage = config, ctx.latency, ctx.stages
    teacher = model.eval()
    if data is None:
        with stage("synthesise"):
            data = synthesize(teacher, ctx.data_config, SynthesisConfig(
                num_images=cfg.synthetic_images, iters=cfg.synthetic_iters, seed=cfg.seed,
                batch_size=cfg.batch_size), cache_dir=ctx.work_dir, device=ctx.device, progress=ctx.progress)
    data.check_input_size(ctx.data_config.input_size)
    example = data.images[:1].to(ctx.device)
    with stage("discover"):
        candidates = discover_blocks(teacher, example, include_stage_entry=cfg.include_stage_entry)
        point = find_feature_point(teacher, example, cfg.feature_point)
        _check_visible(teacher, point, example, candidates)
    by_name = {b.name: b for b in candidates}

    def measure(names: list[str]):  # noqa: ANN202 - the meter's Reduction (value, low, high)
        return meter.reduction(teacher, drop_blocks(teacher, names), target=cfg.latency_reduction, cache=True,
                               dropped=names)

    with stage("score"):
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
        with stage("select"):
            m = measure(chosen)
            stats["selection"] = {"blocks": chosen, "measured": m.value, "measured_interval": [m.low, m.high]}
    else:
        with stage("score"):
            scores = scorer.score(candidates, progress=ctx.progress)
        invisible = [r.block for r in scores if r.mse_dropped == 0.0]
        if invisible:
            raise ModelError(f"dropping {', '.join(invisible)} leaves the features at {point.describe()} exactly as "
                             "they are, so recoverability cannot rank them; choose a feature point they feed "
                             "(feature_point=PATH, --feature-point PATH)")
        with stage("latency_table"):
            table = meter.block_table(teacher, list(by_name), macs={b.name: b.macs for b in candidates},
                                      progress=ctx.progress)
        with stage("select"):
            selection = select_blocks(
                {r.block: r.mse for r in scores}, table.saved, latency_reduction=cfg.latency_reduction,
                num_blocks=cfg.num_blocks, measure=measure if cfg.latency_reduction is not None else None,
                macs={b.name: b.macs for b in candidates})
            if selection.measured is None:
                m = measure(selection.blocks)
                selection.measured, selection.measured_interval = m.value, [m.low, m.high]
        chosen = selection.blocks
        stats.update(recoverability=[r.to_dict() for r in scores], latency_table=table.to_dict(),
                     selection=selection.to_dict())

    student = drop_blocks(teacher, chosen)
    targets = scorer.targets  # the teacher's features of the tiny set, computed once, when the scorer was built
    if cfg.fold_adaptors and cfg.recoverability != "none":
        with stage("fold_adaptors"):
            rec, adaptors = scorer.fit([by_name[n] for n in chosen])
            adaptors.fold_into(student)
        # the fit's bare pass had the same holes and no adaptors; the folded student is measured afresh (a check)
        stats["feature_mse"] = {"dropped": rec.mse_dropped,
                                "adaptors_folded": _mse(student, point, data, targets, cfg.batch_size, ctx.device)}
        stats["adaptor_sites"] = rec.sites
    else:
        stats["feature_mse"] = {"dropped": _mse(student, point, data, targets, cfg.batch_size, ctx.device)}
    if cfg.recover != "none":
        rcfg = RecoveryConfig(method=cfg.recover, iters=cfg.recover_iters, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              batch_size=cfg.batch_size, augment=cfg.augment, checkpoint_every=cfg.checkpoint_every,
                              mixed_precision=cfg.mixed_precision,
                              seed=cfg.seed, bn=cfg.recover_bn)
        with stage("recover"):
            student, log = recover(student, teacher, data, rcfg, point=point, work_dir=ctx.work_dir,
                                   device=ctx.device, progress=ctx.progress)
        stats["recovery"] = log.to_dict()
    stats["feature_mse"]["recovered"] = _mse(student, point, data, targets, cfg.batch_size, ctx.device)
    return CompressionResult(student.eval(), "practise", cfg.to_dict(), [{"op": "drop_blocks", "blocks": chosen}], stats)


def _check_visible(model: nn.Module, point: FeaturePoint, x: torch.Tensor, candidates: list) -> None:
    """Every candidate must run before the features are taken, or its removal would go unseen (R = 0)."""
    ran = trace_forward(model, x, fn=lambda m, inp: feature_fn(m, point)(inp)).order
    after = [b.name for b in candidates if b.path not in ran]
    if after:
        raise ModelError(f"{', '.join(after)} run after the feature point ({point.describe()}): their removal would "
                         "not change the features recoverability is measured on. Name a later point with "
                         "feature_point=PATH (--feature-point PATH), or 'output'")


def _mse(model: nn.Module, point: FeaturePoint, data: ImageSet, targets: torch.Tensor, batch_size: int,
         device: str) -> float:
    return feature_mse(collect_features(model, point, data.images, batch_size, device), targets)
