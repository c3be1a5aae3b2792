"""OpenVINO as a runtime: convert a torch model at a static input shape, derive the IR of a drop from its
base's IR, compile it for CPU latency, and find a saved IR.

Why it exists: latency that PRACTISE optimises is only real if the deployed artifact is the same network,
compiled the way deployment compiles it. Measuring (:mod:`~practise_plugin.runtime.latency`) and exporting
(:mod:`practise_plugin.export.ir`) both go through these few functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import openvino as ov
import torch
from torch import nn

from ..core.errors import ConfigError, ExportError, ModelError
from ..core.torch_utils import eval_mode, example_input, first_tensor, torch_threads
from ..graph.discover import parse_block_name


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


def _dominators(ops: list[ov.Node]) -> dict[str, str | None]:
    """Immediate dominator of every op that depends on an input (None: an input itself).

    An op's dominator is the op that every path from the inputs to it passes through: for the last op of
    a residual block, the op that made the block's input. ``ops`` are in topological order, so an op's
    dominator is the nearest common dominator of its data inputs; constants and their folds take no part."""
    idom: dict[str, str | None] = {}
    depth: dict[str, int] = {}  # in the dominator tree: what the nearest common dominator walks up by

    def common(a: str, b: str) -> str | None:
        while a != b:
            if depth[a] < depth[b]:
                a, b = b, a
            up = idom[a]
            if up is None:
                return None
            a = up
        return a

    for op in ops:
        name = op.get_name()
        preds = [i.get_source_output().get_node().get_name() for i in op.inputs()]
        preds = [q for q in preds if q in idom]
        if op.get_type_name() == "Parameter" or not preds:
            if op.get_type_name() == "Parameter":
                idom[name], depth[name] = None, 0
            continue
        dom: str | None = preds[0]
        for q in preds[1:]:
            dom = None if dom is None else common(dom, q)
        idom[name], depth[name] = dom, 0 if dom is None else depth[dom] + 1
    return idom


def _scoped(op: ov.Node, path: str) -> bool:
    """Whether the PyTorch frontend named ``op`` after the module at ``path`` (or one inside it)."""
    name = op.get_friendly_name()
    return name.startswith((f"__module.{path}.", f"__module.{path}/"))


def _bypass_one(model: ov.Model, last_name: str, path: str, branch: int | None) -> bool:
    """Rewire the consumers of op ``last_name`` (a block's last op, or a branch's add) in place to what the
    block or branch started from; False where the result is not that (the caller then discards the copy)."""
    ops = model.get_ordered_ops()
    by_name = {op.get_name(): op for op in ops}
    if last_name not in by_name:
        return False
    last = by_name[last_name]
    idom = _dominators(ops)
    entry: ov.Node | None = last
    while entry is not None and (entry is last or (branch is None and _scoped(entry, path))):
        up = idom.get(entry.get_name())  # a whole block: up the dominators to the first op outside it
        entry = None if up is None else by_name[up]
    if entry is None or len(entry.outputs()) != 1 or len(last.outputs()) != 1:
        return False
    for target in list(last.output(0).get_target_inputs()):
        target.replace_source_output(entry.output(0))
    model.validate_nodes_and_infer_types()
    kept = {op.get_name() for op in model.get_ordered_ops()}
    gone = [op for op in ops if op.get_name() not in kept]
    if last_name in kept or any(op.get_friendly_name().startswith("__module.") and not _scoped(op, path)
                                for op in gone):
        return False  # it stayed, or took ops of another module with it
    return branch is not None or not any(_scoped(op, path) for op in ops if op.get_name() in kept)


def bypass_blocks(model: ov.Model, names: Sequence[str]) -> ov.Model | None:
    """A copy of ``model`` (a torch network converted by :func:`to_openvino`) without the blocks ``names``
    (``"layer1.1"``, or ``"blocks.3#1"`` for one residual branch), as
    :func:`~practise_plugin.surgery.drop.drop_blocks` makes them in torch; None where the IR does not show
    a block as a region the graph can be rewired around.

    Why: the per-block latency table needs one network per candidate, and converting each from torch took
    1.1 s for the built-in network (17 of its table's 38 s on one thread), where this takes milliseconds.
    The ops of a block are the ones the frontend named after its module. A whole block's last op hands its
    consumers the nearest of its dominators (the ops every path to it passes through) outside the module:
    the op that made the block's input. A branch's add (the k-th add in the module's own scope) hands
    them its dominator: the stream the branch was added to. What only the block used falls out of the
    graph; the copy is refused unless that took no op named after another module and, for a whole block,
    every op named after it. Callers also compare its output with torch's (:func:`bypass_checked`)."""
    out = model.clone()
    ops = out.get_ordered_ops()
    plan = []
    for name in names:
        path, branch = parse_block_name(name)
        if branch is None:
            inside = [op for op in ops if _scoped(op, path)]
        else:
            inside = [op for op in ops if op.get_type_name() == "Add"
                      and op.get_friendly_name().startswith(f"__module.{path}/")]
            inside = inside[branch : branch + 1]
        if not inside:
            return None
        plan.append((inside[-1].get_name(), path, branch))
    for last_name, path, branch in plan:  # found first: a branch's index counts the adds before any removal
        if not _bypass_one(out, last_name, path, branch):
            return None
    return out


def bypass_checked(model: ov.Model, names: Sequence[str], dropped: nn.Module, x: torch.Tensor) -> ov.Model | None:
    """:func:`bypass_blocks`, kept only where its f32 output on ``x`` matches ``dropped`` (the same drop in
    torch) as closely as an export must (1e-4 of the largest output); None otherwise."""
    bypassed = bypass_blocks(model, names)
    if bypassed is None or len(bypassed.outputs) != 1:
        return None
    with eval_mode(dropped), torch.no_grad():
        want = first_tensor(dropped(x)).numpy()
    got = compile_cpu(bypassed, exact_f32=True).create_infer_request().infer({0: x.numpy()})[0]
    if got.shape != want.shape or float(abs(got - want).max()) > 1e-4 * float(abs(want).max()):
        return None
    return bypassed


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
