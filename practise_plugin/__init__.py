"""practise-plugin: few-shot and data-free network acceleration.

    from practise_plugin import compress, load_model
    teacher = load_model("builtin")                       # or "timm:resnet50", "torchvision:resnet34", ...
    result = compress(teacher, "my_images/", "practise", latency_reduction=0.22)
    result.model, result.stats["selection"]

The data path has one package per step: ``graph`` (discover) -> ``practise`` (score, select, recover)
-> ``runtime`` (latency) -> ``export`` (OpenVINO IR); :mod:`practise_plugin.api` has the whole job as calls
(``compress``, ``evaluate``, ``measure``, ``export``, ``compress_job``). Names below load on first use, so
importing the package (and running ``practise --help``) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compress": "api", "compress_job": "api", "evaluate": "api", "measure": "api",
    "load_compressed": "models.checkpoint", "save_compressed": "models.checkpoint",
    "DataConfig": "core.inputs", "ImageSet": "core.inputs", "sample_tiny_set": "core.inputs",
    "load_images": "data.images", "SynthesisConfig": "data.synthetic", "synthesize": "data.synthetic",
    "Block": "graph.discover", "discover_blocks": "graph.discover", "find_feature_point": "graph.features",
    "drop_blocks": "surgery.drop", "ModelBundle": "models.bundle", "load_model": "models.loading",
    "RecoveryConfig": "practise.recovery", "recover": "practise.recovery",
    "Recoverability": "practise.recoverability", "RecoverabilityScorer": "practise.recoverability",
    "recoverability": "practise.recoverability", "Selection": "practise.selection", "select_blocks": "practise.selection",
    "build_config": "strategies", "get_strategy": "strategies", "list_strategies": "strategies",
    "register_strategy": "strategies",
    "CompressionContext": "core.strategy", "CompressionResult": "core.strategy", "Strategy": "core.strategy",
    "StrategyConfig": "core.config",
    "ConfigError": "core.errors", "DataError": "core.errors", "ExportError": "core.errors", "ModelError": "core.errors",
    "PractiseError": "core.errors", "TargetError": "core.errors", "TrainingError": "core.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
