"""``compress(model, data, strategy, ...)``: the one call behind the CLI and the integrations.

Why it exists: users hold a model (a module or a spec string) and maybe a folder of images; they should
not have to know which loader, context or config class each strategy needs. Options are keyword
arguments (or a config object), validated by the strategy's config dataclass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .data import ImageSet, load_images
from .errors import DataError
from .models import ModelBundle, load_model
from .registry import build_config, get_strategy
from .strategies.base import CompressionContext, CompressionResult, StrategyConfig


def compress(
    model: nn.Module | str | ModelBundle,
    data: ImageSet | str | Path | None = None,
    strategy: str = "practise",
    config: StrategyConfig | dict[str, Any] | None = None,
    *,
    num_samples: int | None = None,
    device: str = "cpu",
    work_dir: str | Path | None = None,
    progress: bool = True,
    latency_backend: str = "openvino",
    latency_batch_size: int = 1,
    num_threads: int | None = None,
    **options: Any,
) -> CompressionResult:
    """Compress ``model`` with ``strategy``; the input model is never modified.

    ``data`` is an :class:`ImageSet`, a folder of images (ImageFolder layout or flat; labels optional),
    or None (data-free strategies; PRACTISE then synthesises images). ``options`` are the strategy's
    config fields, e.g. ``latency_reduction=0.22`` (see ``practise strategies NAME``).
    """
    bundle = load_model(model)
    strat = get_strategy(strategy)
    cfg = build_config(strategy, config, **options)
    if isinstance(data, (str, Path)):
        data = load_images(data, bundle.data_config, num_samples=num_samples, seed=cfg.seed, progress=progress)
    elif isinstance(data, ImageSet) and num_samples is not None and num_samples < len(data):
        from .data import sample_tiny_set

        labels = data.labels.numpy() if data.has_labels else None
        data = data.subset(sample_tiny_set(labels, num_samples, cfg.seed, num_items=len(data)).tolist())
    if data is None and strat.needs_data:
        raise DataError(f"strategy {strategy!r} needs images; pass data=FOLDER or an ImageSet")
    if data is not None:
        data.check_input_size(bundle.data_config.input_size)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    ctx = CompressionContext(
        bundle.data_config, device=device, work_dir=None if work_dir is None else Path(work_dir), progress=progress,
        model_spec=bundle.spec, latency_backend=latency_backend, latency_batch_size=latency_batch_size,
        num_threads=num_threads,
    )
    return strat.apply(bundle.model, data, cfg, ctx)
