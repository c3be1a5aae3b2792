"""Run an NNCF-style config end to end and export the result as an OpenVINO IR, with the Python API.

    python integrations/nncf/run_config.py integrations/nncf/practise_int8.json --model builtin \
        --data images/ --num-samples 500 --out ir/

The same as ``practise nncf``, written out as the calls a training script would make:
``create_compressed_model`` (the NNCF 2.x call shape, returning ``(model, controller)``), then
``controller.statistics()`` and ``controller.export_model(dir)``. Without ``--data``, the built-in model
uses its shipped Fashion-MNIST images; other models run data-free (synthetic calibration images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from practise_plugin.core.errors import PractiseError
from practise_plugin.data import ImageSet
from practise_plugin.data.images import load_images
from practise_plugin.export.ir import prepare_out_dir
from practise_plugin.models.loading import load_model
from practise_plugin.nncf.runner import REPORT_NAME, create_compressed_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run an NNCF-style JSON config and export an OpenVINO IR.")
    p.add_argument("config", type=Path, help="the JSON config (see integrations/nncf/*.json)")
    p.add_argument("--model", default="builtin", help="model spec (default: builtin)")
    p.add_argument("--data", type=Path, default=None, help="folder of images: the tiny set and calibration images")
    p.add_argument("--num-samples", type=int, default=None, help="draw a tiny set of N images from --data")
    p.add_argument("--out", type=Path, required=True, help="folder for the IR and report.json")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def images_for(bundle, data: Path | None, num_samples: int | None) -> ImageSet | None:
    """--data, else the shipped Fashion-MNIST images for the built-in model, else None (data-free)."""
    if data is not None:
        return load_images(data, bundle.data_config, num_samples=num_samples)
    if bundle.spec.startswith("builtin:fmnist"):
        from practise_plugin.models.builtin import tiny_set

        return tiny_set(num_samples or 300)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prepare_out_dir(args.out, "model", (REPORT_NAME,))  # fail now, not after the compression
        bundle = load_model(args.model)
        model, controller = create_compressed_model(bundle, args.config, images_for(bundle, args.data, args.num_samples),
                                                    progress=not args.no_progress)
        xml = controller.export_model(args.out)
    except PractiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for entry in controller.statistics()["entries"]:
        shown = {k: v for k, v in entry.items() if k not in ("details", "config")}
        print(json.dumps(shown, default=str))
    print(f"wrote {xml} ({type(model).__name__}); per-entry statistics in {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
