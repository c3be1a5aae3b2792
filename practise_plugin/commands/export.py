"""``practise export MODEL --out DIR``: an OpenVINO IR (fp32 / fp16 / int8), checked against torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..data import ImageSet, load_images
from ..errors import ConfigError
from ..models import SPEC_FORMS, ModelBundle, load_model
from ..openvino import PRECISIONS, TOLERANCES, ExportResult, export_openvino

BUILTIN_TINY_SET = 300  # images of the shipped Fashion-MNIST pool used when --data is not given


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
                        f"the built-in model defaults to {BUILTIN_TINY_SET} shipped Fashion-MNIST images")
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="use a tiny set of N images drawn from --data (default: all of them)")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing the tiny set (default: 0)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="static batch size of the IR (default: 1)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="static input size of the IR (default: the model's own)")
    p.add_argument("--weights", type=Path, default=None, metavar="PATH", help="state_dict to load onto MODEL first")
    p.add_argument("--name", default="model", help="file stem of the IR files (default: model)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the IR with torch (not recommended)")
    p.set_defaults(func=run)


def _is_builtin_fmnist(bundle: ModelBundle) -> bool:
    """The built-in teacher, or a checkpoint compressed from it."""
    return any(str(s).startswith("builtin:fmnist") for s in (bundle.spec, bundle.meta.get("base_spec", "")))


def _class_names(bundle: ModelBundle) -> list[str]:
    if _is_builtin_fmnist(bundle):
        from ..builtin.fmnist import FMNIST_CLASSES

        return list(FMNIST_CLASSES)
    if bundle.num_classes == 1000:
        from timm.data import ImageNetInfo

        return list(ImageNetInfo().label_descriptions())
    return []


def _images(bundle: ModelBundle, args: argparse.Namespace) -> ImageSet | None:
    """Calibration / check images: --data, else the shipped Fashion-MNIST images for the built-in model."""
    if args.data is not None:
        return load_images(args.data, bundle.data_config, args.num_samples, args.seed, progress=True)
    if _is_builtin_fmnist(bundle) and tuple(bundle.data_config.input_size) == (1, 28, 28):
        from ..builtin import tiny_set

        return tiny_set(args.num_samples or BUILTIN_TINY_SET, args.seed)
    return None


def describe_check(r: ExportResult) -> str:
    if not r.checked:
        return "not checked against torch (--no-check)"
    if r.precision == "int8":
        return (f"top-1 agreement {r.top1_agreement:.3f} (>= {r.tolerance['min_top1_agreement']:g}), mean cosine "
                f"{r.mean_cosine:.4f} (>= {r.tolerance['min_mean_cosine']:g}) on {r.check_inputs} inputs")
    return (f"max |IR - torch| = {r.max_abs_err:.3g} <= {r.tolerance['rtol']:g} x {r.max_ref_abs:.3g} "
            f"on {r.check_inputs} inputs")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    bundle = load_model(args.model, weights=args.weights, input_size=tuple(args.input_size) if args.input_size else None)
    images = _images(bundle, args)
    result = export_openvino(
        bundle.model, bundle.data_config.input_size, args.out, name=args.name, precision=args.precision,
        calibration=images, check=not args.no_check, batch_size=args.batch_size, data_config=bundle.data_config,
        class_names=_class_names(bundle), meta={"model": bundle.spec},
    )
    console = Console()
    console.print(f"wrote {result.xml} (+ {result.bin.name}, {result.config.name}), {result.precision}, "
                  f"batch {result.batch_size}")
    console.print(f"check: {describe_check(result)}")
    return 0
