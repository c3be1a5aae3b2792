"""Plumbing shared by the Torch-Pruning example scripts: inputs in, measured results out.

Why it exists: ``prune.py`` and ``hybrid.py`` should read like Torch-Pruning's own examples (importance ->
pruner -> ``step()`` -> fine-tune), so loading the model and images, recovering, measuring, saving,
checking the reload and exporting live here, written once.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from practise_plugin.core.errors import DataError, ExportError, PractiseError
from practise_plugin.core.files import atomic_write_json, ensure_writable_dir
from practise_plugin.data import ImageSet
from practise_plugin.data.images import load_images
from practise_plugin.export.ir import export_openvino
from practise_plugin.graph.features import collect_features, feature_mse, find_feature_point
from practise_plugin.models import builtin
from practise_plugin.models.bundle import ModelBundle
from practise_plugin.models.checkpoint import load_compressed, save_compressed
from practise_plugin.models.loading import load_model
from practise_plugin.practise.recoverability import RecoverabilityScorer
from practise_plugin.practise.recovery import RecoveryConfig, recover
from practise_plugin.runtime.evaluate import agreement, top1

RECOVER_ITERS = 300  # the paper uses ~2000; a few hundred steps already recover most of a tiny set's error


def script_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any],
                argv: list[str] | None) -> int:
    """Parse ``argv`` and run; a :class:`PractiseError` becomes one ``error:`` line and exit status 2 (as ``practise``)."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except PractiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="builtin",
                   help="timm:NAME, torchvision:NAME, builtin (trained Fashion-MNIST ResNet) or a practise checkpoint")
    p.add_argument("--weights", type=Path, help="state_dict to load onto --model (random init otherwise)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input size to prune, recover and export at (default: the model's own)")
    p.add_argument("--data", type=Path, help="tiny image folder (ImageFolder or flat) for scoring and recovery; "
                   "default for builtin: the shipped Fashion-MNIST images")
    p.add_argument("--num-samples", type=int, default=256, help="tiny-set size drawn from --data (default 256)")
    p.add_argument("--eval-samples", type=int, default=None,
                   help="builtin only: evaluate on the first N Fashion-MNIST test images (default: all)")
    p.add_argument("--recover-iters", type=int, default=None,
                   help="feature-mimicking recovery steps on the tiny set (paper: ~2000; 0 disables; default: "
                   f"{RECOVER_ITERS}, or 0 for the data-free udfc and for swd, which trains instead)")
    p.add_argument("--lr", type=float, default=0.02, help="recovery learning rate (SGD, momentum 0.9)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size for scoring and recovery")
    p.add_argument("--out", type=Path, required=True, help="output folder: model.pt, openvino/, summary.json")
    p.add_argument("--no-export", action="store_true", help="do not write the OpenVINO IR")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and training")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@dataclass
class Setup:
    """The model being pruned (edited in place), a frozen copy of it, and the images."""

    bundle: ModelBundle
    model: nn.Module
    teacher: nn.Module
    example_inputs: torch.Tensor
    data: ImageSet | None
    eval_set: ImageSet | None


def load(args: argparse.Namespace) -> Setup:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    bundle = load_model(args.model, weights=args.weights, input_size=args.input_size)
    if args.data is not None:
        data = load_images(args.data, bundle.data_config, num_samples=args.num_samples, seed=args.seed)
    elif bundle.spec.startswith("builtin:fmnist"):
        data = builtin.tiny_set(args.num_samples, args.seed)
    else:
        data = None
    # Folder labels are folder indices, not the model's classes: elsewhere, measure agreement with the teacher.
    eval_set = None if data is None else ImageSet(data.images, None, data.source)
    if bundle.spec.startswith("builtin:fmnist"):
        eval_set = builtin.test_set()
        if args.eval_samples is not None:
            eval_set = eval_set.subset(list(range(min(args.eval_samples, len(eval_set)))))
    if data is not None:
        data.check_input_size(bundle.data_config.input_size)
    example = bundle.example_input()
    return Setup(bundle, bundle.model, copy.deepcopy(bundle.model).eval(), example, data, eval_set)


def require_data(setup: Setup, what: str) -> ImageSet:
    if setup.data is None:
        raise DataError(f"{what} needs images: pass --data FOLDER (a tiny set of 50-1000 images is enough)")
    return setup.data


def classifier_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """Linear layers that write the logits: never pruned (Torch-Pruning's README ignores ``model.fc``)."""
    with torch.no_grad():
        width = model.eval()(example_inputs).shape[-1]
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == width]


def fold_adaptors(model: nn.Module, teacher: nn.Module, data: ImageSet, dropped: list, batch_size: int) -> None:
    """PRACTISE's shortcut to recovery: fit linear adaptors around the dropped blocks (closed form, on the
    tiny set, against the teacher) and fold them into the neighbouring convs of ``model``, exactly."""
    scorer = RecoverabilityScorer(teacher, data, batch_size=batch_size)
    _, adaptors = scorer.fit(dropped)
    adaptors.fold_into(model)


def recover_student(setup: Setup, model: nn.Module, args: argparse.Namespace, iters: int) -> tuple[nn.Module, dict[str, Any]]:
    """Feature mimicking against the frozen teacher on the tiny set (no labels); skipped without images.

    The recovered model is kept only if it matches the teacher's features better than before on the tiny
    set (a randomly initialised teacher whose BatchNorm statistics never saw data can make it worse)."""
    if setup.data is None or iters == 0:
        return model, {"skipped": "no images" if setup.data is None else "0 recovery steps"}
    point = find_feature_point(setup.teacher, setup.example_inputs)
    targets = collect_features(setup.teacher, point, setup.data.images)
    before = feature_mse(collect_features(model, point, setup.data.images), targets)
    cfg = RecoveryConfig(iters=iters, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    recovered, log = recover(model, setup.teacher, setup.data, cfg, point=point, progress=not args.quiet)
    after = feature_mse(collect_features(recovered, point, setup.data.images), targets)
    info = {"iters": iters, "feature_mse_before": before, "feature_mse_after": after, "seconds": round(log.seconds, 1),
            "kept": "recovered" if after <= before else "before recovery (its feature MSE is lower)"}
    return (recovered if after <= before else model), info


def record_quality(setup: Setup, model: nn.Module, summary: dict[str, Any], label: str) -> None:
    """``summary["quality"][label]``: top-1 on labelled evaluation images, else top-1 agreement with the
    teacher on the tiny set (nothing without images)."""
    ev = setup.eval_set
    if ev is None:
        return
    metric, value = ("top-1", top1(model, ev)) if ev.has_labels else \
        ("agreement with the teacher", agreement(model, setup.teacher, ev))
    summary.setdefault("quality", {"metric": metric, "images": len(ev)})[label] = value


def finish(args: argparse.Namespace, setup: Setup, model: nn.Module, surgery: list[dict[str, Any]],
           summary: dict[str, Any], t0: float) -> dict[str, Any]:
    """Measure, save (and check the reload), export to OpenVINO, print and write ``summary.json``."""
    out = ensure_writable_dir(args.out)
    model.eval()
    x = setup.example_inputs
    macs0, params0 = tp.utils.count_ops_and_params(setup.teacher, x)
    macs1, params1 = tp.utils.count_ops_and_params(model, x)
    summary.update(model=setup.bundle.spec, surgery=surgery,
                   macs={"teacher": int(macs0), "pruned": int(macs1)}, params={"teacher": int(params0), "pruned": int(params1)})
    record_quality(setup, setup.teacher, summary, "teacher")
    record_quality(setup, model, summary, "pruned")

    base_spec = setup.bundle.meta.get("base_spec", setup.bundle.spec)
    surgery = list(setup.bundle.meta.get("surgery", [])) + surgery
    ckpt = save_compressed(out / "model.pt", model, base_spec, setup.bundle.data_config, surgery,
                           {"integration": "torch_pruning", "method": summary.get("method")})
    reloaded = load_compressed(ckpt).model  # weights_only=True: the structure is replayed, not unpickled
    with torch.no_grad():
        diff = float((reloaded(x) - model(x)).abs().max())
    if diff > 1e-4:
        raise ExportError(f"the checkpoint {ckpt} reloads to a different network (max |diff| = {diff:.3g})")
    summary["checkpoint"] = {"path": str(ckpt), "reload_max_abs_diff": diff}
    if not args.no_export:
        exp = export_openvino(model, setup.bundle.data_config.input_size, out / "openvino",
                              data_config=setup.bundle.data_config, calibration=setup.data,
                              meta={"base_spec": base_spec, "method": summary.get("method")})
        summary["openvino"] = {"xml": str(exp.xml), "max_abs_err": exp.max_abs_err, "max_ref_abs": exp.max_ref_abs}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "summary.json", summary)
    _print(summary)
    return summary


def _print(s: dict[str, Any]) -> None:
    m, p = s["macs"], s["params"]
    print(f"{s['model']} | {s['method']}")
    for key in ("blocks_dropped", "channels"):
        if key in s:
            print(f"  {key.replace('_', ' ')}: {json.dumps(s[key])}")
    if "latency" in s:
        lat = s["latency"]
        print(f"  latency ({lat['backend']}, measured A/B): -{lat['measured']:.1%} for a target of -{lat['target']:.1%}")
    print(f"  MACs: {m['teacher'] / 1e9:.4f} G -> {m['pruned'] / 1e9:.4f} G ({m['pruned'] / m['teacher'] - 1:+.1%}), "
          f"#Params: {p['teacher'] / 1e6:.3f} M -> {p['pruned'] / 1e6:.3f} M ({p['pruned'] / p['teacher'] - 1:+.1%})")
    if "quality" in s:
        q = s["quality"]
        order = ("teacher", "before_prune", "before_recovery", "pruned")
        steps = " -> ".join(f"{k.replace('_', ' ')} {100 * q[k]:.2f}%" for k in order if k in q)
        print(f"  {q['metric']} ({q['images']} images): {steps}")
    rec = s.get("recovery", {})
    if "feature_mse_before" in rec:
        print(f"  recovery: {rec['iters']} steps, feature MSE {rec['feature_mse_before']:.4g} -> "
              f"{rec['feature_mse_after']:.4g}; kept: {rec['kept']}")
    print(f"  checkpoint: {s['checkpoint']['path']} (reloaded with weights_only=True, max |diff| "
          f"{s['checkpoint']['reload_max_abs_diff']:.2g})")
    if "openvino" in s:
        o = s["openvino"]
        print(f"  OpenVINO IR: {o['xml']} (max |IR - torch| {o['max_abs_err']:.2g} of max |output| {o['max_ref_abs']:.3g})")
    print(f"  {s['seconds']:.0f} s")
