"""``practise compress``: model + tiny image set + target in; compressed model, OpenVINO IR and report out.

With no arguments it runs the built-in demo: the shipped Fashion-MNIST ResNet teacher, 500 shipped real
training images, a 22% OpenVINO CPU latency target, and evaluation on the Fashion-MNIST test set.
Strategy options are generated from the strategies' config dataclasses, so every config field is a flag
(``latency_reduction`` -> ``--latency-reduction``) and the help text is the field's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import types
import typing
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from .. import builtin
from ..api import compress
from ..checkpoint import save_compressed
from ..data import ImageSet, load_images, sample_tiny_set
from ..discover import count_macs
from ..drop import drop_blocks
from ..errors import ConfigError, DataError
from ..evaluate import predictions
from ..io import ensure_writable_dir
from ..latency import BACKENDS, compare_latency
from ..models import SPEC_FORMS, load_model
from ..openvino import PRECISIONS, export_openvino
from ..registry import get_strategy, list_strategies
from ..report import plot_report, write_report

DEMO_SAMPLES = 500
DEMO_RECOVER_ITERS = 500  # the paper uses ~2000; the demo keeps to a few minutes on 2 CPU cores


def _field_kwargs(hint: Any) -> dict[str, Any]:
    """argparse settings for a config field of type ``hint`` (values are validated again by the config)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _field_kwargs(inner[0]) if len(inner) == 1 else {}
    if origin is typing.Literal:
        return {"choices": list(args)}
    if origin in (tuple, list):
        return {"nargs": "+", "metavar": "NAME"}
    if hint is bool:
        return {"choices": ["true", "false"], "metavar": "{true,false}"}
    if hint in (int, float):
        return {"type": hint}
    return {}


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    seen: dict[str, list[str]] = {}
    rows: dict[str, tuple[Any, str]] = {}
    for name in list_strategies():
        cls = get_strategy(name).config_cls
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, []).append(name)
            rows.setdefault(f.name, (hints[f.name], f.metadata.get("help", "")))
    group = p.add_argument_group("strategy options (see `practise strategies NAME` for defaults)")
    for field_name, (hint, help_) in rows.items():
        owners = seen[field_name]
        prefix = "" if len(owners) == len(list_strategies()) else f"[{', '.join(owners)}] "
        kwargs = _field_kwargs(hint)
        if "choices" not in kwargs:
            kwargs.setdefault("metavar", field_name.upper())
        group.add_argument(f"--{field_name.replace('_', '-')}", dest=f"opt_{field_name}", default=argparse.SUPPRESS,
                           help=(prefix + help_).replace("%", "%%"), **kwargs)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress", help="compress a model (default: the built-in demo) and export it to OpenVINO",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  practise compress\n"
               "  practise compress --model timm:resnet50 --weights r50.pth --data imgs/ --num-samples 500 "
               "--latency-reduction 0.16\n  practise compress --model builtin --strategy udfc --ratio 0.3 --bits 6",
    )
    p.add_argument("--model", default="builtin", help=f"model to compress (default: builtin); {SPEC_FORMS}")
    p.add_argument("--weights", type=Path, help="state_dict to load onto --model (bring your own trained weights)")
    p.add_argument("--config", type=Path, metavar="JSON", help="an NNCF-style config (\"compression\": [...]) to run "
                   "instead of --strategy; the IR and report.json go to --out (same as `practise nncf`)")
    p.add_argument("--strategy", default="practise", help="strategy name (default: practise); list: `practise strategies`")
    p.add_argument("--data", type=Path, help="folder of images (one sub-folder per class, or flat; labels optional); "
                   "out-of-domain images work for practise. Default for builtin: shipped Fashion-MNIST images")
    p.add_argument("--num-samples", type=int, metavar="N", help="draw a tiny set of N images from --data "
                   f"(balanced when N >= classes; builtin default {DEMO_SAMPLES})")
    p.add_argument("--data-free", action="store_true", help="use no images: practise synthesises them from BN statistics")
    p.add_argument("--eval-data", type=Path, help="labelled folder to report top-1 on (default for builtin: the "
                   "Fashion-MNIST test set; otherwise teacher agreement on the tiny set)")
    p.add_argument("--eval-samples", type=int, metavar="N", help="evaluate on N images drawn from the eval set "
                   "(default: all of them)")
    p.add_argument("--out", type=Path, default=Path("practise-out"), help="output folder (default: practise-out)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="OpenVINO IR precision (default: fp32)")
    p.add_argument("--no-export", action="store_true", help="do not write the OpenVINO IR")
    p.add_argument("--device", default="cpu", help="torch device for scoring and recovery: cpu or cuda (default: cpu)")
    p.add_argument("--latency-backend", choices=BACKENDS, default="openvino",
                   help="what latency means: openvino (CPU, default), torch, cuda (CUDA events), macs (deterministic)")
    p.add_argument("--latency-batch-size", type=int, default=1, help="batch size the latency is measured at (default 1)")
    p.add_argument("--threads", type=int, default=None, help="inference threads for latency (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_strategy_flags(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}


def _is_builtin(spec: str) -> bool:
    return spec == "builtin" or spec.startswith("builtin:fmnist")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    console = Console(stderr=True, quiet=args.quiet)
    out = ensure_writable_dir(args.out)
    strategy = get_strategy(args.strategy)
    options = _options(args)
    if args.config is not None and options:
        raise ConfigError(f"with --config, put strategy options in the config's \"params\", not on the command line "
                          f"(got --{', --'.join(k.replace('_', '-') for k in options)})")
    bundle = load_model(args.model, weights=args.weights)
    demo = _is_builtin(bundle.spec)
    if demo and args.config is None and "recover_iters" not in options and "recover_iters" in {f.name for f in dataclasses.fields(strategy.config_cls)}:
        options["recover_iters"] = DEMO_RECOVER_ITERS
        console.print(f"built-in demo: --recover-iters {DEMO_RECOVER_ITERS} (the paper uses 2000; pass the flag to change)")
    seed = int(options.get("seed", 0))
    data: ImageSet | None
    if args.data is not None:
        data = load_images(args.data, bundle.data_config, num_samples=args.num_samples, seed=seed, progress=not args.quiet)
    elif args.data_free:
        data = None
    elif demo:
        data = builtin.tiny_set(args.num_samples or DEMO_SAMPLES, seed)
    elif strategy.needs_data:
        raise DataError(f"strategy {strategy.name!r} needs images: pass --data FOLDER (a tiny set is enough)")
    else:
        data = None
    if args.eval_data is not None:
        eval_set = load_images(args.eval_data, bundle.data_config, progress=not args.quiet)
    elif demo:
        eval_set = builtin.test_set()
    else:
        eval_set = data
    if eval_set is not None and args.eval_samples is not None and args.eval_samples < len(eval_set):
        labels = eval_set.labels.numpy() if eval_set.has_labels else None
        eval_set = eval_set.subset(sample_tiny_set(labels, args.eval_samples, seed, num_items=len(eval_set)).tolist())
    if args.config is not None:
        from ..nncf import run_config
        from .nncf import print_statistics

        controller = run_config(bundle, args.config, data, out / "openvino", work_dir=out / ".work",
                                device=args.device, latency_backend=args.latency_backend, num_threads=args.threads,
                                progress=not args.quiet)
        print_statistics(controller, args.config, out / "openvino", "model")
        return 0
    console.print(f"model {bundle.spec} | strategy {strategy.name} | data "
                  f"{'data-free (synthetic)' if data is None else f'{len(data)} images from {data.source}'}")

    result = compress(bundle, data, strategy.name, device=args.device, work_dir=out / ".work", progress=not args.quiet,
                      latency_backend=args.latency_backend, latency_batch_size=args.latency_batch_size,
                      num_threads=args.threads, **options)
    teacher, student = bundle.model, result.model
    report = _measure(args, bundle, result, eval_set, data)
    base_spec = bundle.meta.get("base_spec", bundle.spec)
    surgery = list(bundle.meta.get("surgery", [])) + result.surgery
    ckpt = save_compressed(out / "model.pt", student, base_spec, bundle.data_config, surgery,
                           {"strategy": result.strategy, "config": result.config})
    report["outputs"] = {"checkpoint": str(ckpt)}
    if not args.no_export:
        console.print("exporting to OpenVINO IR and checking it against torch ...")
        exp = export_openvino(student, bundle.data_config.input_size, out / "openvino", precision=args.precision,
                              calibration=data if data is not None else None, data_config=bundle.data_config,
                              class_names=(data.class_names if data is not None else None),
                              meta={"base_spec": base_spec, "strategy": result.strategy})
        report["export"] = exp.to_dict()
        report["outputs"]["openvino"] = str(exp.xml)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["outputs"]["report"] = str(write_report(out, report))
    png = plot_report(report, out / "report.png")
    if png is not None:
        report["outputs"]["plot"] = str(png)
        write_report(out, report)
    _print_summary(Console(quiet=False), report)
    return 0


def _measure(args: argparse.Namespace, bundle, result, eval_set: ImageSet | None, data: ImageSet | None) -> dict:
    teacher, student = bundle.model, result.model
    size = bundle.data_config.input_size
    x = torch.zeros(1, *size)
    backend = args.latency_backend
    ab = compare_latency(teacher, student, size, backend, batch_size=args.latency_batch_size,
                         num_threads=args.threads, device=args.device if backend == "cuda" else "cpu", min_time_s=3.0)
    chosen = list(result.stats.get("selection", {}).get("blocks", []))
    report: dict[str, Any] = {
        "model": bundle.spec, "strategy": result.strategy, "config": result.config,
        "data": result.stats.get("data") or ({"source": data.source, "images": len(data)} if data else None),
        "blocks": {"candidates": [c["name"] for c in result.stats.get("candidates", [])], "chosen": chosen},
        "latency": {"backend": backend, "threads": args.threads, "batch_size": args.latency_batch_size,
                    "unit": ab.a.unit, "teacher_median": ab.a.median_ms, "student_median": ab.b.median_ms,
                    "ratio_median": ab.ratio_median, "ratio_p10": ab.ratio_p10, "ratio_p90": ab.ratio_p90,
                    "reduction": 1 - ab.ratio_median, "pairs": ab.pairs},
        "macs": {"teacher": count_macs(teacher, x), "student": count_macs(student, x)},
        "params": {"teacher": sum(p.numel() for p in teacher.parameters()),
                   "student": sum(p.numel() for p in student.parameters())},
        "stats": {k: v for k, v in result.stats.items() if k not in ("candidates",)},
    }
    report["macs"]["reduction"] = 1 - report["macs"]["student"] / report["macs"]["teacher"]
    for key in ("recoverability", "latency_table", "selection", "feature_mse"):
        if key in result.stats:
            report[key] = result.stats[key]
    if eval_set is not None:
        report["accuracy"] = _accuracy(teacher, student, chosen, eval_set, report["latency"]["reduction"])
    return report


def _accuracy(teacher, student, chosen: list[str], eval_set: ImageSet, reduction: float) -> dict:
    """Top-1 (or, without labels, top-1 agreement with the teacher) of teacher, bare drop and student."""
    labelled = eval_set.has_labels
    reference = eval_set.labels if labelled else None
    teacher_pred = predictions(teacher, eval_set)
    if reference is None:
        reference = teacher_pred

    def value(pred) -> float:
        return float((pred == reference).float().mean())

    student_pred = predictions(student, eval_set)
    points = [{"label": "teacher", "latency_reduction": 0.0, "value": value(teacher_pred)}]
    if chosen:
        points.append({"label": "blocks dropped, no recovery", "latency_reduction": reduction,
                       "value": value(predictions(drop_blocks(teacher, chosen), eval_set))})
    points.append({"label": "compressed", "latency_reduction": reduction, "value": value(student_pred)})
    return {"metric": "top-1 (%)" if labelled else "top-1 agreement with the teacher (%)",
            "eval_data": {"source": eval_set.source, "images": len(eval_set)}, "points": points,
            "teacher": points[0]["value"], "student": points[-1]["value"],
            "agreement": float((student_pred == teacher_pred).float().mean())}


def _print_summary(console: Console, r: dict) -> None:
    lat, unit = r["latency"], r["latency"]["unit"]
    t = Table(title=f"{r['strategy']} on {r['model']}", show_header=True)
    t.add_column("")
    t.add_column("teacher", justify="right")
    t.add_column("compressed", justify="right")
    t.add_column("change", justify="right")
    t.add_row(f"latency ({lat['backend']}, {unit}, median)", f"{lat['teacher_median']:.3f}", f"{lat['student_median']:.3f}",
              f"-{100 * lat['reduction']:.1f}% (p10-p90 ratio {lat['ratio_p10']:.3f}-{lat['ratio_p90']:.3f})")
    t.add_row("MACs (M)", f"{r['macs']['teacher'] / 1e6:.1f}", f"{r['macs']['student'] / 1e6:.1f}",
              f"-{100 * r['macs']['reduction']:.1f}%")
    t.add_row("parameters (M)", f"{r['params']['teacher'] / 1e6:.3f}", f"{r['params']['student'] / 1e6:.3f}", "")
    if "accuracy" in r:
        a = r["accuracy"]
        t.add_row(a["metric"], f"{100 * a['teacher']:.2f}", f"{100 * a['student']:.2f}",
                  f"{100 * (a['student'] - a['teacher']):+.2f} pts")
        if len(a["points"]) == 3:
            t.add_row("  (blocks dropped, before recovery)", "", f"{100 * a['points'][1]['value']:.2f}", "")
    console.print(t)
    if r["blocks"]["chosen"]:
        console.print(f"dropped blocks: {', '.join(r['blocks']['chosen'])}")
    outs = r.get("outputs", {})
    console.print("wrote " + ", ".join(str(v) for v in outs.values()) + f"  ({r['seconds']:.0f} s)")
