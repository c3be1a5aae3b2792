"""OpenVINO adapter: torch model -> IR (fp32 / fp16 / int8), checked against torch, written atomically.

Why it exists: latency that PRACTISE optimises is only real if the deployed artifact is the same network.
Export therefore (1) converts with a static input shape, the shape latency was measured at, (2) for INT8
quantizes the *OpenVINO* model with NNCF post-training quantization (the nncf.torch route compiles a C++
extension first, minutes on a small machine), (3) runs the written IR on real inputs and compares it with
torch at a tolerance stated per precision, and (4) only then moves the folder into place, so an
interrupted or failed export leaves nothing behind. Next to the IR, ``<name>.json`` holds the
preprocessing (:class:`~practise_plugin.data.DataConfig`) and class names the deployment recipe needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov
import torch
from torch import nn

from .data import DataConfig, ImageSet
from .errors import ConfigError, DataError, ExportError, ModelError
from .io import atomic_dir, ensure_writable_dir
from .latency import eval_mode, example_input, torch_threads

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
IR_CONFIG_FORMAT = "practise-plugin/openvino-ir/1"

# Pass criteria of the post-export check. fp32/fp16: max |IR - torch| over the outputs must stay within
# rtol x max |torch output| (fp32 differs from torch only by summation order; fp16 stores weights with a
# 10-bit mantissa). int8 changes every activation, so element errors say little: the IR must instead
# agree with torch on the top-1 class and keep the output direction (cosine similarity).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"rtol": 1e-4},
    "fp16": {"rtol": 1e-2},
    "int8": {"min_top1_agreement": 0.9, "min_mean_cosine": 0.98},
}


def to_openvino(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1) -> ov.Model:
    """Convert in eval mode with a static (batch, C, H, W) input: the shape deployment and latency use.

    Tracing runs on one torch thread: its cost is mostly Python overhead, and on a busy machine extra
    OpenMP threads made it 2-5x slower (ResNet-50: 3 s on one thread, 6-17 s on two, load average 8)."""
    with eval_mode(model), torch.no_grad(), torch_threads(1):
        try:
            return ov.convert_model(model, example_input=example_input(input_size, batch_size),
                                    input=[(batch_size, *input_size)])
        except Exception as e:  # noqa: BLE001 - the frontends raise many types; the first line says what failed
            raise ExportError(
                f"OpenVINO could not convert {type(model).__name__} at input {(batch_size, *input_size)}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}. Check that the model runs "
                "on that input in torch and that its forward has no Python-side state (tracing freezes it)."
            ) from e


def cpu_properties(num_threads: int | None = None, *, exact_f32: bool = False) -> dict[str, object]:
    """Compile settings for single-request latency: LATENCY hint, one stream, optional thread count.

    ``exact_f32`` keeps f32 arithmetic; otherwise OpenVINO may run bf16 on CPUs that support it, which is
    what deployment gets, so latency is measured that way and only the accuracy check forces f32."""
    props: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if num_threads is not None:
        if num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
        props["INFERENCE_NUM_THREADS"] = int(num_threads)
    if exact_f32:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    return props


def compile_cpu(model: ov.Model | str | Path, num_threads: int | None = None, *, exact_f32: bool = False) -> ov.CompiledModel:
    return ov.Core().compile_model(model if isinstance(model, ov.Model) else str(model), "CPU",
                                   cpu_properties(num_threads, exact_f32=exact_f32))


def resolve_ir(path: str | Path) -> Path:
    """The ``.xml`` of an IR given itself or its folder; its ``.bin`` must sit beside it."""
    xml_path = Path(path)
    if xml_path.is_dir():
        found = sorted(xml_path.glob("*.xml"))
        if len(found) != 1:
            raise ModelError(f"{xml_path} holds {len(found)} .xml files; pass the IR's .xml file itself")
        xml_path = found[0]
    if not xml_path.is_file() or xml_path.suffix != ".xml":
        raise ModelError(f"{xml_path} is not an OpenVINO IR; pass the .xml (or folder) written by `practise export`")
    if not xml_path.with_suffix(".bin").is_file():
        raise ModelError(f"{xml_path.with_suffix('.bin')} is missing; an IR needs its .xml and .bin side by side")
    return xml_path


def load_openvino(xml_path: str | Path, num_threads: int | None = None, *, exact_f32: bool = False) -> ov.CompiledModel:
    """Compile a saved IR (its ``.xml`` or folder) for CPU latency, as :func:`cpu_properties` describes.

    By default the CPU plugin may compute in bf16 where the processor supports it (OpenVINO's default,
    and what latency is measured with); ``exact_f32=True`` reproduces torch's fp32 results."""
    return compile_cpu(resolve_ir(xml_path), num_threads, exact_f32=exact_f32)


@dataclass
class IRConfig:
    """What ``<name>.json`` beside an IR says about feeding it."""

    data_config: DataConfig | None
    class_names: list[str]
    batch_size: int
    precision: str


def read_ir_config(xml_path: str | Path) -> IRConfig:
    """Read the ``.json`` written next to the IR by :func:`export_openvino`."""
    path = resolve_ir(xml_path).with_suffix(".json")
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path} ({e.__class__.__name__}); re-export with `practise export` to write it") from e
    if d.get("format") != IR_CONFIG_FORMAT:
        raise ModelError(f"{path} was not written by `practise export`; re-export the model")
    dc = DataConfig.from_dict(d) if "mean" in d else None
    return IRConfig(dc, list(d.get("class_names") or []), int(d["batch_size"]), str(d["precision"]))


@dataclass
class ExportResult:
    """Where the IR is and how closely it matched torch (``checked`` False: no check was run)."""

    xml: Path
    bin: Path
    config: Path
    precision: str
    batch_size: int
    input_size: tuple[int, int, int]
    checked: bool
    tolerance: dict[str, float] = field(default_factory=dict)
    max_abs_err: float | None = None
    max_ref_abs: float | None = None
    top1_agreement: float | None = None
    mean_cosine: float | None = None
    check_inputs: int = 0

    def to_dict(self) -> dict:
        return {"xml": str(self.xml), "bin": str(self.bin), "config": str(self.config), "precision": self.precision,
                "batch_size": self.batch_size, "input_size": list(self.input_size), "checked": self.checked,
                "tolerance": dict(self.tolerance), "max_abs_err": self.max_abs_err, "max_ref_abs": self.max_ref_abs,
                "top1_agreement": self.top1_agreement, "mean_cosine": self.mean_cosine,
                "check_inputs": self.check_inputs}


def _first_tensor(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise ExportError(f"the model returned {type(out).__name__}, not a tensor; export a module that returns its logits")


def _batched(images: torch.Tensor, batch_size: int) -> list[np.ndarray]:
    """Whole batches of the IR's static batch size (a trailing partial batch is left out)."""
    n = len(images) - len(images) % batch_size
    return [images[i : i + batch_size].numpy() for i in range(0, n, batch_size)]


def quantize_int8(ov_model: ov.Model, calibration: ImageSet, batch_size: int = 1, subset_size: int = 300) -> ov.Model:
    """NNCF post-training INT8 quantization of an OpenVINO model, calibrated on ``calibration``."""
    import nncf

    items = _batched(calibration.images, batch_size)
    if not items:
        raise DataError(f"INT8 calibration needs at least one full batch of {batch_size} images; got {len(calibration)}")
    return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=min(subset_size, len(items)),
                         target_device=nncf.TargetDevice.CPU)


def _check_inputs(input_size: tuple[int, int, int], batch_size: int, calibration: ImageSet | None, n: int) -> torch.Tensor:
    """Real images when there are some (quantized networks are only meaningful on data), else seeded noise."""
    n = max(batch_size, n - n % batch_size)
    if calibration is not None and len(calibration) >= batch_size:
        return calibration.images[: min(n, len(calibration) - len(calibration) % batch_size)]
    return example_input(input_size, n, seed=1)


def check_ir(model: nn.Module, xml: Path, precision: str, inputs: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Compare the saved IR with torch on ``inputs``; raise :class:`ExportError` if outside TOLERANCES."""
    with eval_mode(model), torch.no_grad():
        ref = torch.cat([_first_tensor(model(torch.from_numpy(b))) for b in _batched(inputs, batch_size)]).flatten(1).numpy()
    request = compile_cpu(xml, exact_f32=True).create_infer_request()
    got = np.concatenate([request.infer({0: b})[0] for b in _batched(inputs, batch_size)]).reshape(ref.shape)
    err = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
    stats = {"max_abs_err": err, "max_ref_abs": scale, "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
             "mean_cosine": float(cos.mean()), "check_inputs": len(ref)}
    tol = TOLERANCES[precision]
    if precision == "int8":
        ok = stats["top1_agreement"] >= tol["min_top1_agreement"] and stats["mean_cosine"] >= tol["min_mean_cosine"]
        what = (f"top-1 agreement {stats['top1_agreement']:.3f} (need >= {tol['min_top1_agreement']}), mean cosine "
                f"{stats['mean_cosine']:.4f} (need >= {tol['min_mean_cosine']})")
    else:
        ok = err <= tol["rtol"] * scale
        what = f"max |IR - torch| = {err:.3g}, allowed {tol['rtol']:g} x max|torch| = {tol['rtol'] * scale:.3g}"
    if not ok:
        raise ExportError(
            f"the exported {precision} IR does not match the torch model on {len(ref)} inputs: {what}. Nothing was "
            "written. Check that the model's forward has no Python-side state or data-dependent control flow "
            "(tracing freezes it); for int8 give more or more representative calibration images."
        )
    return stats


def _prepare_out_dir(out_dir: Path, name: str) -> Path:
    """Fail before any work if ``out_dir`` cannot receive the IR. The folder is replaced as a whole, so it
    must be new, empty or hold only a previous export of the same name."""
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file; give a folder for the IR (it is created if missing)")
    ensure_writable_dir(out_dir.parent)
    if out_dir.is_dir():
        ours = {f"{name}.xml", f"{name}.bin", f"{name}.json"}
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in ours)
        if other:
            raise ExportError(
                f"--out {out_dir} already holds other files ({', '.join(other[:5])}); the IR folder is replaced as a "
                "whole so that it appears complete or not at all, so give a new or empty folder"
            )
    return out_dir


def export_openvino(
    model: nn.Module, input_size: tuple[int, int, int], out_dir: str | Path, *, name: str = "model",
    precision: Precision = "fp32", calibration: ImageSet | None = None, check: bool = True, batch_size: int = 1,
    data_config: DataConfig | None = None, class_names: list[str] | None = None, check_samples: int = 16,
    subset_size: int = 300, meta: dict | None = None,
) -> ExportResult:
    """Write ``out_dir/<name>.xml|.bin|.json`` for ``model`` at ``precision``, verified against torch.

    ``calibration`` (required for int8) also supplies the check inputs; ``data_config`` (how images are
    preprocessed) and ``class_names`` go to the ``.json`` the deployment recipe reads."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(f"name {name!r} must be a plain file stem such as 'model'")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    input_size = tuple(int(s) for s in input_size)
    if data_config is not None and tuple(data_config.input_size) != input_size:
        raise ConfigError(f"data_config is for input {data_config.input_size} but the export is at {input_size}")
    if calibration is not None:
        calibration.check_input_size(input_size)
    if precision == "int8" and calibration is None:
        raise DataError(
            "INT8 export needs calibration images: pass calibration=ImageSet (CLI: --data FOLDER --num-samples N). "
            "A few hundred unlabeled images suffice, and they need not be in-domain: synthetic, data-free images "
            "(e.g. generated by matching the network's BatchNorm statistics) work too."
        )
    out_dir = _prepare_out_dir(Path(out_dir), name)

    ov_model = to_openvino(model, input_size, batch_size)
    if precision == "int8":
        ov_model = quantize_int8(ov_model, calibration, batch_size, subset_size)
    stats: dict[str, float] = {}
    with atomic_dir(out_dir) as tmp:
        ov.save_model(ov_model, tmp / f"{name}.xml", compress_to_fp16=precision == "fp16")
        if check:
            inputs = _check_inputs(input_size, batch_size, calibration, check_samples)
            stats = check_ir(model, tmp / f"{name}.xml", precision, inputs, batch_size)
        config = {
            "format": IR_CONFIG_FORMAT, "xml": f"{name}.xml", "precision": precision, "batch_size": batch_size,
            **(data_config.to_dict() if data_config else {"input_size": list(input_size)}),
            "class_names": list(class_names or []), "check": {"tolerance": TOLERANCES[precision], **stats} if check else None,
            "meta": dict(meta or {}),
        }
        (tmp / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
    return ExportResult(out_dir / f"{name}.xml", out_dir / f"{name}.bin", out_dir / f"{name}.json", precision,
                        batch_size, input_size, check, dict(TOLERANCES[precision]) if check else {},
                        stats.get("max_abs_err"), stats.get("max_ref_abs"), stats.get("top1_agreement"),
                        stats.get("mean_cosine"), int(stats.get("check_inputs", 0)))
