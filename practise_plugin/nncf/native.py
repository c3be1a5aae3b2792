"""NNCF-native config entries, translated to the installed NNCF 3.x API.

Why it exists: NNCF 3.x dropped ``create_compressed_model``; its one-shot functions remain. Each entry
maps onto one of them, with the NNCF 2.x keys translated where a 3.x equivalent exists:

- ``quantization`` -> ``nncf.quantize`` on the OpenVINO model (the ``nncf.torch`` route compiles a C++
  extension on first use), calibrated on the tiny set or on synthetic images;
- ``magnitude_sparsity`` -> ``nncf.prune`` (torch only in NNCF 3.4), masks then baked into the weights;
- ``weight_compression`` -> ``nncf.compress_weights`` on the OpenVINO model.

Keys that only steered NNCF 2.x quantization-aware *training* are accepted and reported as not
applied; keys whose meaning we cannot honour are rejected with the reason, by :func:`check` before
anything runs. No algorithm lives here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import nncf
import openvino as ov
import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.inputs import ImageSet
from ..core.torch_utils import copy_model
from ..export.ir import calibration_batches
from .config import Entry

# Accepted from NNCF 2.x configs, but they only steer quantization-aware training or NNCF's own ONNX
# export: a post-training call has nothing to apply them to.
QUANTIZATION_NOT_APPLIED = {
    "quantize_inputs": "nncf.quantize always quantizes model inputs that feed quantizable operations",
    "export_to_onnx_standard_ops": "the result is an OpenVINO IR, not an ONNX file",
    "compression_lr_multiplier": "no training takes place",
    "params": "quantization-aware training schedules need a training loop",
    "initializer.batchnorm_adaptation": "post-training quantization has no BatchNorm adaptation step",
    "initializer.range.type": "nncf.quantize picks its own range estimators",
    "weights.signed": "nncf.quantize chooses signedness from the statistics",
    "activations.signed": "nncf.quantize chooses signedness from the statistics",
    "weights.logarithm_scale": "only affects trainable scales in quantization-aware training",
    "activations.logarithm_scale": "only affects trainable scales in quantization-aware training",
}
QUANTIZATION_REJECTED = {
    "target_scopes": "nncf.quantize has no target scopes; list what to skip in ignored_scopes instead",
    "scope_overrides": "nncf.quantize has no per-scope quantizer settings; move those nodes to ignored_scopes",
    "initializer.precision": "mixed-precision search (HAWQ/AutoQ) is gone in NNCF 3.x; remove it for INT8, or use "
                             "weight_compression for 4-bit weights",
    "weights.ignored_scopes": "per-group scopes are gone in NNCF 3.x; use the entry's ignored_scopes",
    "weights.target_scopes": "per-group scopes are gone in NNCF 3.x; use the entry's ignored_scopes",
    "activations.ignored_scopes": "per-group scopes are gone in NNCF 3.x; use the entry's ignored_scopes",
    "activations.target_scopes": "per-group scopes are gone in NNCF 3.x; use the entry's ignored_scopes",
}
SPARSITY_NOT_APPLIED = {
    "compression_lr_multiplier": "no training takes place",
    "initializer": "nncf.prune has no BatchNorm adaptation step",
    "params.schedule": "one-shot: the final sparsity level is applied at once",
    "params.multistep_steps": "one-shot: the final sparsity level is applied at once",
    "params.sparsity_target_epoch": "one-shot: the final sparsity level is applied at once",
    "params.sparsity_freeze_epoch": "one-shot: the final sparsity level is applied at once",
    "params.update_per_optimizer_step": "one-shot: the final sparsity level is applied at once",
    "params.steps_per_epoch": "one-shot: the final sparsity level is applied at once",
    "params.patience": "one-shot: the final sparsity level is applied at once",
    "params.power": "one-shot: the final sparsity level is applied at once",
    "params.concave": "one-shot: the final sparsity level is applied at once",
}
LOW_PRECISION_TYPES = {"u8", "i8", "u4", "i4", "nf4"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out[key] = v
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
    return out


def check(entry: Entry) -> dict[str, str]:
    """Before anything runs: raise on keys we cannot honour; return the keys that will have no effect,
    each with the reason."""
    keys = _flat(entry.body)
    not_applied, rejected = {"quantization": (QUANTIZATION_NOT_APPLIED, QUANTIZATION_REJECTED),
                             "magnitude_sparsity": (SPARSITY_NOT_APPLIED, {})}.get(entry.algorithm, ({}, {}))
    for key, why in rejected.items():
        if key in keys:
            raise ConfigError(f"{entry.label}: {key!r} cannot be applied: {why}")
    if entry.algorithm == "quantization":
        for group in ("weights", "activations"):
            bits = entry.body.get(group, {}).get("bits", 8)
            if bits != 8:
                raise ConfigError(f"{entry.label}: {group}.bits={bits} is not supported: nncf.quantize is 8-bit; "
                                  "use a weight_compression entry for 4-bit weights")
    if entry.algorithm == "magnitude_sparsity":
        sparsity_level(entry)
        if entry.body.get("weight_importance") == "normed_abs":
            raise ConfigError(f"{entry.label}: weight_importance 'normed_abs' is not available in nncf.prune, which "
                              "ranks weights by absolute magnitude; set \"weight_importance\": \"abs\"")
    return {key: why for key, why in not_applied.items() if key in keys}


def ignored_scope(scopes: list[str] | None) -> nncf.IgnoredScope | None:
    """NNCF 2.x scope strings: plain names stay names, ``{re}...`` strings become patterns."""
    if not scopes:
        return None
    names = [s for s in scopes if not s.startswith("{re}")]
    patterns = [s[len("{re}"):] for s in scopes if s.startswith("{re}")]
    return nncf.IgnoredScope(names=names, patterns=patterns)


def _scope_error(entry: Entry, error: Exception, examples: list[str]) -> ConfigError:
    return ConfigError(
        f"{entry.label}: {str(error).strip()} ignored_scopes name nodes of the model NNCF sees, e.g. "
        f"{', '.join(repr(n) for n in examples[:6])}; use '{{re}}<regex>' for patterns")


def _weighted_ov_nodes(model: ov.Model) -> list[str]:
    """Names of the quantizable operations; those named after torch modules first (some are renamed
    by OpenVINO's conversion, e.g. convolutions with folded BatchNorm become ``Multiply_<n>``)."""
    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]
    return sorted(names, key=lambda n: not n.startswith("__module."))


def _weighted_torch_nodes(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names ``nncf.prune`` matches ignored scopes against, e.g. ``layer1.0.conv1/conv2d/0``."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
    from nncf.torch.function_hook.pruning.prune_model import OPERATORS_WITH_WEIGHTS_METATYPES
    from nncf.torch.function_hook.wrapper import wrap_model

    graph = build_nncf_graph(wrap_model(copy_model(model)), example)
    return [n.node_name for n in graph.get_nodes_by_metatypes(OPERATORS_WITH_WEIGHTS_METATYPES)]


def _quantizer_params(group: dict[str, Any] | None):
    from nncf.quantization.advanced_parameters import QuantizationMode, QuantizationParameters

    if not group:
        return None
    mode = group.get("mode")
    return QuantizationParameters(num_bits=8, mode=None if mode is None else QuantizationMode(mode),
                                  per_channel=group.get("per_channel"))


def quantize(model: ov.Model, entry: Entry, calibration: ImageSet, batch_size: int,
             target_device: str) -> tuple[ov.Model, dict[str, Any]]:
    """``quantization`` entry -> ``nncf.quantize`` (post-training INT8) on the OpenVINO model."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    body = entry.body
    items = calibration_batches(calibration, batch_size)
    requested = body.get("subset_size", body.get("initializer", {}).get("range", {}).get("num_init_samples", 300))
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix(body["overflow_fix"]) if "overflow_fix" in body else None,
        quantize_outputs=body.get("quantize_outputs", False),
        weights_quantization_params=_quantizer_params(body.get("weights")),
        activations_quantization_params=_quantizer_params(body.get("activations")),
    )
    kwargs: dict[str, Any] = dict(
        preset=nncf.QuantizationPreset(body["preset"]) if "preset" in body else None,
        target_device=nncf.TargetDevice(target_device), subset_size=min(requested, len(items)),
        fast_bias_correction=body.get("fast_bias_correction", True),
        model_type=nncf.ModelType(body["model_type"]) if "model_type" in body else None,
        ignored_scope=ignored_scope(body.get("ignored_scopes")), advanced_parameters=advanced,
    )
    try:
        quantized = nncf.quantize(model, nncf.Dataset(items), **kwargs)
    except nncf.ValidationError as e:
        raise _scope_error(entry, e, _weighted_ov_nodes(model)) from e
    ops = Counter(op.get_type_name() for op in quantized.get_ordered_ops())
    return quantized, {
        "nncf_call": "nncf.quantize", "preset": body.get("preset", "default (performance for CNNs)"),
        "target_device": target_device, "subset_size": kwargs["subset_size"], "subset_size_requested": requested,
        "calibration_images": len(items) * batch_size, "calibration_source": calibration.source,
        "ignored_scopes": body.get("ignored_scopes", []), "fake_quantize_nodes": ops["FakeQuantize"],
    }


def sparsity_level(entry: Entry) -> float:
    """The final level an NNCF 2.x magnitude_sparsity schedule would reach, applied here at once."""
    params = entry.body.get("params", {})
    for level in (params.get("sparsity_target"), (params.get("multistep_sparsity_levels") or [None])[-1],
                  entry.body.get("sparsity_init")):
        if level:
            return float(level)
    raise ConfigError(f"{entry.label} sets no sparsity level; add \"sparsity_init\": 0.5 or "
                      "\"params\": {\"sparsity_target\": 0.5}")


def magnitude_sparsity(model: nn.Module, entry: Entry, example: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """``magnitude_sparsity`` -> ``nncf.prune`` (unstructured magnitude) on a copy, masks baked in.

    ``nncf.prune`` wraps the model with NNCF hooks that multiply weights by masks; ``nncf.strip`` would
    fold them but imports ``torchao``. Copying the masks onto a clean copy gives a plain module that
    later steps, checkpoints and OpenVINO conversion handle like any other."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.pruning.magnitude.modules import UnstructuredPruningMask
    from nncf.torch.function_hook.wrapper import get_hook_storage

    level = sparsity_level(entry)
    setting = entry.body.get("params", {}).get("sparsity_level_setting_mode", "global")
    mode = nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL if setting == "global" else nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL
    wrapped = copy_model(model).eval()
    try:
        wrapped = nncf.prune(wrapped, mode=mode, ratio=level, ignored_scope=ignored_scope(entry.body.get("ignored_scopes")),
                             examples_inputs=example)
    except nncf.ValidationError as e:
        raise _scope_error(entry, e, _weighted_torch_nodes(model, example)) from e
    reported = nncf.pruning_statistic(wrapped)
    pruned = copy_model(model).eval()
    zeros = total = 0
    with torch.no_grad():
        for hook_name, hook in get_hook_storage(wrapped).named_hooks():
            if isinstance(hook, UnstructuredPruningMask):
                weight = pruned.get_parameter(decode_hook_name(hook_name)[1])
                weight.mul_(hook.binary_mask.to(weight.dtype))
                zeros += int((weight == 0).sum())
                total += weight.numel()
    if total == 0:
        raise ConfigError(f"{entry.label}: nncf.prune found no prunable weights (convolutions, linear layers) to mask")
    return pruned, {
        "nncf_call": f"nncf.prune(mode={mode.name})", "sparsity_level": level,
        "nncf_pruning_ratio": reported.pruning_ratio, "nncf_global_pruning_ratio": reported.global_pruning_ratio,
        "pruned_tensors": len(reported.pruned_tensors), "zero_fraction_of_pruned_weights": zeros / total,
    }


def compress_weights(model: ov.Model, entry: Entry) -> tuple[ov.Model, dict[str, Any]]:
    """``weight_compression`` -> ``nncf.compress_weights`` (data-free) on the OpenVINO model."""
    body = entry.body
    mode = body.get("mode", "int8_asym")
    kwargs: dict[str, Any] = {k: body[k] for k in ("ratio", "group_size", "all_layers") if k in body}
    try:
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode(mode),
                                           ignored_scope=ignored_scope(body.get("ignored_scopes")), **kwargs)
    except nncf.ValidationError as e:
        raise _scope_error(entry, e, _weighted_ov_nodes(model)) from e
    except (nncf.ParameterNotSupportedError, nncf.InvalidGroupSizeError) as e:
        raise ConfigError(f"{entry.label}: NNCF cannot compress this model so: {e}") from e
    types = Counter(op.get_element_type().get_type_name() for op in compressed.get_ordered_ops()
                    if op.get_type_name() == "Constant")
    return compressed, {
        "nncf_call": "nncf.compress_weights", "mode": mode, **kwargs,
        "low_precision_constants": {t: n for t, n in sorted(types.items()) if t in LOW_PRECISION_TYPES},
    }
