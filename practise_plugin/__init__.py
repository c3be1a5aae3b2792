"""practise-plugin: few-shot and data-free network acceleration.

    from practise_plugin import compress, load_model, load_images
    teacher = load_model("builtin")                       # or "timm:resnet50", "torchvision:resnet34", ...
    result = compress(teacher, "my_images/", "practise", latency_reduction=0.22)
    result.model, result.stats["selection"]

The pipeline, one module per step: discover -> score -> select -> recover -> export.
"""

__version__ = "0.1.0"

from .api import compress
from .checkpoint import load_compressed, save_compressed
from .data import DataConfig, ImageSet, load_images, sample_tiny_set
from .discover import Block, discover_blocks
from .drop import drop_blocks
from .errors import ConfigError, DataError, ExportError, ModelError, PractiseError, TargetError, TrainingError
from .features import find_feature_point
from .models import ModelBundle, load_model
from .recover import RecoveryConfig, recover
from .registry import build_config, get_strategy, list_strategies, register_strategy
from .score import Recoverability, RecoverabilityScorer, recoverability
from .select import Selection, select_blocks
from .strategies.base import CompressionContext, CompressionResult, Strategy, StrategyConfig
from .synthetic import SynthesisConfig, synthesize

__all__ = [
    "Block", "CompressionContext", "CompressionResult", "ConfigError", "DataConfig", "DataError", "ExportError",
    "ImageSet", "ModelBundle", "ModelError", "PractiseError", "Recoverability", "RecoverabilityScorer",
    "RecoveryConfig", "Selection", "Strategy", "StrategyConfig", "SynthesisConfig", "TargetError", "TrainingError",
    "build_config", "compress", "discover_blocks", "drop_blocks", "find_feature_point", "get_strategy",
    "list_strategies", "load_compressed", "load_images", "load_model", "recover", "recoverability",
    "register_strategy", "sample_tiny_set", "save_compressed", "select_blocks", "synthesize",
]
