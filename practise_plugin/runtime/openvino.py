"""OpenVINO as a runtime: convert a torch model at a static input shape, compile it for CPU latency, and
find a saved IR.

Why it exists: latency that PRACTISE optimises is only real if the deployed artifact is the same network,
compiled the way deployment compiles it. Measuring (:mod:`~practise_plugin.runtime.latency`) and exporting
(:mod:`practise_plugin.export.ir`) both go through these few functions.
"""

from __future__ import annotations

from pathlib import Path

import openvino as ov
import torch
from torch import nn

from ..core.errors import ConfigError, ExportError, ModelError
from ..core.torch_utils import eval_mode, example_input, torch_threads


def _decoder(model: nn.Module, x: torch.Tensor) -> object:
    """OpenVINO's own TorchScript decoder of ``model`` (its tracing, patches and freezing), minus the second run
    that checks the trace: converting a drop-one model took 0.77x the time for ResNet-50 (2.38 vs 3.08 s) and
    0.88x for the built-in network (1.68 vs 1.92 s; medians of 6 alternate runs, one thread) and gave the same
    graph (same ops, same outputs). An OpenVINO without that decoder gets the module (and checks the trace)."""
    try:
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
    except ImportError:
        return model
    return TorchScriptPythonDecoder(model, example_input=x, trace_kwargs={"check_trace": False})


def to_openvino(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1, *,
                check_trace: bool = True) -> ov.Model:
    """Convert in eval mode with a static (batch, C, H, W) input: the shape deployment and latency use.

    Tracing runs on one torch thread: its cost is mostly Python overhead, and on a busy machine extra
    OpenMP threads made it 2-5x slower (ResNet-50: 3 s on one thread, 6-17 s on two, load average 8).
    The trace is checked (run twice and compared: a forward with Python-side state fails here, before any
    timing or export); ``check_trace=False`` skips that for a model whose base was just checked, as the
    per-block latency table's drop-one models are."""
    with eval_mode(model), torch.no_grad(), torch_threads(1):
        x = example_input(input_size, batch_size)
        try:
            return ov.convert_model(model if check_trace else _decoder(model, x), example_input=x,
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
