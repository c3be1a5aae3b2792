"""``practise export MODEL --out DIR``: an OpenVINO IR (fp32 / fp16 / int8), checked against torch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from ..export import PRECISIONS, TOLERANCES
from ..models import EXPORT_SAMPLES, SPEC_FORMS
from .argtypes import positive_int

if TYPE_CHECKING:
    from ..export.ir import ExportResult



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write an OpenVINO IR (fp32, fp16 or int8), checked against the torch model",
        description=(
            "Convert MODEL to OpenVINO IR in DIR: <name>.xml and <name>.bin, plus <name>.json with the "
            "preprocessing (input size, mean, std, interpolation, crop) and class names the deployment recipe "
            "(integrations/openvino/deploy.py) reads. fp16 stores compressed weights; int8 is NNCF post-training "
            "quantization calibrated on --data. Before anything appears in DIR the written IR is run and compared "
            f"with torch: fp32 within {TOLERANCES['fp32']['rtol']:g} and fp16 within {TOLERANCES['fp16']['rtol']:g} "
            "times the largest output magnitude; int8 needs top-1 agreement >= "
            f"{TOLERANCES['int8']['min_top1_agreement']:g} and mean cosine similarity >= "
            f"{TOLERANCES['int8']['min_mean_cosine']:g}. DIR is replaced as a whole, so it must be new, empty or "
            "hold only an earlier export of the same name."
        ),
        epilog="example: practise export builtin --out ir-int8 --precision int8",
    )
    p.add_argument("model", metavar="MODEL", help=f"model spec: {SPEC_FORMS}")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the IR into")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="weights/arithmetic of the IR (default: fp32)")
    p.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                   help="images (flat folder or one sub-folder per class) for int8 calibration and for the check; "
                        f"the built-in model defaults to {EXPORT_SAMPLES} shipped Fashion-MNIST images")
    p.add_argument("--num-samples", type=positive_int, default=None, metavar="N",
                   help="use a tiny set of N images drawn from --data (default: all of them)")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing the tiny set (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="static batch size of the IR (default: 1)")
    p.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="static input size of the IR (default: the model's own)")
    p.add_argument("--weights", type=Path, default=None, metavar="PATH", help="state_dict to load onto MODEL first")
    p.add_argument("--name", default="model", help="file stem of the IR files (default: model)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the IR with torch (not recommended)")
    p.add_argument("--embed-preprocessing", action="store_true",
                   help="put mean/std and the layout inside the IR (OpenVINO PrePostProcessor): it then takes raw u8 "
                        "images at the model's size, so compile_model and benchmark_app run on decoded images as they "
                        "are (resize and crop them to the model's size first)")
    p.add_argument("--layout", choices=("NHWC", "NCHW"), default="NHWC",
                   help="layout of the raw u8 input with --embed-preprocessing")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a checkpoint whose base model is package.module:function to import and run that code")
    p.set_defaults(func=run)


def describe_check(r: ExportResult) -> str:
    if not r.checked:
        return "not checked against torch (--no-check)"
    if r.precision == "int8":
        return (f"top-1 agreement {r.top1_agreement:.3f} (>= {r.tolerance['min_top1_agreement']:g}), mean cosine "
                f"{r.mean_cosine:.4f} (>= {r.tolerance['min_mean_cosine']:g}) on {r.check_inputs} inputs")
    return (f"max |IR - torch| = {r.max_abs_err:.3g} <= {r.tolerance['rtol']:g} x {r.max_ref_abs:.3g} "
            f"on {r.check_inputs} inputs")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..api import export
    from ..models.loading import load_model
    from .output import next_step, quote, shown

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    bundle = load_model(args.model, weights=args.weights, input_size=tuple(args.input_size) if args.input_size else None,
                        trust_code=args.trust_code)
    result = export(bundle, args.out, precision=args.precision, data=args.data, num_samples=args.num_samples,
                    seed=args.seed, batch_size=args.batch_size, name=args.name, check=not args.no_check,
                    embed_preprocessing=args.embed_preprocessing, layout=args.layout)
    console = Console()
    console.print(f"wrote {shown(result.xml)} (+ {result.bin.name}, {result.config.name}), {result.precision}, "
                  f"batch {result.batch_size}", highlight=False, soft_wrap=True)
    console.print(f"check: {describe_check(result)}")
    Console(stderr=True).print(next_step(f"benchmark_app -m {quote(result.xml)} -hint latency",
                                         f"python integrations/openvino/deploy.py {quote(result.xml.parent)} IMAGES/"),
                               highlight=False, soft_wrap=True)
    return 0
