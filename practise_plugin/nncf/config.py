"""NNCF-style configs as a small object: validated, normalised, and checked for a workable order.

Why it exists: the runner should never see raw JSON. A config arrives as a dict, a JSON file or an
:class:`NNCFStyleConfig`; after :func:`load_config` it is schema-valid, ``compression`` is a list of
:class:`Entry` objects, top-level ``ignored_scopes`` are merged into the NNCF-native entries, and the
entries are in an order that can run (torch steps before OpenVINO steps), so mistakes surface before
minutes of compression rather than after.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .schema import NATIVE_STAGES, _entries, _entry_label, entry_problem, stage_of, validate_top_level


@dataclass(frozen=True)
class Entry:
    """One ``compression`` entry: its position, algorithm, and the rest of its JSON object."""

    index: int
    algorithm: str
    body: dict[str, Any]
    where: str = ""

    @property
    def stage(self) -> str:
        return stage_of(self.algorithm)

    @property
    def is_strategy(self) -> bool:
        return self.algorithm not in NATIVE_STAGES

    @property
    def label(self) -> str:
        return f"{self.where or f'compression[{self.index}]'} {self.algorithm!r}"


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


# NNCF 2.x top-level keys that steer NNCF's own training samples, not compression: accepted, reported as
# not used, each with what takes its place here.
NOT_USED: dict[str, str] = {
    "model": "the model is --model / the model argument",
    "pretrained": "load trained weights with --weights (model hubs are not used)",
    "weights": "load trained weights with --weights",
    "num_classes": "the model's own head is kept",
    "dataset": "images come from --data (a tiny set is enough)",
    "dataset_dir": "images come from --data",
    "epochs": "no training loop runs here; recovery and SWD take their own iterations in their params",
    "optimizer": "recovery and SWD take lr/momentum/weight decay in their params",
    "weight_decay": "recovery and SWD take weight_decay in their params",
    "multiprocessing_distributed": "run under torchrun for several processes (see README: Scaling out)",
    "workers": "images are held in memory",
    "preprocessing": "images are preprocessed with the model's own data config",
    "augmentations": "recovery has its own flips and shifts (practise param augment)",
    "weighing": "a training-loss setting of NNCF's samples",
    "model_params": "a model-construction setting of NNCF's samples",
    "basenet": "a model-construction setting of NNCF's samples",
    "ssd_params": "a model-construction setting of NNCF's samples",
    "export_to_ir_via_onnx": "the result is written as an OpenVINO IR directly",
    "no_strip_on_export": "the exported model holds no NNCF wrappers to strip",
    "batchnorm": "a training setting of NNCF's samples",
    "save_freq": "checkpoints are written by recovery and SWD themselves (checkpoint_every)",
    "checkpoint_save_dir": "checkpoints go to the work directory",
    "eval_only": "evaluation is practise compress --eval-data",
    "test_interval": "no training loop runs here",
    "batch_size_init": "calibration uses the IR's batch",
    "log_dir": "progress is shown on the terminal; statistics go to report.json",
    "disable_shape_matching": "tracing uses the IR's static input shape",
    "compression_lr_multiplier": "no training loop runs here",
    "accuracy_aware_training": "accuracy-aware training needs a training loop; run the entries as they are, then "
                               "raise or lower practise's latency_reduction (or udfc's ratio) to trade accuracy",
}
USED = ("compression", "input_info", "target_device", "ignored_scopes", "batch_size", "practise")
LEGACY_DEVICES = {"VPU": ("NPU", "NNCF renamed VPU to NPU"),
                  "TRIAL": ("ANY", "custom quantization schemes (TRIAL) are gone in NNCF 3.x")}


def _outside_strings(text: str) -> list[tuple[bool, str]]:
    """``text`` cut into (is a JSON string, piece) runs; string pieces keep their quotes and escapes."""
    pieces, i, start, n = [], 0, 0, len(text)
    while i < n:
        if text[i] == '"':
            pieces.append((False, text[start:i]))
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            pieces.append((True, text[i : j + 1]))
            i = start = j + 1
        else:
            i += 1
    pieces.append((False, text[start:]))
    return pieces


def _strip_comments(text: str, where: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments outside JSON strings replaced by spaces (line breaks kept,
    so error positions still point into the file)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i) or text.startswith("/*", i):
            end = text.find("\n", i) if text[i + 1] == "/" else text.find("*/", i + 2)
            if end < 0 and text[i + 1] == "*":
                raise ConfigError(f"{where} has a /* comment that is never closed")
            end = n if end < 0 else end + (2 if text[i + 1] == "*" else 0)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def read_json(text: str, where: str = "the config") -> Any:
    """JSON as NNCF 2.x read it (``jstyleson``): ``//`` and ``/* */`` comments and trailing commas allowed."""
    code = _strip_comments(text, where)
    cleaned = "".join(piece if quoted else re.sub(r",(\s*[}\]])", r" \1", piece)
                      for quoted, piece in _outside_strings(code))
    try:
        return json.loads(cleaned)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e


@dataclass
class NNCFStyleConfig:
    """A validated NNCF-style config. Build with :meth:`from_dict`, :meth:`from_json` or :func:`load_config`.

    ``not_used`` maps the top-level keys that have no effect here to the reason; ``notes`` are changes made
    to read an NNCF 2.x file (a legacy device name mapped); ``batch_size`` is the default batch of the
    strategy entries (top-level ``batch_size``), or None."""

    entries: list[Entry]
    sample_size: tuple[int, int, int, int] | None = None
    target_device: str = "ANY"
    run_options: dict[str, Any] = field(default_factory=dict)  # the optional "practise" section
    raw: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    not_used: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: dict[int, ConfigError] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, lenient: bool = False) -> NNCFStyleConfig:
        """Validate and normalise ``raw``. With ``lenient`` (the ``--check`` plan), a bad entry is recorded in
        ``problems`` instead of raised, so every entry gets its answer; the top level must still be valid."""
        validate_top_level(raw)
        bodies = _entries(raw)
        problems = {}
        for i in range(len(bodies)):
            if (problem := entry_problem(raw, i)) is not None:
                if not lenient:
                    raise problem
                problems[i] = problem
        global_scopes = _as_list(raw.get("ignored_scopes"))
        entries = []
        for i, body in enumerate(bodies):
            body = dict(body)
            if body.get("algorithm") in NATIVE_STAGES and global_scopes:
                body["ignored_scopes"] = global_scopes + _as_list(body.get("ignored_scopes"))
            entries.append(Entry(i, str(body.get("algorithm")), body, _entry_label(raw, i)))
        info = raw.get("input_info")
        info = info[0] if isinstance(info, list) else info
        device, notes = raw.get("target_device", "ANY"), []
        if device in LEGACY_DEVICES:
            new, why = LEGACY_DEVICES[device]
            notes.append(f"target_device {device!r} is read as {new!r} ({why})")
            device = new
        not_used = {k: NOT_USED.get(k, "not a key practise-plugin reads") for k in raw if k not in USED}
        config = cls(entries, tuple(info["sample_size"]) if info else None, device, dict(raw.get("practise", {})),
                     raw, raw.get("batch_size"), not_used, notes, problems)
        if not lenient:
            check_order(config.entries)
        return config

    @classmethod
    def from_json(cls, path: str | Path, *, lenient: bool = False) -> NNCFStyleConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} does not exist") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the config file {path} ({e.__class__.__name__})") from e
        return cls.from_dict(read_json(text, str(path)), lenient=lenient)

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """(C, H, W) from ``input_info.sample_size``, or None to use the model's own."""
        return None if self.sample_size is None else tuple(self.sample_size[1:])  # type: ignore[return-value]


def load_config(config: NNCFStyleConfig | dict[str, Any] | str | Path, *, lenient: bool = False) -> NNCFStyleConfig:
    """Accept what users hold: a config object, a dict, or the path of a JSON file (comments allowed)."""
    if isinstance(config, NNCFStyleConfig):
        return config
    if isinstance(config, dict):
        return NNCFStyleConfig.from_dict(config, lenient=lenient)
    if isinstance(config, (str, Path)):
        return NNCFStyleConfig.from_json(config, lenient=lenient)
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
