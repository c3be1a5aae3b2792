"""The JSON schema of NNCF-style configs, completed at validation time from the strategy registry.

Why it exists: users hand us configs written for NNCF 2.x. One schema states what we accept: the
static part lives in ``nncf/config.schema.json`` (shipped as package data, readable by editors
and other tools); the algorithm names and each strategy's ``params`` keys are filled in from
:mod:`practise_plugin.strategies` when validating, so a new strategy is accepted the moment it registers.
Legacy NNCF algorithms we cannot run are caught before the schema, with the alternative to use.
"""

from __future__ import annotations

import copy
import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from ..strategies import get_strategy, list_strategies

if TYPE_CHECKING:
    import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.json"

# NNCF-native algorithms delegated to the installed NNCF 3.x API, and the model they operate on.
NATIVE_STAGES: dict[str, str] = {
    "magnitude_sparsity": "torch",  # nncf.prune works on torch modules only
    "quantization": "openvino",  # nncf.quantize on the converted ov.Model (no nncf.torch C++ build)
    "weight_compression": "openvino",  # nncf.compress_weights on the ov.Model
}

# NNCF 2.x algorithms that NNCF 3.x removed (or that need a training loop we do not own), and what to use.
LEGACY_ALTERNATIVES: dict[str, str] = {
    "filter_pruning": 'NNCF 3.x removed it (with its geometric-median, L1/L2 and learned-ranking criteria); use '
                      '"practise" to drop whole blocks for a latency target, "udfc" for data-free filter pruning, '
                      '"swd" for structured pruning while training, or Torch-Pruning for other channel criteria',
    "binarization": "NNCF 3.x removed binarization (XNOR, DoReFa); for low-bit weights use \"udfc\" with bits (2-8, "
                    "data-free) or a weight_compression entry (int4/int8 weights)",
    "rb_sparsity": 'use "magnitude_sparsity" (one-shot, via nncf.prune), or nncf.prune(mode='
                   "PruneMode.UNSTRUCTURED_REGULARIZATION_BASED) inside your own training loop",
    "const_sparsity": "it only kept existing zeros during fine-tuning; fine-tune the model as it is, no entry needed",
    "movement_sparsity": 'use "magnitude_sparsity" (one-shot) or "swd" for structured sparsity',
    "knowledge_distillation": '"practise" and "swd" already recover by mimicking the original model; '
                              "for other models distil in your own training loop",
    "elasticity": "NNCF's BootstrapNAS is not supported; drop blocks with \"practise\" instead",
    "progressive_shrinking": "NNCF's BootstrapNAS is not supported; drop blocks with \"practise\" instead",
    "experimental_quantization": 'use "quantization" (post-training, nncf.quantize)',
    "NoCompressionAlgorithm": "remove the entry",
}


def known_algorithms() -> list[str]:
    """Every accepted ``"algorithm"`` value: registered strategies first, then NNCF-native names."""
    return list_strategies() + sorted(NATIVE_STAGES)


def stage_of(algorithm: str) -> str:
    """'torch' or 'openvino': which model the entry works on (decides which orders are valid)."""
    return NATIVE_STAGES.get(algorithm, "torch")


@lru_cache(maxsize=1)
def _static_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def strategy_params_schema(name: str) -> dict[str, Any]:
    """The ``params`` object of strategy ``name``: its config fields, with types and help texts."""
    return get_strategy(name).config_cls.json_schema()


def config_schema() -> dict[str, Any]:
    """The complete schema for the strategies registered now (what ``validate`` checks against)."""
    schema = copy.deepcopy(_static_schema())
    defs = schema["$defs"]
    rules = []
    for name in list_strategies():
        entry = copy.deepcopy(defs["strategy"])
        entry["properties"]["algorithm"] = {"const": name}
        entry["properties"]["params"] = strategy_params_schema(name)
        entry["description"] = get_strategy(name).description
        defs[f"strategy_{name}"] = entry
        rules.append((name, f"strategy_{name}"))
    rules += [(name, name) for name in sorted(NATIVE_STAGES)]
    defs["entry"] = {
        "type": "object",
        "required": ["algorithm"],
        "properties": {"algorithm": {"enum": known_algorithms()}},
        "allOf": [{"if": {"properties": {"algorithm": {"const": n}}}, "then": {"$ref": f"#/$defs/{d}"}}
                  for n, d in rules],
    }
    return schema


def _entries(raw: dict[str, Any]) -> list[Any]:
    section = raw.get("compression")
    return section if isinstance(section, list) else [section] if section is not None else []


def _entry_label(raw: dict[str, Any], i: int) -> str:
    return f"compression[{i}]" if isinstance(raw.get("compression"), list) else "compression"


def _algorithm_problem(label: str, entry: dict[str, Any]) -> ConfigError | None:
    """A clear error for a legacy or misspelt name, before the schema reports a bare enum mismatch."""
    name = entry.get("algorithm")
    if not isinstance(name, str):
        return None
    known = known_algorithms()
    if name in LEGACY_ALTERNATIVES:
        return ConfigError(f"{label}: NNCF algorithm {name!r} is not available with NNCF 3.x or in "
                           f"practise-plugin; {LEGACY_ALTERNATIVES[name]}")
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"{label}: unknown algorithm {name!r}{hint}; known algorithms: {', '.join(known)}")
    return None


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return path or "the top level"


def _message(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(where, what) of the most specific failure: "compression may be an object or a list" says less
    than the missing key inside the list, so descend into the alternatives that got furthest."""
    while error.context:
        deepest = max(len(e.absolute_path) for e in error.context)
        candidates = [e for e in error.context if len(e.absolute_path) == deepest]
        if all(e.validator == "type" for e in candidates):
            wanted = " or ".join(sorted({str(e.validator_value) for e in candidates}))
            return _where(candidates[0]), f"expected {wanted}, got {candidates[0].instance!r}"
        error = next(e for e in candidates if e.validator != "type")
    return _where(error), error.message


def _schema_error(schema: dict[str, Any], instance: Any, prefix: str = "") -> ConfigError | None:
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(instance))
    if error is None:
        return None
    where, what = _message(error)
    if prefix:
        where = prefix if where == "the top level" else f"{prefix}.{where}" if not where.startswith("[") else prefix + where
    hint = " (see `practise strategies NAME` for its params)" if ".params" in where else ""
    return ConfigError(f"invalid NNCF-style config at {where}: {what}{hint}")


def validate_top_level(raw: Any) -> None:
    """Raise :class:`ConfigError` if the config's own keys (not its entries) are malformed."""
    if not isinstance(raw, dict):
        raise ConfigError(f"an NNCF-style config must be a JSON object, got {type(raw).__name__}")
    schema = config_schema()
    top = {**schema, "$defs": {**schema["$defs"], "entry": {"type": "object"}}}
    if (error := _schema_error(top, raw)) is not None:
        raise error


def entry_problem(raw: dict[str, Any], i: int) -> ConfigError | None:
    """What is wrong with entry ``i`` of a config whose top level is valid, or None."""
    entry = _entries(raw)[i]
    label = _entry_label(raw, i)
    if isinstance(entry, dict) and (problem := _algorithm_problem(label, entry)) is not None:
        return problem
    schema = config_schema()
    return _schema_error({"$defs": schema["$defs"], "$ref": "#/$defs/entry"}, entry, label)


def validate(raw: Any) -> None:
    """Raise :class:`ConfigError` naming the offending key if ``raw`` is not a valid config."""
    validate_top_level(raw)
    for i in range(len(_entries(raw))):
        if (problem := entry_problem(raw, i)) is not None:
            raise problem
