"""Prune a model the Torch-Pruning way with one of four methods, recover on a tiny set, export to OpenVINO.

    python integrations/torch_pruning/prune.py --model timm:resnet18 --method practise --data imgs/ --num-samples 256 --out run/
    python integrations/torch_pruning/prune.py --model builtin --method udfc --pruning-ratio 0.3 --out run/

Methods (each is importance -> pruner -> ``pruner.step()``, as in Torch-Pruning's examples):

- ``practise``: drop whole blocks, ranked by recoverability (``BlockDropPruner`` + ``RecoverabilityImportance``),
  fold the fitted adaptors in, recover by feature mimicking (no labels needed);
- ``udfc``: Torch-Pruning channel pruning with UDFC's data-free compensation (``UDFCPruner``), no data needed;
- ``swd``: sparse training with Selective Weight Decay (``SWDPruner.regularize``) on the labelled tiny set,
  then one hard prune (the paper's setting: no fine-tuning);
- ``l1``: plain Torch-Pruning (``BasePruner`` + L1 ``MagnitudeImportance``), the baseline, then recovery.

Writes ``OUT/model.pt`` (reloads with ``load_compressed``, ``weights_only=True``), ``OUT/openvino/`` (IR checked
against torch) and ``OUT/summary.json`` (every number printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tp_example import (  # noqa: E402 - the helper sits next to this script
    RECOVER_ITERS,
    Setup,
    add_common_args,
    classifier_layers,
    finish,
    fold_adaptors,
    load,
    record_quality,
    recover_student,
    require_data,
    script_main,
)

from practise_plugin.core.errors import DataError  # noqa: E402
from practise_plugin.surgery.channel_removal import feature_writer  # noqa: E402
from practise_plugin.torch_pruning.block_pruner import BlockDropPruner
from practise_plugin.torch_pruning.history import channel_surgery
from practise_plugin.torch_pruning.importance import RecoverabilityImportance
from practise_plugin.torch_pruning.strategy_pruners import pruner_strategies
from practise_plugin.torch_pruning.swd_pruner import SWDPruner
from practise_plugin.torch_pruning.udfc_pruner import UDFCPruner

METHODS = (*pruner_strategies(), "l1")  # registered strategy names, plus Torch-Pruning's plain L1 baseline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=METHODS, default="practise", help="pruning method (default: practise)")
    add_common_args(p)
    p.add_argument("--num-blocks", type=int, help="practise: drop this many blocks")
    p.add_argument("--latency-reduction", type=float, default=0.22,
                   help="practise: measured latency fraction to remove when --num-blocks is not given (default 0.22)")
    p.add_argument("--latency-backend", default="openvino", choices=("openvino", "torch", "macs"),
                   help="practise: what latency means for the target (default: openvino CPU)")
    p.add_argument("--pruning-ratio", type=float, default=0.3, help="udfc/swd/l1: channel pruning ratio (default 0.3)")
    p.add_argument("--swd-steps", type=int, default=200, help="swd: training batches T of the SWD schedule")
    p.add_argument("--swd-lr", type=float, default=0.01, help="swd: SGD learning rate of the sparse training")
    return p


def practise(setup: Setup, args: argparse.Namespace, summary: dict[str, Any]) -> list[dict]:
    data = require_data(setup, "--method practise")
    imp = RecoverabilityImportance(data, batch_size=args.batch_size)
    target = {"num_blocks": args.num_blocks} if args.num_blocks else {"latency_reduction": args.latency_reduction}
    pruner = BlockDropPruner(setup.model, setup.example_inputs, imp, latency_backend=args.latency_backend,
                             ignored_layers=classifier_layers(setup.model, setup.example_inputs), **target)
    pruner.step()
    fold_adaptors(setup.model, setup.teacher, data, pruner.dropped_blocks, args.batch_size)
    summary["blocks_dropped"] = pruner.dropped
    summary["recoverability"] = pruner.history[-1]["importance"]
    if "selection" in pruner.history[-1]:
        sel = pruner.history[-1]["selection"]
        summary["latency"] = {"backend": args.latency_backend, "target": sel["target"], "measured": sel["measured"],
                              "attempts": sel["history"]}
    return pruner.surgery()


def udfc(setup: Setup, args: argparse.Namespace, summary: dict[str, Any]) -> list[dict]:
    pruner = UDFCPruner(setup.model, setup.example_inputs, tp.importance.MagnitudeImportance(p=2),
                        pruning_ratio=args.pruning_ratio)  # the classifier is never a UDFC chain head
    pruner.step()
    summary["channels"] = {"removed_compensated": sum(pruner.report["compensated"].values()),
                           "layers": len(pruner.report["compensated"])}
    return pruner.surgery()


def swd(setup: Setup, args: argparse.Namespace, summary: dict[str, Any]) -> list[dict]:
    data = require_data(setup, "--method swd")
    if not data.has_labels:
        raise DataError("SWD trains with cross-entropy: give --data as an ImageFolder (one sub-folder per class)")
    model = setup.model
    x = setup.example_inputs
    ignored = classifier_layers(model, x) + [feature_writer(model, x)]  # as l1: recovery may mimic the features
    pruner = SWDPruner(model, x, tp.importance.BNScaleImportance(), pruning_ratio=args.pruning_ratio,
                       global_pruning=True, ignored_layers=ignored, total_steps=args.swd_steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.swd_lr, momentum=0.9, weight_decay=pruner.mu)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.swd_steps):
        idx = torch.randint(0, len(data), (min(args.batch_size, len(data)),), generator=gen)
        loss = F.cross_entropy(model(data.images[idx]), data.labels[idx])
        optimizer.zero_grad()
        loss.backward()
        pruner.regularize(model)  # <== SWD, after backward, before the optimizer step
        optimizer.step()
    model.eval()
    record_quality(setup, model, summary, "before_prune")
    pruner.step()
    summary["channels"] = {"removed": sum(len(i) for _, _, i in pruner.DG.pruning_history()), "swd_steps": args.swd_steps,
                           "a_final": pruner.a()}
    return pruner.surgery()


def l1(setup: Setup, args: argparse.Namespace, summary: dict[str, Any]) -> list[dict]:
    model, x = setup.model, setup.example_inputs
    # Keep the pre-pooling feature width too: recovery mimics the teacher's features channel by channel.
    ignored = classifier_layers(model, x) + [feature_writer(model, x)]
    pruner = tp.pruner.BasePruner(model, x, tp.importance.MagnitudeImportance(p=1), pruning_ratio=args.pruning_ratio,
                                  ignored_layers=ignored)
    pruner.step()
    summary["channels"] = {"removed": sum(len(i) for _, _, i in pruner.DG.pruning_history())}
    return channel_surgery(pruner)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    setup = load(args)
    summary: dict[str, Any] = {"method": args.method}
    surgery = {"practise": practise, "udfc": udfc, "swd": swd, "l1": l1}[args.method](setup, args, summary)
    iters = args.recover_iters if args.recover_iters is not None else (0 if args.method in ("udfc", "swd") else RECOVER_ITERS)
    model = setup.model
    if iters and setup.data is not None:
        record_quality(setup, model, summary, "before_recovery")
    model, summary["recovery"] = recover_student(setup, model, args, iters)
    return finish(args, setup, model, surgery, summary, t0)


def main(argv: list[str] | None = None) -> int:
    return script_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
