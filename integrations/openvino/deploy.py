"""Deployment recipe: classify a folder of images with an IR written by ``practise export``.

    python integrations/openvino/deploy.py IR_DIR_OR_XML IMAGE_FOLDER [--threads N] [--top-k 5] [--exact-f32]

Reads ``<name>.json`` beside the IR for the preprocessing the model was trained with (input size, mean,
std, interpolation, crop) and its class names (an IR exported with ``--embed-preprocessing`` normalises by
itself: it is fed the resized, cropped u8 pixels), runs every image through the compiled model one batch at
a time, prints the top-k classes per image, and reports the latency of those synchronous inferences
(median and p10/p90). When the image folder has one sub-folder per class named like the model's
classes, it also prints top-1 accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from practise_plugin.core.errors import ModelError, PractiseError
from practise_plugin.data.images import list_images, load_image_files, load_pixels
from practise_plugin.export.ir import read_ir_config
from practise_plugin.runtime.latency import summarize
from practise_plugin.runtime.openvino import load_openvino, resolve_ir

WARMUP = 3  # first inferences allocate memory and pick kernels: not part of steady-state latency


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Classify images with an OpenVINO IR exported by `practise export`.")
    p.add_argument("ir", type=Path, help="the IR's .xml, or the folder `practise export --out` wrote")
    p.add_argument("images", type=Path, help="a folder of images (flat, or one sub-folder per class)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: OpenVINO's choice)")
    p.add_argument("--top-k", type=int, default=5, help="classes to print per image (default: 5)")
    p.add_argument("--min-runs", type=int, default=50,
                   help="time at least this many inferences, cycling over the images (default: 50)")
    p.add_argument("--exact-f32", action="store_true",
                   help="compute in fp32 even where the CPU would run bf16 (OpenVINO's faster default)")
    return p


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def run(args: argparse.Namespace) -> int:
    xml = resolve_ir(args.ir)
    cfg = read_ir_config(xml)
    if cfg.data_config is None:
        raise ModelError(f"{xml.with_suffix('.json')} has no preprocessing (mean/std); re-export with `practise export`")
    files, labels, folder_names = list_images(args.images)
    if cfg.preprocessing and cfg.preprocessing.get("embedded"):  # the IR normalises: feed it the pixels
        images = load_pixels(files, cfg.data_config)
        if cfg.preprocessing["input"]["layout"] == "NCHW":
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    else:
        images = load_image_files(files, cfg.data_config).images.numpy()
    request = load_openvino(xml, args.threads, exact_f32=args.exact_f32).create_infer_request()

    bs = cfg.batch_size
    padded = np.concatenate([images, np.repeat(images[-1:], -len(images) % bs, axis=0)])  # fill the static batch
    batches = [padded[i : i + bs] for i in range(0, len(padded), bs)]
    for b in batches[:WARMUP]:
        request.infer({0: b})
    logits, times = [], []
    n_runs = max(args.min_runs, len(batches))
    for i in range(n_runs):  # a full pass gives the predictions, further passes more timings
        out = request.infer({0: batches[i % len(batches)]})[0]
        times.append(request.latency / 1000.0)  # OpenVINO's own measure of the last infer, in ms
        if i < len(batches):
            logits.append(np.asarray(out).reshape(bs, -1))
    probs = softmax(np.concatenate(logits)[: len(images)])

    names = cfg.class_names or [str(i) for i in range(probs.shape[1])]
    correct = 0
    known = bool(folder_names) and all(n in names for n in folder_names)
    for f, p, y in zip(files, probs, labels):
        top = np.argsort(-p)[: args.top_k]
        print(f"{f.name}: " + ", ".join(f"{names[k]} {100 * p[k]:.1f}%" for k in top))
        if known:
            correct += int(names[top[0]] == folder_names[y])
    if known:
        print(f"top-1 accuracy against folder names: {correct}/{len(files)} = {correct / len(files):.3f}")
    lat = summarize(times, "openvino", "cpu", bs, cfg.data_config.input_size, args.threads)
    print(f"latency ({xml.name}, {cfg.precision}, batch {bs}, {lat.runs} runs): median {lat.median_ms:.3f} ms, "
          f"p10 {lat.p10_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PractiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
