"""``practise nncf CONFIG --model SPEC --out DIR``: run an NNCF-style JSON config, export an OpenVINO IR."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import SPEC_FORMS
from ..nncf.schema import known_algorithms
from ..runtime import BACKENDS
from .argtypes import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nncf", help="run an NNCF-style JSON config (practise/swd/udfc + NNCF quantization, sparsity, weights)",
        description=(
            "Apply the entries of an NNCF-style config (\"compression\": [{\"algorithm\": ...}, ...]) in order and "
            "write an OpenVINO IR to DIR (<name>.xml/.bin, <name>.json with the preprocessing, report.json with "
            "per-entry statistics). Known algorithms: " + ", ".join(known_algorithms()) + ". Strategies take "
            "their options under \"params\" (see `practise strategies NAME`); NNCF-native entries run with the "
            "installed NNCF 3.x. Without --data, data-free strategies run as they are and quantization "
            "calibrates on images synthesised from the model's BatchNorm statistics."
        ),
        epilog="example: practise nncf integrations/nncf/practise_int8.json --model builtin --data images/ --out ir/",
    )
    p.add_argument("config", type=Path, metavar="CONFIG", help="the JSON config file")
    p.add_argument("--model", required=True, metavar="SPEC", help=f"model spec: {SPEC_FORMS}")
    p.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                   help="images (flat folder or one sub-folder per class): the tiny set and calibration images")
    p.add_argument("--num-samples", type=positive_int, default=None, metavar="N", help="draw a tiny set of N images from --data")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder to write the IR and report into (required unless --check)")
    p.add_argument("--check", action="store_true",
                   help="dry run: read the config and the model, print what each entry would do (runs here, delegated "
                        "to NNCF, fields not applied, refused and what to use instead) and exit 0 if it can run, 2 if "
                        "not; writes nothing")
    p.add_argument("--name", default="model", help="file stem of the IR files (default: model)")
    p.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                   help="checkpoints and caches (resumable recovery, synthetic images)")
    p.add_argument("--device", default=None, help="torch device for the strategies (default: the config's, else cpu)")
    p.add_argument("--latency-backend", choices=BACKENDS, default=None,
                   help="how strategies measure latency (default: the config's, else openvino)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N", help="CPU threads for latency measurements")
    p.add_argument("--no-check", action="store_true", help="skip comparing the written IR with the torch model")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose base model is package.module:function to import and run that code")
    p.set_defaults(func=run)


def _summary(entry: dict) -> str:
    """One line per entry, from the numbers the runner measured."""
    algo = entry["algorithm"]
    if algo == "quantization":
        return (f"{entry['fake_quantize_nodes']} FakeQuantize nodes, calibrated on {entry['calibration_images']} "
                f"images ({entry['calibration_source']})")
    if algo == "magnitude_sparsity":
        return f"{entry['zero_fraction_of_pruned_weights']:.1%} of prunable weights are zero ({entry['nncf_call']})"
    if algo == "weight_compression":
        return f"{entry['mode']}: low-precision constants {entry['low_precision_constants']}"
    dropped = f"dropped {', '.join(entry['blocks_dropped'])}; " if entry["blocks_dropped"] else ""
    return f"{dropped}params {entry['params_before']:,} -> {entry['params_after']:,}"


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..models.loading import load_model
    from ..nncf.runner import run_config

    if args.check:
        return _check(args)
    if args.out is None:
        raise ConfigError("--out DIR is required (where the IR and report.json go); or pass --check for a dry run")
    controller = run_config(
        load_model(args.model, trust_code=args.trust_code), args.config, args.data, args.out,
        num_samples=args.num_samples, name=args.name, check=not args.no_check, work_dir=args.work_dir,
        device=args.device, latency_backend=args.latency_backend, num_threads=args.threads,
        progress=False if args.no_progress else None,
    )
    print_statistics(controller, args.config, args.out, args.name)
    return 0


def _check(args: argparse.Namespace) -> int:
    """``--check``: the plan, entry by entry; exit 0 when the config can run, 2 when it cannot."""
    from rich.console import Console

    from ..models.loading import load_model
    from ..nncf.runner import plan

    found = plan(load_model(args.model, trust_code=args.trust_code), args.config, args.data,
                 num_samples=args.num_samples, device=args.device, latency_backend=args.latency_backend,
                 num_threads=args.threads)
    console = Console()
    size = "x".join(map(str, found["input_size"] or [])) or "?"
    say = lambda text: console.print(text, soft_wrap=True, highlight=False, markup=False)  # noqa: E731
    say(f"{Path(args.config).name} on {found['model']}: input {size}, IR batch {found['ir_batch']}, "
        f"target_device {found['target_device']}")
    for e in found["entries"]:
        say(f"{e['where']} {e['algorithm']!r}: {e['action']}" + (f": {e['problem']}" if e["problem"] else ""))
        for key, why in e["not_applied"].items():
            say(f"    not applied: {key} ({why})")
    for note in found["notes"]:
        say(f"note: {note}")
    for key, why in found["not_used"].items():
        say(f"top-level key not used: {key} ({why})")
    for problem in found["problems"]:
        say(f"problem: {problem}")
    say(f"{'can run' if found['runnable'] else 'cannot run as it is'}: {Path(args.config).name}")
    return 0 if found["runnable"] else 2


def print_statistics(controller, config: Path, out: Path, name: str) -> None:
    """The per-entry table and where the IR went (shared with ``practise compress --config``)."""
    from rich.console import Console
    from rich.table import Table

    from ..nncf.runner import REPORT_NAME

    stats = controller.statistics()
    table = Table("#", "algorithm", "seconds", "result", title=f"{Path(config).name} on {stats['model']}")
    for e in stats["entries"]:
        table.add_row(str(e["index"]), e["algorithm"], f"{e['seconds']:.1f}", _summary(e))
    console = Console()
    console.print(table)
    console.print(f"wrote {out / (name + '.xml')} ({stats['precision']}, batch {stats['batch_size']}) "
                  f"and {out / REPORT_NAME}")
