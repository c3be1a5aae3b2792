"""``practise compress``: model + tiny image set + target in; compressed model, OpenVINO IR and report out.

With no arguments it runs the built-in demo: the shipped Fashion-MNIST ResNet teacher, 500 shipped real
training images, a 22% OpenVINO CPU latency target, and evaluation on the Fashion-MNIST test set.
Strategy options are generated from the strategies' config dataclasses, so every config field is a flag
(``latency_reduction`` -> ``--latency-reduction``) and the help text is the field's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from ..export import PRECISIONS
from ..models import DEMO_SAMPLES, SPEC_FORMS
from ..runtime import BACKENDS, COMPARE_TIME_S
from ..strategies import build_config, get_strategy, list_strategies
from .argtypes import positive_float, positive_int

if TYPE_CHECKING:
    from rich.console import Console


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    owners: dict[str, list[str]] = {}
    rows: dict[str, tuple[Any, str]] = {}
    names = list_strategies()
    for name in names:
        cls = get_strategy(name).config_cls
        kinds = cls.field_types()
        for f in cls.__dataclass_fields__.values():
            owners.setdefault(f.name, []).append(name)
            rows.setdefault(f.name, (kinds[f.name], f.metadata.get("help", "")))
    group = p.add_argument_group("strategy options (see `practise strategies NAME` for defaults)")
    for field_name, (kind, help_) in rows.items():
        prefix = "" if len(owners[field_name]) == len(names) else f"[{', '.join(owners[field_name])}] "
        kwargs = kind.argparse_kwargs()
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
    p.add_argument("--num-samples", type=positive_int, metavar="N", help="draw a tiny set of N images from --data "
                   f"(balanced when N >= classes; builtin default {DEMO_SAMPLES})")
    p.add_argument("--data-free", action="store_true", help="use no images: practise synthesises them from BN statistics")
    p.add_argument("--eval-data", type=Path, help="labelled folder to report top-1 on (default for builtin: the "
                   "Fashion-MNIST test set; otherwise teacher agreement on the tiny set)")
    p.add_argument("--eval-samples", type=positive_int, metavar="N", help="evaluate on N images drawn from the eval set "
                   "(default: all of them)")
    p.add_argument("--out", type=Path, default=Path("practise-out"), help="output folder (default: practise-out)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="OpenVINO IR precision (default: fp32)")
    p.add_argument("--no-export", action="store_true", help="do not write the OpenVINO IR")
    p.add_argument("--device", default="cpu", help="torch device for scoring and recovery: cpu or cuda (default: cpu)")
    p.add_argument("--latency-backend", choices=BACKENDS, default="openvino",
                   help="what latency means: openvino (CPU, default), torch, cuda (CUDA events), macs (deterministic)")
    p.add_argument("--latency-batch-size", type=positive_int, default=1, help="batch size the latency is measured at (default 1)")
    p.add_argument("--threads", type=positive_int, default=None, help="inference threads for latency (default: all cores)")
    p.add_argument("--latency-time", type=positive_float, default=COMPARE_TIME_S, metavar="S",
                   help="time budget of each latency comparison; it stops early once its interval is tight, and "
                        "at most at 3x this")
    p.add_argument("--latency-cache", default=None, metavar="DIR",
                   help="where latency measurements are kept and reused, per machine (default: "
                        "$PRACTISE_CACHE_DIR or ~/.cache/practise-plugin/latency); 'none' measures afresh")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose base model is package.module:function to import and run that code")
    _add_strategy_flags(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.config is not None:
        if options:
            raise ConfigError(f"with --config, put strategy options in the config's \"params\", not on the command "
                              f"line (got --{', --'.join(k.replace('_', '-') for k in options)})")
        return _run_config(args)
    get_strategy(args.strategy)  # an unknown name fails before anything loads
    build_config(args.strategy, None, **options)  # so does a bad option value (< 1 s: no torch yet)
    from ..api import compress_job
    from ..core import distributed

    distributed.init_from_env(args.device)  # under torchrun: join the ranks (a no-op otherwise)
    speaks = distributed.is_main()
    notes: list[str] = []
    try:
        report = compress_job(
            args.out, args.model, strategy=args.strategy, data=args.data, num_samples=args.num_samples,
            data_free=args.data_free, eval_data=args.eval_data, eval_samples=args.eval_samples, weights=args.weights,
            precision=args.precision, export_ir=not args.no_export, device=args.device,
            latency_backend=args.latency_backend, latency_batch_size=args.latency_batch_size,
            num_threads=args.threads, latency_time=args.latency_time, latency_cache=_cache(args.latency_cache),
            progress=not args.quiet, notes=notes, trust_code=args.trust_code, **options,
        )
    finally:
        distributed.shutdown()
    if not speaks:  # rank 0 prints and writes for all ranks
        return 0
    from rich.console import Console

    for line in notes:
        Console(stderr=True, quiet=args.quiet).print(line)
    _print_summary(Console(quiet=False), report)
    return 0


def _cache(value: str | None) -> str | bool:
    """``--latency-cache``: the default per-machine cache (True), none (False) or a folder."""
    if value is None:
        return True
    return False if value.lower() == "none" else value


def _run_config(args: argparse.Namespace) -> int:
    """``--config``: the NNCF-style runner on the same model, images and output folder."""
    from ..data.images import tiny_set_from
    from ..models import builtin
    from ..models.loading import load_model
    from ..nncf.runner import run_config
    from .nncf import print_statistics

    bundle = load_model(args.model, weights=args.weights, trust_code=args.trust_code)
    data = tiny_set_from(args.data, bundle.data_config, args.num_samples, 0, not args.quiet)
    if data is None and not args.data_free and bundle.spec.startswith("builtin:fmnist"):
        data = builtin.tiny_set(DEMO_SAMPLES if args.num_samples is None else args.num_samples, 0)
    controller = run_config(bundle, args.config, data, args.out / "openvino", work_dir=args.out / ".work",
                            device=args.device, latency_backend=args.latency_backend, num_threads=args.threads,
                            progress=not args.quiet)
    print_statistics(controller, args.config, args.out / "openvino", "model")
    return 0


def _print_summary(console: Console, r: dict) -> None:
    from rich.table import Table

    from .output import next_step, quote, shown

    lat, unit = r["latency"], r["latency"]["unit"]
    t = Table(title=f"{r['strategy']} on {r['model']}", show_header=True)
    t.add_column("")
    t.add_column("teacher", justify="right")
    t.add_column("compressed", justify="right")
    t.add_column("change", justify="right")
    lo, hi = lat["reduction_interval"]
    change = f"-{100 * lat['reduction']:.1f}% ({100 * lat['confidence']:.0f}% interval {100 * lo:.1f}-{100 * hi:.1f}%)"
    t.add_row(f"latency ({lat['backend']}, {unit}, median)", f"{lat['teacher_median']:.3f}", f"{lat['student_median']:.3f}",
              change)
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
    if "accuracy" in r:
        a = r["accuracy"]
        console.print(f"{a['metric']} on {a['eval_data']['source']} ({a['eval_data']['images']} images)", soft_wrap=True)
    if "verdict" in lat:
        console.print(f"latency target -{100 * lat['target']:.0f}%: {lat['verdict']} (final measurement); selection "
                      f"measured {100 * r['selection']['measured']:.1f}% ({r['selection'].get('confidence') or 'by count'})",
                      soft_wrap=True)
    if lat.get("load") and lat["load"]["busy"]:
        console.print(f"warning: the machine was busy while timing (other processes kept {lat['load']['others']} of "
                      f"{lat['load']['cpus']} cores busy); the intervals say how much that widened the numbers", soft_wrap=True)
    if r["blocks"]["chosen"]:
        console.print(f"dropped blocks: {', '.join(r['blocks']['chosen'])}", soft_wrap=True)
    outs = r.get("outputs", {})
    console.print("wrote " + ", ".join(shown(v) for v in outs.values()) + f"  ({r['seconds']:.0f} s)", highlight=False,
                  soft_wrap=True)
    if "openvino" in outs:
        console.print(next_step(f"benchmark_app -m {quote(outs['openvino'])} -hint latency",
                                f"python integrations/openvino/deploy.py {quote(Path(outs['openvino']).parent)} IMAGES/"),
                      highlight=False, soft_wrap=True)
