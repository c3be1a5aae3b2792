"""The one IR writer: torch model -> OpenVINO IR (fp32 / fp16 / int8) + sidecar, checked, written atomically.

Why it exists: latency that PRACTISE optimises is only real if the deployed artifact is the same network.
Export therefore (1) converts with a static input shape, the shape latency was measured at, (2) for INT8
quantizes the *OpenVINO* model with NNCF post-training quantization (the nncf.torch route compiles a C++
extension first, minutes on a small machine), (3) runs the written IR on real inputs and compares it with
torch at a tolerance stated per precision, and (4) only then moves the folder into place, so an
interrupted or failed export leaves nothing behind. Next to the IR, ``<name>.json`` holds the
preprocessing (:class:`~practise_plugin.core.inputs.DataConfig`) and class names the deployment recipe needs.
Every IR the package writes (``practise export``, ``practise compress``, the NNCF runner, UDFC's low-bit
IRs) goes through :func:`write_ir`, so there is one folder check and one sidecar format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import openvino as ov
import torch
from torch import nn

from ..core.errors import ConfigError, DataError, ExportError, ModelError
from ..core.files import atomic_dir, check_writable_dir, dumps_json
from ..core.inputs import DataConfig, ImageSet
from ..core.torch_utils import eval_mode, example_input, first_tensor
from ..runtime.openvino import compile_cpu, resolve_ir, to_openvino
from . import PRECISIONS, TOLERANCES

Precision = Literal["fp32", "fp16", "int8"]
IR_CONFIG_FORMAT = "practise-plugin/openvino-ir/1"


@dataclass
class IRConfig:
    """What ``<name>.json`` beside an IR says about feeding it."""

    data_config: DataConfig | None
    class_names: list[str]
    batch_size: int
    precision: str
    preprocessing: dict | None = None  # set when the IR takes raw u8 images (see embed_preprocessing)


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
    return IRConfig(dc, list(d.get("class_names") or []), int(d["batch_size"]), str(d["precision"]),
                    d.get("preprocessing"))


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


def _batched(images: torch.Tensor, batch_size: int) -> list[np.ndarray]:
    """Whole batches of the IR's static batch size (a trailing partial batch is left out)."""
    n = len(images) - len(images) % batch_size
    return [images[i : i + batch_size].numpy() for i in range(0, n, batch_size)]


def calibration_batches(calibration: ImageSet, batch_size: int) -> list[np.ndarray]:
    """The calibration images as whole batches of the IR's static batch size, for ``nncf.Dataset``."""
    items = _batched(calibration.images, batch_size)
    if not items:
        raise DataError(f"calibration needs at least one full batch of {batch_size} images; got {len(calibration)}")
    return items


def quantize_int8(ov_model: ov.Model, calibration: ImageSet, batch_size: int = 1, subset_size: int = 300) -> ov.Model:
    """NNCF post-training INT8 quantization of an OpenVINO model, calibrated on ``calibration``."""
    import nncf

    items = calibration_batches(calibration, batch_size)
    return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=min(subset_size, len(items)),
                         target_device=nncf.TargetDevice.CPU)


def _check_inputs(input_size: tuple[int, int, int], batch_size: int, calibration: ImageSet | None, n: int) -> torch.Tensor:
    """Real images when there are some (quantized networks are only meaningful on data), else seeded noise."""
    n = max(batch_size, n - n % batch_size)
    if calibration is not None and len(calibration) >= batch_size:
        return calibration.images[: min(n, len(calibration) - len(calibration) % batch_size)]
    return example_input(input_size, n, seed=1)


def check_ir(model: nn.Module, xml: Path, precision: str, inputs: torch.Tensor, batch_size: int,
             feed: Callable[[torch.Tensor], np.ndarray] | None = None) -> dict[str, float]:
    """Compare the saved IR with torch on ``inputs``; raise :class:`ExportError` if outside TOLERANCES.
    ``feed`` turns a batch into what the IR takes (raw u8 images when the preprocessing is embedded)."""
    with eval_mode(model), torch.no_grad():
        ref = torch.cat([first_tensor(model(torch.from_numpy(b))) for b in _batched(inputs, batch_size)]).flatten(1).numpy()
    request = compile_cpu(xml, exact_f32=True).create_infer_request()
    to_ir = (lambda b: b) if feed is None else (lambda b: feed(torch.from_numpy(b)))
    got = np.concatenate([request.infer({0: to_ir(b)})[0] for b in _batched(inputs, batch_size)]).reshape(ref.shape)
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


LAYOUTS = ("NHWC", "NCHW")


def embed_preprocessing(ov_model: ov.Model, data_config: DataConfig, batch_size: int = 1, *, layout: str = "NHWC",
                        raw_size: tuple[int, int] | None = None) -> tuple[ov.Model, dict]:
    """The model with its preprocessing inside (OpenVINO's PrePostProcessor): it takes ``batch_size`` raw u8
    images of ``raw_size`` (default: the model's own H x W) in ``layout``, resizes them to the model's input
    when the sizes differ, and subtracts ``255 * mean`` and divides by ``255 * std``. So ``compile_model`` and
    ``benchmark_app`` run on plain decoded images. The centre crop of ``data_config.crop_pct`` is not
    embedded: it depends on each image's aspect ratio, which a static graph cannot follow; crop beforehand.
    Returns the model and the sidecar's description of what it expects."""
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    c, h, w = data_config.input_size
    rh, rw = raw_size or (h, w)
    if rh < 1 or rw < 1:
        raise ConfigError(f"raw_size must be positive (H, W), got {raw_size}")
    ppp = PrePostProcessor(ov_model)
    inp = ppp.input()
    shape = [batch_size, rh, rw, c] if layout == "NHWC" else [batch_size, c, rh, rw]
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout(layout)).set_shape(shape)
    inp.model().set_layout(ov.Layout("NCHW"))
    steps = inp.preprocess().convert_element_type(ov.Type.f32)
    if (rh, rw) != (h, w):
        algorithm = ResizeAlgorithm.RESIZE_CUBIC if data_config.interpolation == "bicubic" else ResizeAlgorithm.RESIZE_LINEAR
        steps.resize(algorithm)
    steps.mean([255.0 * m for m in data_config.mean]).scale([255.0 * s for s in data_config.std])
    info = {"embedded": True, "input": {"element_type": "u8", "layout": layout, "shape": shape},
            "resize": [rh, rw] != [h, w], "mean_255": [255.0 * m for m in data_config.mean],
            "std_255": [255.0 * s for s in data_config.std], "crop": "not embedded (crop before feeding)"}
    return ppp.build(), info


def raw_images(images: torch.Tensor, data_config: DataConfig, layout: str = "NHWC") -> np.ndarray:
    """Normalised images back to the u8 pixels they were made from (exact for images decoded from u8)."""
    mean = torch.tensor(data_config.mean).view(1, -1, 1, 1)
    std = torch.tensor(data_config.std).view(1, -1, 1, 1)
    u8 = (images * std + mean).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return (u8.permute(0, 2, 3, 1) if layout == "NHWC" else u8).contiguous().numpy()


def prepare_out_dir(out_dir: str | Path, name: str, extra: tuple[str, ...] = ()) -> Path:
    """Fail before any work if ``out_dir`` cannot receive the IR ``name``. The folder is replaced as a whole,
    so it must be new, empty or hold only an earlier export of the same name (and the ``extra`` files)."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(f"name {name!r} must be a plain file stem such as 'model'")
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; give a folder for the IR (it is created if missing)")
    check_writable_dir(out_dir.parent)
    if out_dir.is_dir():
        ours = {f"{name}.xml", f"{name}.bin", f"{name}.json", *extra}
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in ours)
        if other:
            raise ExportError(
                f"{out_dir} already holds other files ({', '.join(other[:5])}); the IR folder is replaced as a "
                "whole so that it appears complete or not at all, so give a new or empty folder"
            )
    return out_dir


def write_ir(
    ov_model: ov.Model, out_dir: str | Path, *, name: str = "model", precision: str, batch_size: int,
    input_size: tuple[int, int, int], data_config: DataConfig | None = None, class_names: list[str] | None = None,
    meta: dict | None = None, check: Callable[[Path], dict[str, Any]] | None = None, tolerance: str | None = None,
    compress_to_fp16: bool = False, extra_json: dict[str, Any] | None = None, preprocessing: dict | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write ``<name>.xml/.bin`` and the sidecar ``<name>.json`` (plus ``extra_json`` files) into ``out_dir``.

    Everything goes to a temporary folder first; ``check(xml)`` runs on the written IR there (it raises to
    refuse it), and only then does the folder replace ``out_dir``. Returns the final ``.xml`` path and the
    check's statistics. ``precision`` is what the sidecar says the IR holds; ``tolerance`` names the
    :data:`~practise_plugin.export.TOLERANCES` entry the check applied."""
    out_dir = prepare_out_dir(out_dir, name, tuple(extra_json or {}))
    stats: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        xml = tmp / f"{name}.xml"
        ov.save_model(ov_model, xml, compress_to_fp16=compress_to_fp16)
        if check is not None:
            stats = check(xml)
        sidecar = {
            "format": IR_CONFIG_FORMAT, "xml": xml.name, "precision": precision, "batch_size": batch_size,
            **(data_config.to_dict() if data_config else {"input_size": list(input_size)}),
            "class_names": list(class_names or []), "preprocessing": preprocessing,
            "check": {"tolerance": TOLERANCES[tolerance or precision], **stats} if check is not None else None,
            "meta": dict(meta or {}),
        }
        (tmp / f"{name}.json").write_text(dumps_json(sidecar))
        for file_name, content in (extra_json or {}).items():
            (tmp / file_name).write_text(dumps_json(content))
    return out_dir / f"{name}.xml", stats


def export_openvino(
    model: nn.Module, input_size: tuple[int, int, int], out_dir: str | Path, *, name: str = "model",
    precision: Precision = "fp32", calibration: ImageSet | None = None, check: bool = True, batch_size: int = 1,
    data_config: DataConfig | None = None, class_names: list[str] | None = None, check_samples: int = 16,
    subset_size: int = 300, meta: dict | None = None, embed: bool = False, layout: str = "NHWC",
) -> ExportResult:
    """Write ``out_dir/<name>.xml|.bin|.json`` for ``model`` at ``precision``, verified against torch.

    ``calibration`` (required for int8) also supplies the check inputs; ``data_config`` (how images are
    preprocessed) and ``class_names`` go to the ``.json`` the deployment recipe reads. With ``embed`` the
    preprocessing goes into the IR too (:func:`embed_preprocessing`): it then takes raw u8 images in
    ``layout``, and the check feeds it the check images as the u8 pixels they came from."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    input_size = tuple(int(s) for s in input_size)
    if data_config is not None and tuple(data_config.input_size) != input_size:
        raise ConfigError(f"data_config is for input {data_config.input_size} but the export is at {input_size}")
    if calibration is not None:
        calibration.check_input_size(input_size)
    if embed and data_config is None:
        raise ConfigError("embedding the preprocessing needs the model's data_config (mean, std, input size)")
    if precision == "int8" and calibration is None:
        raise DataError(
            "INT8 export needs calibration images: pass calibration=ImageSet (CLI: --data FOLDER --num-samples N). "
            "A few hundred unlabeled images suffice, and they need not be in-domain: synthetic, data-free images "
            "(e.g. generated by matching the network's BatchNorm statistics) work too."
        )
    prepare_out_dir(out_dir, name)

    ov_model = to_openvino(model, input_size, batch_size)
    if precision == "int8":
        ov_model = quantize_int8(ov_model, calibration, batch_size, subset_size)
    preprocessing = None
    if embed:
        ov_model, preprocessing = embed_preprocessing(ov_model, data_config, batch_size, layout=layout)

    def compare(xml: Path) -> dict[str, Any]:
        inputs = _check_inputs(input_size, batch_size, calibration, check_samples)
        if embed:  # the IR sees the pixels: check on inputs that are exactly representable as u8 images
            inputs = data_config.normalise(torch.from_numpy(raw_images(inputs, data_config, "NCHW")).float() / 255.0)
        feed = (lambda b: raw_images(b, data_config, layout)) if embed else None
        return check_ir(model, xml, precision, inputs, batch_size, feed)

    xml, stats = write_ir(ov_model, out_dir, name=name, precision=precision, batch_size=batch_size,
                          input_size=input_size, data_config=data_config, class_names=class_names, meta=meta,
                          check=compare if check else None, compress_to_fp16=precision == "fp16",
                          preprocessing=preprocessing)
    out_dir = xml.parent
    return ExportResult(out_dir / f"{name}.xml", out_dir / f"{name}.bin", out_dir / f"{name}.json", precision,
                        batch_size, input_size, check, dict(TOLERANCES[precision]) if check else {},
                        stats.get("max_abs_err"), stats.get("max_ref_abs"), stats.get("top1_agreement"),
                        stats.get("mean_cosine"), int(stats.get("check_inputs", 0)))
