"""The model zoo: one model per timm family, and torchvision's classification, detection and segmentation models.

For each model (random weights, its own input size, capped at 256 px): the drop candidates, whether dropping
the first and the last of them leaves a model that runs, whether its OpenVINO IR is verified against torch,
the measured latency one block saves (the candidate with most MACs, interleaved A/B, OpenVINO CPU, 1 thread),
and the seconds it all took. Detection and segmentation models are taken by their backbone (``#backbone``),
whose outputs (every FPN level) are what a student mimics. Each model runs in a process of its own with a
time limit, so one that hangs or crashes is a row, not the end of the sweep.

    python benchmarks/zoo.py                  # the full sweep (~100 models; ~40 min on 2 cores)
    python benchmarks/zoo.py --quick          # three models, for the test suite

Results: ``benchmarks/results/zoo.{json,md}``. Families whose blocks have no identity shortcut (plain chains,
concatenating networks, projected or re-parameterised shortcuts) are listed in ``NO_IDENTITY`` with why;
coverage counts the models outside that list that get candidates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MAX_SIZE = 256
MAX_PARAMS = 90e6

# Per timm module, the model the sweep builds (the smallest common variant).
TIMM = {
    "beit": "beit_base_patch16_224", "byoanet": "botnet26t_256", "byobnet": "gernet_s", "cait": "cait_xxs24_224",
    "coat": "coat_lite_tiny", "convit": "convit_tiny", "convmixer": "convmixer_768_32", "convnext": "convnext_atto",
    "crossvit": "crossvit_tiny_240", "cspnet": "cspresnet50", "davit": "davit_tiny", "deit": "deit_tiny_patch16_224",
    "densenet": "densenet121", "dla": "dla34", "dpn": "dpn68", "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1", "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "efficientnet_b0", "efficientvit_mit": "efficientvit_b0", "efficientvit_msra": "efficientvit_m0",
    "eva": "eva02_tiny_patch14_224", "fastvit": "fastvit_t8", "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny", "ghostnet": "ghostnet_100", "hardcorenas": "hardcorenas_a", "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224", "hrnet": "hrnet_w18_small", "inception_next": "inception_next_tiny",
    "inception_resnet_v2": "inception_resnet_v2", "inception_v3": "inception_v3", "inception_v4": "inception_v4",
    "levit": "levit_128s", "maxxvit": "maxvit_tiny_tf_224", "metaformer": "caformer_s18",
    "mlp_mixer": "mixer_s16_224", "mobilenetv3": "mobilenetv3_small_100", "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny", "nasnet": "nasnetalarge", "nest": "nest_tiny", "nextvit": "nextvit_small",
    "nfnet": "nf_resnet50", "pit": "pit_ti_224", "pnasnet": "pnasnet5large", "pvt_v2": "pvt_v2_b0",
    "regnet": "regnetx_002", "repghost": "repghostnet_050", "repvit": "repvit_m0_9", "res2net": "res2net50_14w_8s",
    "resnest": "resnest14d", "resnet": "resnet18", "resnetv2": "resnetv2_50", "rexnet": "rexnet_100",
    "selecsls": "selecsls42b", "senet": "legacy_seresnet18", "sequencer": "sequencer2d_s", "sknet": "skresnet18",
    "starnet": "starnet_s1", "swiftformer": "swiftformer_xs", "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_cr_tiny_ns_224", "tiny_vit": "tiny_vit_5m_224", "tnt": "tnt_s_patch16_224",
    "tresnet": "tresnet_m", "twins": "twins_pcpvt_small", "vgg": "vgg11_bn", "visformer": "visformer_tiny",
    "vision_transformer": "vit_tiny_patch16_224", "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "vit_relpos_small_patch16_224", "volo": "volo_d1_224", "vovnet": "ese_vovnet19b_dw",
    "xception": "legacy_xception", "xception_aligned": "xception41", "xcit": "xcit_nano_12_p16_224",
    "mambaout": "mambaout_femto", "rdnet": "rdnet_tiny", "fasternet": "fasternet_t0", "shvit": "shvit_s1",
    "lcnetv2": "lcnetv2_small", "efficientvim": "efficientvim_m1", "cspnext": "cspnext_s", "iformer": "iformer_t",
    "lowformer": "lowformer_b0", "vitamin": "vitamin_small_224",
}
TORCHVISION = [
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18",
    "resnet50", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t", "vgg11_bn",
    "vit_b_32", "wide_resnet50_2",
]
TORCHVISION_BACKBONES = [
    "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn", "fcos_resnet50_fpn", "retinanet_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large", "ssd300_vgg16", "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "fcn_resnet50", "lraspp_mobilenet_v3_large",
]
# Families whose blocks have no identity shortcut, with what they do instead (checked by reading the code).
NO_IDENTITY = {
    "densenet": "concatenates each layer's output", "vgg": "a plain chain", "alexnet": "a plain chain",
    "squeezenet": "fire modules concatenate", "googlenet": "inception modules concatenate",
    "inception": "inception modules concatenate", "nasnet": "cells concatenate", "pnasnet": "cells concatenate",
    "shufflenet": "splits and concatenates channels", "resnest": "one block per stage, each with a projected shortcut",
    "rexnet": "adds a shortcut to part of the channels only", "vovnet": "one-shot aggregation concatenates",
    "ssd300_vgg16": "a VGG backbone", "dpn": "dual paths add projected residuals and concatenate",
    "hrnet": "multi-resolution fusion", "selecsls": "concatenates",
}
QUICK = ["timm:resnet18", "timm:vit_tiny_patch16_224", "torchvision:deeplabv3_mobilenet_v3_large#backbone"]


def specs() -> list[str]:
    return ([f"timm:{m}" for m in TIMM.values()] + [f"torchvision:{m}" for m in TORCHVISION]
            + [f"torchvision:{m}#backbone" for m in TORCHVISION_BACKBONES])


def family(spec: str) -> str:
    name = spec.split(":", 1)[1].split("#")[0]
    if spec.startswith("timm:"):
        return next((k for k, v in TIMM.items() if v == name), name)
    return name


def one(spec: str) -> dict:
    """The row of one model (runs in its own process)."""
    import torch

    from practise_plugin.core.errors import PractiseError
    from practise_plugin.export.ir import export_openvino
    from practise_plugin.graph.discover import discover_blocks
    from practise_plugin.models.loading import load_model
    from practise_plugin.runtime.latency import compare_latency
    from practise_plugin.surgery.drop import drop_blocks

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    row: dict = {"model": spec, "family": family(spec)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_model(spec)
    c, h, w = bundle.data_config.input_size
    if max(h, w) > MAX_SIZE:
        bundle.data_config = bundle.data_config.with_input_size((c, min(h, MAX_SIZE), min(w, MAX_SIZE)))
    row["input"] = list(bundle.data_config.input_size)
    row["params_m"] = round(sum(p.numel() for p in bundle.model.parameters()) / 1e6, 2)
    if row["params_m"] * 1e6 > MAX_PARAMS:
        return {**row, "skipped": f"more than {MAX_PARAMS / 1e6:.0f} M parameters"}
    x = bundle.example_input()
    try:
        blocks = discover_blocks(bundle.model, x)
    except PractiseError as e:
        return {**row, "candidates": 0, "message": str(e), "seconds": round(time.perf_counter() - t0, 1)}
    row.update(candidates=len(blocks), kinds=sorted({b.kind for b in blocks}), first=blocks[0].name,
               discover_s=round(time.perf_counter() - t0, 1))
    names = list(dict.fromkeys([blocks[0].name, blocks[-1].name]))
    student = drop_blocks(bundle.model, names)
    with torch.no_grad():
        ref, out = bundle.model(x), student(x)
    same = (lambda a, b: a.shape == b.shape) if isinstance(ref, torch.Tensor) else (
        lambda a, b: [t.shape for t in a.values()] == [t.shape for t in b.values()])
    row["drop_ok"] = bool(same(ref, out))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            export_openvino(student, bundle.data_config.input_size, Path(tmp) / "ir")
            row["export_ok"] = True
        except PractiseError as e:
            row["export_ok"], row["export_error"] = False, str(e)[:200]
    biggest = max(blocks, key=lambda b: b.macs)
    if row["export_ok"]:
        ab = compare_latency(bundle.model, drop_blocks(bundle.model, [biggest.name]), bundle.data_config.input_size,
                             "openvino", num_threads=1, time_s=0.5)
        row.update(one_block=biggest.name, one_block_macs=round(biggest.macs / max(1, sum(b.macs for b in blocks)), 3),
                   latency_saved=round(1 - ab.ratio_median, 4),
                   latency_interval=[round(1 - ab.ratio_high, 4), round(1 - ab.ratio_low, 4)])
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def markdown(rows: list[dict]) -> str:
    shortcut = [r for r in rows if "skipped" not in r and not any(k in r["family"] for k in NO_IDENTITY)]
    covered = [r for r in shortcut if r.get("candidates")]
    lines = [f"Coverage: {len(covered)} of {len(shortcut)} models outside the no-identity-shortcut families get "
             f"candidates ({100 * len(covered) / max(1, len(shortcut)):.0f}%); {len(rows)} models swept.", "",
             "| model | input | params (M) | candidates | drop runs | IR verified | one block (share of candidate MACs) | "
             "latency saved (95% interval) | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['model']} | | | {r.get('skipped') or r.get('error')} | | | | | |")
            continue
        if not r.get("candidates"):
            why = next((v for k, v in NO_IDENTITY.items() if k in r["family"]), r.get("message", "")[:90])
            lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['params_m']} | 0 ({why}) | | | | | "
                         f"{r['seconds']} |")
            continue
        lat = (f"{100 * r['latency_saved']:.1f}% ({100 * r['latency_interval'][0]:.1f}-"
               f"{100 * r['latency_interval'][1]:.1f}%)") if "latency_saved" in r else ""
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['params_m']} | {r['candidates']} | "
                     f"{'yes' if r['drop_ok'] else 'NO'} | {'yes' if r['export_ok'] else 'NO'} | "
                     f"{r.get('one_block', '')} ({r.get('one_block_macs', '')}) | {lat} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="three models (the test suite's smoke run)")
    p.add_argument("--models", nargs="+", help="these model specs instead of the sweep")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a model may take (default 300)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print its row as JSON
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    todo = args.models or (QUICK if args.quick else specs())
    rows = []
    for spec in todo:
        t0 = time.perf_counter()
        try:
            run = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True,
                                 timeout=args.timeout)
            last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
            row = json.loads(last) if run.returncode == 0 and last.startswith("{") else {
                "model": spec, "family": family(spec), "error": (run.stderr.strip().splitlines() or ["failed"])[-1][:160]}
        except subprocess.TimeoutExpired:
            row = {"model": spec, "family": family(spec), "error": f"timed out after {args.timeout:.0f} s"}
        row.setdefault("seconds", round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = args.name or ("zoo-quick" if args.quick else "zoo")
    args.out.mkdir(parents=True, exist_ok=True)
    from practise_plugin.core.files import atomic_write_json, atomic_write_text

    atomic_write_json(args.out / f"{name}.json", {"rows": rows, "no_identity": NO_IDENTITY})
    atomic_write_text(args.out / f"{name}.md", markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
