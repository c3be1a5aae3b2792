"""The whole job as library calls: ``compress``, ``evaluate``, ``measure``, ``export``, ``discover``,
``bench`` and ``compress_job`` (all of them, writing the model, the IR and the report to a folder).

Why it exists: users hold a model (a module or a spec string) and maybe a folder of images; they should
not have to know which loader, context, latency meter or config class each strategy needs. The CLI only
parses arguments and prints what these functions return; the NNCF runner shares their building blocks
(the registry, the latency meter, the IR writer).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from torch import nn

from .core import distributed
from .core.errors import ConfigError, DataError
from .core.files import check_output_file, check_writable_dir, ensure_writable_dir, work_dir_lock
from .core.inputs import DataConfig, ImageSet, check_count
from .core.strategy import CompressionContext, CompressionResult, StrategyConfig
from .core.torch_utils import count_params, eval_mode, example_input
from .data.images import tiny_set_from
from .export.ir import ExportResult, export_openvino, prepare_out_dir
from .export.report import plot_report, write_report
from .graph.discover import Block, discover_blocks
from .graph.macs import count_macs
from .models import DEMO_RECOVER_ITERS, DEMO_SAMPLES, EXPORT_SAMPLES, builtin
from .models.bundle import ModelBundle
from .models.checkpoint import save_compressed
from .models.classes import class_names, is_builtin_fmnist, output_names, with_model_labels
from .models.loading import load_model
from .runtime.evaluate import predictions
from .runtime.latency import COMPARE_TIME_S, MEASURE_TIME_S, LatencyMeter, block_latency_table, measure_latency
from .strategies import build_config, get_strategy
from .surgery.drop import drop_blocks


def compress(
    model: nn.Module | str | ModelBundle,
    data: ImageSet | str | Path | None = None,
    strategy: str = "practise",
    config: StrategyConfig | dict[str, Any] | None = None,
    *,
    num_samples: int | None = None,
    device: str = "cpu",
    work_dir: str | Path | None = None,
    progress: bool = True,
    latency_backend: str = "openvino",
    latency_batch_size: int = 1,
    num_threads: int | None = None,
    latency_time: float = COMPARE_TIME_S,
    latency_cache: str | Path | bool = True,
    context: CompressionContext | None = None,
    **options: Any,
) -> CompressionResult:
    """Compress ``model`` with ``strategy``; the input model is never modified.

    ``data`` is an :class:`ImageSet`, a folder of images (ImageFolder layout or flat; labels optional),
    or None (data-free strategies; PRACTISE then synthesises images). ``options`` are the strategy's
    config fields, e.g. ``latency_reduction=0.22`` (see ``practise strategies NAME``). ``context`` replaces
    the one built from the other keywords (the CLI passes its own, to read the per-stage timings).
    """
    bundle = load_model(model)
    strat = get_strategy(strategy)
    cfg = build_config(strategy, config, **options)
    data = tiny_set_from(data, bundle.data_config, num_samples, cfg.seed, progress)
    unlabelled = None
    if data is not None:
        data, unlabelled = with_model_labels(data, bundle)
    if data is None and strat.needs_data:
        raise DataError(f"strategy {strategy!r} needs images; pass data=FOLDER or an ImageSet")
    if data is not None and strat.needs_labels and not data.has_labels:
        raise DataError(f"strategy {strategy!r} trains on labels: "
                        f"{unlabelled or 'give labelled images (one sub-folder per class)'}")
    if context is None:
        context = CompressionContext(
            bundle.data_config, device=device, work_dir=None if work_dir is None else ensure_writable_dir(work_dir),
            progress=progress, model_spec=bundle.spec,
            latency=LatencyMeter(latency_backend, batch_size=latency_batch_size, num_threads=num_threads,
                                 device=device, input_size=bundle.data_config.input_size, time_s=latency_time,
                                 cache_dir=latency_cache),
        )
    if context.work_dir is None or not distributed.is_main():  # rank 0 holds the lock for all ranks
        return strat.apply(bundle.model, data, cfg, context)
    with work_dir_lock(context.work_dir):
        return strat.apply(bundle.model, data, cfg, context)


def measure(teacher: nn.Module, student: nn.Module, data_config: DataConfig, *, backend: str = "openvino",
            batch_size: int = 1, num_threads: int | None = None, device: str = "cpu", time_s: float = 3.0,
            target: float | None = None) -> dict[str, Any]:
    """Latency of ``student`` against ``teacher`` (interleaved A/B, with its confidence interval, measured
    afresh), MACs and parameters of both; with ``target``, whether it is met with confidence."""
    meter = LatencyMeter(backend, batch_size=batch_size, num_threads=num_threads,
                         device=device if backend == "cuda" else "cpu", input_size=data_config.input_size,
                         time_s=time_s, cache_dir=None)
    red = meter.reduction(teacher, student)
    ab = red.ab
    x = example_input(data_config.input_size)
    macs = {"teacher": count_macs(teacher, x), "student": count_macs(student, x)}
    macs["reduction"] = 1 - macs["student"] / macs["teacher"]
    latency = {"backend": meter.backend, "threads": num_threads, "batch_size": batch_size, "unit": ab.a.unit,
               "teacher_median": ab.a.median_ms, "student_median": ab.b.median_ms,
               "ratio_median": ab.ratio_median, "ratio_p10": ab.ratio_p10, "ratio_p90": ab.ratio_p90,
               "reduction": red.value, "reduction_interval": [red.low, red.high], "confidence": ab.confidence,
               "converged": ab.converged, "pairs": ab.pairs, "load": None if ab.load is None else ab.load.to_dict()}
    if target is not None:
        latency.update(target=target, verdict=red.verdict(target))
    return {"latency": latency, "macs": macs,
            "params": {"teacher": count_params(teacher), "student": count_params(student)}}


def evaluate(teacher: nn.Module, student: nn.Module, eval_set: ImageSet, *, dropped: list[str] | None = None,
             latency_reduction: float = 0.0, labels_not_used: str | None = None) -> dict[str, Any]:
    """Top-1 (or, without labels, top-1 agreement with the teacher) of the teacher, of the bare drop of
    ``dropped`` (when given) and of the student; the evaluation set is named beside the numbers, and so is
    ``labels_not_used``, the reason its folder labels were not the model's classes
    (:func:`~practise_plugin.models.classes.with_model_labels`)."""
    labelled = eval_set.has_labels
    teacher_pred = predictions(teacher, eval_set)
    reference = eval_set.labels if labelled else teacher_pred

    def value(pred) -> float:
        return float((pred == reference).float().mean())

    student_pred = predictions(student, eval_set)
    points = [{"label": "teacher", "latency_reduction": 0.0, "value": value(teacher_pred)}]
    if dropped:
        points.append({"label": "blocks dropped, no recovery", "latency_reduction": latency_reduction,
                       "value": value(predictions(drop_blocks(teacher, dropped), eval_set))})
    points.append({"label": "compressed", "latency_reduction": latency_reduction, "value": value(student_pred)})
    return {"metric": "top-1 (%)" if labelled else "top-1 agreement with the teacher (%)",
            "eval_data": {"source": eval_set.source, "images": len(eval_set),
                          **({"labels_not_used": labels_not_used} if labels_not_used else {})}, "points": points,
            "teacher": points[0]["value"], "student": points[-1]["value"],
            "agreement": float((student_pred == teacher_pred).float().mean())}


def export(
    model: nn.Module | str | ModelBundle, out_dir: str | Path, *, precision: str = "fp32",
    data: ImageSet | str | Path | None = None, num_samples: int | None = None, seed: int = 0, batch_size: int = 1,
    name: str = "model", check: bool = True, progress: bool = True, embed_preprocessing: bool = False,
    layout: str = "NHWC",
) -> ExportResult:
    """Write ``model`` as an OpenVINO IR into ``out_dir``, checked against torch. ``data`` calibrates int8
    and feeds the check (the built-in model defaults to shipped Fashion-MNIST images). With
    ``embed_preprocessing`` the IR takes raw u8 images in ``layout`` (mean/std and layout inside it)."""
    check_count("num_samples", num_samples)
    bundle = load_model(model)
    images = tiny_set_from(data, bundle.data_config, num_samples, seed, progress)
    if images is None and is_builtin_fmnist(bundle) and tuple(bundle.data_config.input_size) == (1, 28, 28):
        images = builtin.tiny_set(EXPORT_SAMPLES if num_samples is None else num_samples, seed)
    return export_openvino(
        bundle.model, bundle.data_config.input_size, out_dir, name=name, precision=precision, calibration=images,
        check=check, batch_size=batch_size, data_config=bundle.data_config, class_names=class_names(bundle),
        meta={"model": bundle.spec, **({"base_spec": bundle.meta["base_spec"]} if "base_spec" in bundle.meta else {})},
        embed=embed_preprocessing, layout=layout,
    )


def discover(model: nn.Module | str | ModelBundle, *, include_stage_entry: bool = False) -> dict[str, Any]:
    """The drop candidates of ``model`` with shapes, MACs and parameters, and the model's total MACs."""
    bundle = load_model(model)
    x = bundle.example_input()
    blocks = discover_blocks(bundle.model, x, include_stage_entry=include_stage_entry)
    return {"model": bundle.spec, "macs": count_macs(bundle.model, x), "candidates": [b.to_dict() for b in blocks]}


def bench(model: nn.Module | str | ModelBundle, *, backend: str = "openvino", device: str = "cpu", batch_size: int = 1,
          num_threads: int | None = None, input_size: tuple[int, int, int] | None = None,
          blocks: list[str] | None = None, all_blocks: bool = False, time_s: float | None = None,
          cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Latency of ``model`` and, for ``blocks`` (or every candidate with ``all_blocks``), what dropping each
    block alone saves."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if time_s is not None and time_s <= 0:
        raise ConfigError(f"the timing budget must be positive, got {time_s}")
    bundle = load_model(model, input_size=input_size)
    net, size = bundle.model, bundle.data_config.input_size
    common = dict(backend=backend, batch_size=batch_size, num_threads=num_threads, device=device)
    x = bundle.example_input()
    chosen: list[Block] = []
    if blocks or all_blocks:  # names are checked before any timing starts
        found = {b.name: b for b in discover_blocks(net, x, include_stage_entry=not all_blocks)}
        unknown = [n for n in blocks or [] if n not in found]
        if unknown:
            raise ConfigError(f"no droppable block named {', '.join(unknown)}; droppable blocks: {', '.join(found)}")
        chosen = list(found.values()) if all_blocks else [found[n] for n in blocks or []]
    base = measure_latency(net, size, time_s=time_s or MEASURE_TIME_S, **common)
    with eval_mode(net):
        macs = count_macs(net, x)
    report: dict[str, Any] = {"model": bundle.spec, "input_size": list(size), "macs_per_image": macs, "base": base.to_dict()}
    if chosen:
        table = block_latency_table(net, chosen, size, cache_dir=cache_dir, progress=progress,
                                    time_s=time_s or COMPARE_TIME_S, **common)
        rows = []
        for b in chosen:
            saved, (lo, hi) = table.saved[b.name], table.spread[b.name]
            rows.append({**b.to_dict(), "saved_fraction": saved, "saved_spread": [lo, hi],
                         "saved_ms": saved * table.base_ms})
        report.update(table=table.to_dict(), blocks=rows)
    return report


def compress_job(
    out_dir: str | Path, model: nn.Module | str | ModelBundle = "builtin", *, strategy: str = "practise",
    data: ImageSet | str | Path | None = None, num_samples: int | None = None, data_free: bool = False,
    eval_data: ImageSet | str | Path | None = None, eval_samples: int | None = None,
    weights: str | Path | None = None, precision: str = "fp32", export_ir: bool = True, device: str = "cpu",
    latency_backend: str = "openvino", latency_batch_size: int = 1, num_threads: int | None = None,
    latency_time: float = COMPARE_TIME_S, latency_cache: str | Path | bool = True, progress: bool = True,
    notes: list[str] | None = None, trust_code: bool = False, **options: Any,
) -> dict[str, Any]:
    """``practise compress``: compress, measure, evaluate, save ``model.pt``, export ``openvino/`` and write
    ``report.json`` / ``report.png`` into ``out_dir``; returns the report.

    With the built-in model and no images, the shipped Fashion-MNIST images are the tiny set (500 by
    default) and the Fashion-MNIST test set the evaluation set, and recovery runs 500 steps unless
    ``recover_iters`` is given. Lines worth telling the user are appended to ``notes``.

    Under ``torchrun`` (see :mod:`practise_plugin.core.distributed`) every rank runs the compression with
    its share of scoring and recovery; rank 0 alone measures, evaluates, exports and writes, and the other
    ranks return ``{"rank": r, "blocks": ...}``."""
    t0 = time.perf_counter()
    notes = notes if notes is not None else []
    check_count("num_samples", num_samples)
    check_count("eval_samples", eval_samples)
    device = distributed.device_for_rank(device)
    progress = progress and distributed.is_main()
    out = check_writable_dir(out_dir)  # created with its .work folder, once the inputs are read
    for file_name in ("model.pt", "report.json", "report.png"):
        check_output_file(out / file_name)
    if export_ir and distributed.is_main():
        prepare_out_dir(out / "openvino", "model")
    strat = get_strategy(strategy)
    bundle = load_model(model, weights=weights, trust_code=trust_code)
    demo = is_builtin_fmnist(bundle) and bundle.spec.startswith("builtin")
    fields = {f.name for f in dataclasses.fields(strat.config_cls)}
    if demo and "recover_iters" not in options and "recover_iters" in fields:
        options["recover_iters"] = DEMO_RECOVER_ITERS
        notes.append(f"built-in demo: --recover-iters {DEMO_RECOVER_ITERS} (the paper uses 2000; pass the flag to change)")
    cfg = build_config(strategy, None, **options)  # every option checked before images are read
    distributed.check_batch(getattr(cfg, "batch_size", 0))
    seed = cfg.seed
    tiny: ImageSet | None
    if data is not None:
        tiny = tiny_set_from(data, bundle.data_config, num_samples, seed, progress)
    elif data_free:
        tiny = None
    elif demo:
        tiny = builtin.tiny_set(DEMO_SAMPLES if num_samples is None else num_samples, seed)
    elif strat.needs_data:
        raise DataError(f"strategy {strat.name!r} needs images: pass --data FOLDER (a tiny set is enough)")
    else:
        tiny = None
    if eval_data is not None:
        eval_set = tiny_set_from(eval_data, bundle.data_config, None, seed, progress)
    elif demo:
        eval_set = builtin.test_set()
    else:
        eval_set = tiny
    eval_note = None
    if eval_set is not None:
        eval_set, eval_note = with_model_labels(eval_set.sample(eval_samples, seed), bundle)
        if eval_note:
            notes.append(f"evaluation: {eval_note}; top-1 agreement with the teacher is reported instead")

    work = out / ".work"
    context = CompressionContext(
        bundle.data_config, device=device, work_dir=ensure_writable_dir(work), progress=progress, model_spec=bundle.spec,
        latency=LatencyMeter(latency_backend, batch_size=latency_batch_size, num_threads=num_threads, device=device,
                             input_size=bundle.data_config.input_size, time_s=latency_time, cache_dir=latency_cache),
    )
    result = compress(bundle, tiny, strategy, cfg, context=context)
    if not distributed.is_main():
        return {"rank": distributed.rank(), "blocks": {"chosen": list(result.stats.get("selection", {}).get("blocks", []))}}
    with distributed.alone():
        return _finish(out, bundle, result, context, eval_set=eval_set, eval_note=eval_note, tiny=tiny, precision=precision,
                       export_ir=export_ir, latency_backend=latency_backend, latency_batch_size=latency_batch_size,
                       num_threads=num_threads, device=device, t0=t0)


def _finish(out: Path, bundle: ModelBundle, result: CompressionResult, context: CompressionContext, *,
            eval_set: ImageSet | None, eval_note: str | None, tiny: ImageSet | None, precision: str, export_ir: bool,
            latency_backend: str, latency_batch_size: int, num_threads: int | None, device: str,
            t0: float) -> dict[str, Any]:
    """Measure, evaluate, save, export and write the report of a finished compression (rank 0's part)."""
    stage = context.stages
    teacher, student = bundle.model, result.model
    with stage("measure"):
        report: dict[str, Any] = {
            "model": bundle.spec, "strategy": result.strategy, "config": result.config,
            "data": result.stats.get("data") or ({"source": tiny.source, "images": len(tiny)} if tiny else None),
            "blocks": {"candidates": [c["name"] for c in result.stats.get("candidates", [])],
                       "chosen": list(result.stats.get("selection", {}).get("blocks", []))},
            **measure(teacher, student, bundle.data_config, backend=latency_backend, batch_size=latency_batch_size,
                      num_threads=num_threads, device=device,
                      target=result.config.get("latency_reduction") if "selection" in result.stats else None),
            "stats": {k: v for k, v in result.stats.items() if k != "candidates"},
        }
    for key in ("recoverability", "latency_table", "selection", "feature_mse"):
        if key in result.stats:
            report[key] = result.stats[key]
    if eval_set is not None:
        with stage("evaluate"):
            report["accuracy"] = evaluate(teacher, student, eval_set, dropped=report["blocks"]["chosen"],
                                          latency_reduction=report["latency"]["reduction"], labels_not_used=eval_note)
    base_spec = bundle.meta.get("base_spec", bundle.spec)
    surgery = list(bundle.meta.get("surgery", [])) + result.surgery
    ckpt = save_compressed(out / "model.pt", student, base_spec, bundle.data_config, surgery,
                           {"strategy": result.strategy, "config": result.config})
    report["outputs"] = {"checkpoint": str(ckpt)}
    if export_ir:
        with stage("export"):
            exp = export_openvino(student, bundle.data_config.input_size, out / "openvino", precision=precision,
                                  calibration=tiny, data_config=bundle.data_config,
                                  class_names=output_names(bundle, tiny),
                                  meta={"base_spec": base_spec, "strategy": result.strategy})
        report["export"] = exp.to_dict()
        report["outputs"]["openvino"] = str(exp.xml)
    report["stages"] = stage.to_dict()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["outputs"]["report"] = str(write_report(out, report))
    png = plot_report(report, out / "report.png")
    if png is not None:
        report["outputs"]["plot"] = str(png)
        write_report(out, report)
    return report
