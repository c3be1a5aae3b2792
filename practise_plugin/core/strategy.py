"""What every compression strategy is: a config dataclass plus ``apply``, and what it is given and returns.

Why it exists: the CLI, the NNCF-style config runner and the Torch-Pruning adapters must drive every
strategy the same way. A strategy declares its options once (:class:`~practise_plugin.core.config.StrategyConfig`
fields); the context carries everything else a run needs, including how latency is measured: the methods
sit below the runtimes, so a runtime's :class:`LatencyMeter` is handed in rather than imported.
Importing this module costs nothing (``practise --help`` reads strategy classes through it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .config import StrategyConfig
from .stages import Stages

if TYPE_CHECKING:
    from torch import nn

    from .inputs import DataConfig, ImageSet


class Measurement(Protocol):
    """A measured fraction of latency saved: point estimate and a confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]: ...


class LatencyMeter(Protocol):
    """How a run measures latency (built by :mod:`practise_plugin.runtime.latency`)."""

    backend: str

    def block_table(self, model: nn.Module, blocks: Sequence[str], *, macs: dict[str, float] | None = None,
                    progress: bool = True) -> Any:
        """Latency saved by dropping each block alone (``.saved[name]``, ``.to_dict()``)."""

    def reduction(self, base: nn.Module, model: nn.Module, *, target: float | None = None, cache: bool = False,
                  dropped: Sequence[str] | None = None) -> Measurement:
        """Fraction of ``base``'s latency that ``model`` saves, with its interval (``dropped``: the blocks
        ``model`` is ``base`` without, which lets a backend derive one from the other)."""


@dataclass
class CompressionContext:
    """Everything a strategy needs besides the model, data and its own options."""

    data_config: DataConfig
    device: str = "cpu"
    work_dir: Path | None = None  # checkpoints and caches; None: no resume
    progress: bool = True
    model_spec: str | None = None  # how to rebuild the uncompressed model (for checkpoints)
    latency: LatencyMeter | None = None  # None: strategies that need latency refuse to run
    stages: Stages = field(default_factory=Stages)


@dataclass
class CompressionResult:
    """The compressed model, what was done to it (replayable), and what was measured."""

    model: nn.Module
    strategy: str
    config: dict[str, Any]
    surgery: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """A named compression method. Subclasses set the class attributes and implement ``apply``; heavy
    imports belong inside ``apply`` so that the registry and ``--help`` stay fast."""

    name: ClassVar[str]
    config_cls: ClassVar[type[StrategyConfig]]
    description: ClassVar[str]
    needs_data: ClassVar[bool] = True  # False: works data-free (no images needed at all)
    needs_labels: ClassVar[bool] = False  # True: the images must carry class labels
    needs_latency: ClassVar[bool] = False  # True: ctx.latency must be set

    @abstractmethod
    def apply(
        self, model: nn.Module, data: ImageSet | None, config: StrategyConfig, ctx: CompressionContext
    ) -> CompressionResult:
        """Return a compressed copy of ``model``; ``model`` itself is never modified."""
