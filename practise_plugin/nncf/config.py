"""NNCF-style configs as a small object: validated, normalised, and checked for a workable order.

Why it exists: the runner should never see raw JSON. A config arrives as a dict, a JSON file or an
:class:`NNCFStyleConfig`; after :func:`load_config` it is schema-valid, ``compression`` is a list of
:class:`Entry` objects, top-level ``ignored_scopes`` are merged into the NNCF-native entries, and the
entries are in an order that can run (torch steps before OpenVINO steps), so mistakes surface before
minutes of compression rather than after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .schema import NATIVE_STAGES, stage_of, validate


@dataclass(frozen=True)
class Entry:
    """One ``compression`` entry: its position, algorithm, and the rest of its JSON object."""

    index: int
    algorithm: str
    body: dict[str, Any]

    @property
    def stage(self) -> str:
        return stage_of(self.algorithm)

    @property
    def is_strategy(self) -> bool:
        return self.algorithm not in NATIVE_STAGES

    @property
    def label(self) -> str:
        return f"compression[{self.index}] {self.algorithm!r}"


@dataclass(frozen=True)
class RunOptions:
    """How to run, not what to do: the optional ``"practise"`` section, overridden by keyword arguments.

    These set up the :class:`~practise_plugin.core.strategy.CompressionContext` shared by every entry (its
    latency meter included) plus the size of the synthetic calibration set used when no images are given."""

    device: str = "cpu"
    work_dir: Path | None = None
    latency_backend: str = "openvino"
    latency_batch_size: int = 1
    num_threads: int | None = None
    progress: bool = True
    synthetic_images: int = 256
    synthetic_iters: int = 200

    @classmethod
    def resolve(cls, section: dict[str, Any], **overrides: Any) -> RunOptions:
        """Keyword arguments that are not None win over the config's section, which wins over defaults."""
        values = {**section, **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown run option(s) {', '.join(unknown)}; valid: {', '.join(cls.__dataclass_fields__)}")
        if values.get("work_dir") is not None:
            values["work_dir"] = Path(values["work_dir"])
        return cls(**values)


@dataclass
class NNCFStyleConfig:
    """A validated NNCF-style config. Build with :meth:`from_dict`, :meth:`from_json` or :func:`load_config`."""

    entries: list[Entry]
    sample_size: tuple[int, int, int, int] | None = None
    target_device: str = "ANY"
    run_options: dict[str, Any] = field(default_factory=dict)  # the optional "practise" section
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NNCFStyleConfig:
        validate(raw)
        section = raw["compression"]
        bodies = section if isinstance(section, list) else [section]
        global_scopes = _as_list(raw.get("ignored_scopes"))
        entries = []
        for i, body in enumerate(bodies):
            body = dict(body)
            if body["algorithm"] in NATIVE_STAGES and global_scopes:
                body["ignored_scopes"] = global_scopes + _as_list(body.get("ignored_scopes"))
            entries.append(Entry(i, body["algorithm"], body))
        info = raw.get("input_info")
        info = info[0] if isinstance(info, list) else info
        config = cls(entries, tuple(info["sample_size"]) if info else None, raw.get("target_device", "ANY"),
                     dict(raw.get("practise", {})), raw)
        check_order(config.entries)
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> NNCFStyleConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} does not exist") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
        return cls.from_dict(raw)

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """(C, H, W) from ``input_info.sample_size``, or None to use the model's own."""
        return None if self.sample_size is None else tuple(self.sample_size[1:])  # type: ignore[return-value]

    @property
    def batch_size(self) -> int:
        """The static batch of the exported IR (and of the calibration items)."""
        return 1 if self.sample_size is None else int(self.sample_size[0])


def load_config(config: NNCFStyleConfig | dict[str, Any] | str | Path) -> NNCFStyleConfig:
    """Accept what users hold: a config object, a dict, or the path of a JSON file."""
    if isinstance(config, NNCFStyleConfig):
        return config
    if isinstance(config, dict):
        return NNCFStyleConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return NNCFStyleConfig.from_json(config)
    raise ConfigError(f"config must be a dict, a path to a JSON file or an NNCFStyleConfig, got {type(config).__name__}")


def check_order(entries: list[Entry]) -> None:
    """Reject orders that cannot run or would silently undo a step.

    Strategies and ``magnitude_sparsity`` change a torch model; ``quantization`` and
    ``weight_compression`` turn it into a low-precision OpenVINO model, after which there is no torch
    model left to change. Strategies rebuild or retrain weights, so sparsity must come after them. One
    low-precision step at most: both would quantize already-quantized weights.
    """
    ov_step: Entry | None = None
    sparsity: Entry | None = None
    for e in entries:
        if e.stage == "openvino":
            if ov_step is not None:
                raise ConfigError(
                    f"{e.label} comes after {ov_step.label}: both produce low-precision weights; keep one of them "
                    "(quantization: INT8 weights and activations; weight_compression: weights only)")
            ov_step = e
        elif ov_step is not None:
            raise ConfigError(
                f"{e.label} comes after {ov_step.label}: {e.algorithm!r} changes the torch model, but after "
                f"{ov_step.algorithm!r} the model is a low-precision OpenVINO model; move {e.algorithm!r} before it")
        if e.is_strategy and sparsity is not None:
            raise ConfigError(
                f"{e.label} comes after {sparsity.label}: {e.algorithm!r} rebuilds or retrains weights, so the "
                "zeros set by magnitude_sparsity would not survive; move magnitude_sparsity after it")
        if e.algorithm == "magnitude_sparsity":
            sparsity = e


def _as_list(scopes: str | list[str] | None) -> list[str]:
    return [] if scopes is None else [scopes] if isinstance(scopes, str) else list(scopes)
