"""NNCF integration: run NNCF-style JSON configs, with our strategies as new ``"algorithm"`` names.

Why it exists: NNCF users describe compression as ``"compression": [{"algorithm": ...}]`` configs, and
NNCF 3.x removed the ``create_compressed_model`` path that ran them. This adapter keeps the familiar
call and config shape: entries run in order; ``practise`` / ``swd`` / ``udfc`` (any registered
strategy) go through the strategy registry (:mod:`practise_plugin.strategies`), the NNCF-native ones
through the installed NNCF 3.x functions (:mod:`practise_plugin.nncf.native`). The result is written by
the package's one IR writer (:func:`practise_plugin.export.ir.write_ir`).

    from practise_plugin.nncf import create_compressed_model
    model, ctrl = create_compressed_model("builtin", "integrations/nncf/practise_int8.json", images)
    ctrl.statistics()["entries"]; ctrl.export_model("out/")
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from torch import nn

from ..core.errors import ConfigError, DataError, PractiseError
from ..core.inputs import ImageSet
from ..core.strategy import CompressionContext
from ..core.torch_utils import count_params, example_input
from ..data.images import tiny_set_from
from ..data.synthetic import SynthesisConfig, synthesize
from ..export.ir import check_ir, prepare_out_dir, write_ir
from ..models.bundle import ModelBundle
from ..models.classes import output_names, with_model_labels
from ..models.loading import load_model
from ..runtime.latency import LatencyMeter
from ..runtime.openvino import to_openvino
from ..strategies import build_config, get_strategy
from . import native
from .config import Entry, NNCFStyleConfig, RunOptions, check_order, load_config

REPORT_NAME = "report.json"
CHECK_IMAGES = 64  # images the exported IR is compared with the torch model on


class CompressionController:
    """What ``create_compressed_model`` did, and the way out: ``statistics()`` and ``export_model(path)``.

    ``model`` is the torch model after the torch steps; ``ov_model`` the OpenVINO model after
    ``quantization`` / ``weight_compression`` (None when no such entry ran)."""

    def __init__(self, config: NNCFStyleConfig, bundle: ModelBundle, model: nn.Module, ov_model: ov.Model | None,
                 entries: list[dict[str, Any]], check_images: ImageSet | None, class_names: list[str],
                 batch: int = 1) -> None:
        self.config = config
        self.batch = batch
        self.bundle = bundle
        self.model = model
        self.ov_model = ov_model
        self._entries = entries
        self._check_images = check_images
        self._class_names = class_names

    @property
    def compressed_model(self) -> nn.Module | ov.Model:
        return self.ov_model if self.ov_model is not None else self.model

    @property
    def precision(self) -> str:
        """What the exported IR holds: fp32, int8 (weights and activations) or weights-<mode>."""
        for e in reversed(self._entries):
            if e["algorithm"] == "quantization":
                return "int8"
            if e["algorithm"] == "weight_compression":
                return f"weights-{e['mode']}"
        return "fp32"

    def statistics(self) -> dict[str, Any]:
        """Per-entry results (blocks dropped, sparsity, params, quantization) plus the whole run."""
        return {
            "model": self.bundle.spec, "input_size": list(self.bundle.data_config.input_size),
            "batch_size": self.batch, "target_device": self.config.target_device,
            "not_used": dict(self.config.not_used), "notes": list(self.config.notes),
            "params": {"before": count_params(self.bundle.model), "after": count_params(self.model)},
            "final_model": "openvino" if self.ov_model is not None else "torch", "precision": self.precision,
            "entries": [dict(e) for e in self._entries],
        }

    def export_model(self, path: str | Path, *, name: str = "model", check: bool = True) -> Path:
        """Write the IR to folder ``path`` (``<name>.xml/.bin/.json`` and ``report.json``), atomically.

        Before the folder appears the written IR is run and compared with the torch model, with the
        tolerances of ``practise export`` (int8 rules for any low-precision IR). Returns the ``.xml``."""
        size = self.bundle.data_config.input_size
        batch = self.batch
        ov_model = self.ov_model if self.ov_model is not None else to_openvino(self.model, size, batch)
        tolerance = "fp32" if self.precision == "fp32" else "int8"

        def compare(xml: Path) -> dict[str, Any]:
            return check_ir(self.model, xml, tolerance, self._inputs_for_check(), batch)

        xml, _ = write_ir(ov_model, path, name=name, precision=self.precision, batch_size=batch, input_size=size,
                          data_config=self.bundle.data_config, class_names=self._class_names,
                          meta={"model": self.bundle.spec, "nncf_config": self.config.raw},
                          check=compare if check else None, tolerance=tolerance,
                          extra_json={REPORT_NAME: self.statistics()})
        return xml

    def _inputs_for_check(self) -> torch.Tensor:
        """Real (or synthetic) images when there are some: quantized networks are judged on data."""
        batch = self.batch
        if self._check_images is not None and len(self._check_images) >= batch:
            n = min(CHECK_IMAGES, len(self._check_images))
            return self._check_images.images[: n - n % batch]
        return example_input(self.bundle.data_config.input_size, max(batch, 16), seed=1)


def _bundle(model: nn.Module | str | ModelBundle, config: NNCFStyleConfig) -> ModelBundle:
    """The model at the config's input size; a caller's ModelBundle is copied, never modified."""
    if isinstance(model, ModelBundle):
        model = dataclasses.replace(model)
    bundle = load_model(model)
    if config.input_size is not None:
        channels = bundle.data_config.input_size[0]
        if config.input_size[0] != channels:
            raise ConfigError(f"input_info.sample_size {list(config.sample_size)} has {config.input_size[0]} "
                              f"channels but {bundle.spec} takes {channels}; fix sample_size")
        bundle = load_model(bundle, input_size=config.input_size)
    return bundle


NATIVE_CALLS = {"quantization": "nncf.quantize", "magnitude_sparsity": "nncf.prune",
                "weight_compression": "nncf.compress_weights"}


def strategy_params(config: NNCFStyleConfig, entry: Entry) -> dict[str, Any]:
    """A strategy entry's params, with the config's top-level ``batch_size`` as the default batch."""
    params = dict(entry.body.get("params") or {})
    fields = get_strategy(entry.algorithm).config_cls.__dataclass_fields__
    if config.batch_size is not None and "batch_size" in fields and "batch_size" not in params:
        params["batch_size"] = config.batch_size
    return params


def answer(config: NNCFStyleConfig, entry: Entry, data: ImageSet | None) -> tuple[dict[str, Any], PractiseError | None]:
    """What happens to one entry: ``action`` (runs here / delegated to NNCF / refused), the fields that
    will not be applied (with why) and, when refused, the ``problem`` (it names the entry, the field and
    the fix), with the error itself. Nothing is run."""
    out: dict[str, Any] = {"index": entry.index, "where": entry.where, "algorithm": entry.algorithm,
                           "action": "", "not_applied": {}, "problem": None}
    try:
        if entry.index in config.problems:
            raise config.problems[entry.index]
        if entry.is_strategy:
            out["action"] = f"runs here (strategy {entry.algorithm!r})"
            out["params"] = build_config(entry.algorithm, strategy_params(config, entry)).to_dict()
            strat = get_strategy(entry.algorithm)
            if data is None and strat.needs_data:
                raise DataError(f"{entry.label} needs {'labelled ' if strat.needs_labels else ''}images: pass "
                                "dataset=FOLDER or an ImageSet (CLI: --data FOLDER)")
            if data is not None and strat.needs_labels and not data.has_labels:
                raise DataError(f"{entry.label} trains on labels, and these images carry none that are the "
                                "model's classes: give one sub-folder per class, named after the model's classes "
                                "(or one per output, in the order it was trained on)")
        else:
            out["action"] = f"delegated to {NATIVE_CALLS[entry.algorithm]} (NNCF 3.x)"
            out["not_applied"] = native.check(entry)
    except PractiseError as e:
        out["action"], out["problem"] = "refused", str(e)
        return out, e
    return out, None


def preflight(config: NNCFStyleConfig, data: ImageSet | None) -> dict[int, list[str]]:
    """Everything that can be checked without compressing, so a bad last entry fails in seconds, not
    after the first entry's minutes of work: strategy options, data needs, NNCF keys we cannot honour.
    Returns, per entry index, the NNCF 2.x keys that will not be applied (each is warned about once)."""
    not_applied: dict[int, list[str]] = {}
    for entry in config.entries:
        ans, error = answer(config, entry, data)
        if error is not None:
            raise error
        for key, why in ans["not_applied"].items():
            warnings.warn(f"{entry.label}: {key!r} is not applied ({why})", UserWarning, stacklevel=3)
        if not entry.is_strategy:
            not_applied[entry.index] = list(ans["not_applied"])
    for note in config.notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    return not_applied


def plan(
    model: nn.Module | str | ModelBundle, config: NNCFStyleConfig | dict[str, Any] | str | Path,
    dataset: ImageSet | str | Path | None = None, *, num_samples: int | None = None, **run_options: Any,
) -> dict[str, Any]:
    """The dry run behind ``practise nncf --check``: read the config and the model and say, entry by entry,
    what would happen, without compressing or writing anything. ``runnable`` is False when any entry is
    refused, the order cannot run or the model does not fit the config; each problem names the fix."""
    cfg = load_config(config, lenient=True)
    opts = RunOptions.resolve(cfg.run_options, **run_options)
    problems: list[str] = []
    try:
        bundle = _bundle(model, cfg)
        data = tiny_set_from(dataset, bundle.data_config, num_samples, 0, False)
        spec, input_size = bundle.spec, list(bundle.data_config.input_size)
    except PractiseError as e:
        problems.append(str(e))
        data, spec, input_size = None, str(getattr(model, "spec", model)), None
    entries = [answer(cfg, e, data)[0] for e in cfg.entries]
    if not cfg.problems:
        try:
            check_order(cfg.entries)
        except ConfigError as e:
            problems.append(str(e))
    runnable = not problems and all(e["problem"] is None for e in entries)
    return {"model": spec, "input_size": input_size, "ir_batch": opts.latency_batch_size,
            "target_device": cfg.target_device, "batch_size": cfg.batch_size, "notes": cfg.notes,
            "not_used": cfg.not_used, "entries": entries, "problems": problems, "runnable": runnable,
            "data": None if data is None else {"source": data.source, "images": len(data)}}


class _EntryRunner:
    """Applies the entries one by one, holding the model between them: the torch model, then possibly the
    OpenVINO model the low-precision entries produce."""

    def __init__(self, config: NNCFStyleConfig, bundle: ModelBundle, data: ImageSet | None, opts: RunOptions) -> None:
        self.config, self.bundle, self.data, self.opts = config, bundle, data, opts
        self.batch = opts.latency_batch_size  # the IR's static batch: the batch latency is measured at
        self.model: nn.Module = bundle.model
        self.ov_model: ov.Model | None = None
        self.synthetic: ImageSet | None = None

    def context(self, entry: Entry) -> CompressionContext:
        o = self.opts
        work = None if o.work_dir is None else o.work_dir / f"{entry.index:02d}-{entry.algorithm}"
        if work is not None:
            work.mkdir(parents=True, exist_ok=True)
        meter = LatencyMeter(o.latency_backend, batch_size=o.latency_batch_size, num_threads=o.num_threads,
                             device=o.device, input_size=self.bundle.data_config.input_size)
        return CompressionContext(self.bundle.data_config, device=o.device, work_dir=work, progress=o.progress,
                                  model_spec=self.bundle.spec, latency=meter)

    def calibration(self) -> ImageSet:
        """The tiny set, or (data-free) images synthesised from the original model's BatchNorm statistics."""
        if self.data is not None:
            return self.data
        if self.synthetic is None:
            o = self.opts
            self.synthetic = synthesize(self.bundle.model, self.bundle.data_config, SynthesisConfig(
                num_images=o.synthetic_images, iters=o.synthetic_iters, seed=0), cache_dir=o.work_dir,
                device=o.device, progress=o.progress)
        return self.synthetic

    def openvino_model(self) -> ov.Model:
        if self.ov_model is None:
            self.model = self.model.cpu().eval()
            self.ov_model = to_openvino(self.model, self.bundle.data_config.input_size, self.batch)
        return self.ov_model

    def apply(self, entry: Entry) -> dict[str, Any]:
        if entry.is_strategy:
            return self._strategy(entry)
        if entry.algorithm == "magnitude_sparsity":
            self.model, stats = native.magnitude_sparsity(
                self.model, entry, example_input(self.bundle.data_config.input_size, 1).to(self.opts.device))
            return stats
        if entry.algorithm == "quantization":
            self.ov_model, stats = native.quantize(self.openvino_model(), entry, self.calibration(), self.batch,
                                                   self.config.target_device)
            return stats
        self.ov_model, stats = native.compress_weights(self.openvino_model(), entry)
        return stats

    def _strategy(self, entry: Entry) -> dict[str, Any]:
        strategy = get_strategy(entry.algorithm)
        cfg = build_config(entry.algorithm, strategy_params(self.config, entry))
        before = count_params(self.model)
        result = strategy.apply(self.model, self.data, cfg, self.context(entry))
        self.model = result.model
        dropped = [b for op in result.surgery if op.get("op") == "drop_blocks" for b in op.get("blocks", [])]
        return {"strategy": result.strategy, "config": result.config, "surgery": result.surgery,
                "blocks_dropped": dropped, "params_before": before, "params_after": count_params(result.model),
                "details": result.stats}


def create_compressed_model(
    model: nn.Module | str | ModelBundle,
    config: NNCFStyleConfig | dict[str, Any] | str | Path,
    dataset: ImageSet | str | Path | None = None,
    *,
    num_samples: int | None = None,
    **run_options: Any,
) -> tuple[nn.Module | ov.Model, CompressionController]:
    """Apply the config's entries in order; return ``(compressed_model, controller)``.

    ``model``: a module, a spec string (``builtin``, ``timm:NAME``, ...) or a ModelBundle; it is never
    modified. ``config``: a dict, the path of a JSON file or an :class:`NNCFStyleConfig`. ``dataset``:
    the tiny set (an ImageSet or a folder); without it data-free strategies run as they are and
    quantization calibrates on synthetic images. ``run_options`` are the fields of
    :class:`~practise_plugin.nncf.config.RunOptions` (``device``, ``work_dir``, ``latency_backend``,
    ``num_threads``, ``progress``, ...), overriding the config's ``"practise"`` section.

    The compressed model is the OpenVINO model when ``quantization`` or ``weight_compression`` ran,
    else the torch model. (NNCF 2.x returned ``(controller, model)``; this follows the issue's order.)
    """
    cfg = load_config(config)
    opts = RunOptions.resolve(cfg.run_options, **run_options)
    bundle = _bundle(model, cfg)
    data = tiny_set_from(dataset, bundle.data_config, num_samples, 0, opts.progress)
    if data is not None:
        data, _ = with_model_labels(data, bundle)  # labels index the model's outputs, or there are none
    not_applied = preflight(cfg, data)
    run = _EntryRunner(cfg, bundle, data, opts)
    entries = []
    for entry in cfg.entries:
        start = time.perf_counter()
        stats = run.apply(entry)
        if entry.index in not_applied:
            stats["not_applied"] = not_applied[entry.index]
        entries.append({"index": entry.index, "algorithm": entry.algorithm, "stage": entry.stage,
                        "seconds": round(time.perf_counter() - start, 3), **stats})
    controller = CompressionController(cfg, bundle, run.model, run.ov_model, entries,
                                       data if data is not None else run.synthetic, output_names(bundle, data), run.batch)
    return controller.compressed_model, controller


def run_config(
    model_bundle: nn.Module | str | ModelBundle,
    config: NNCFStyleConfig | dict[str, Any] | str | Path,
    data: ImageSet | str | Path | None,
    out_dir: str | Path,
    *,
    num_samples: int | None = None,
    name: str = "model",
    check: bool = True,
    **run_options: Any,
) -> CompressionController:
    """Run ``config`` on the model and export the result to ``out_dir`` (what ``practise nncf`` calls).

    The config and the output folder are checked before any compression starts."""
    cfg = load_config(config)
    prepare_out_dir(out_dir, name, (REPORT_NAME,))
    _, controller = create_compressed_model(model_bundle, cfg, data, num_samples=num_samples, **run_options)
    controller.export_model(out_dir, name=name, check=check)
    return controller
