"""Drop whole blocks, then prune channels with Torch-Pruning, then recover once: depth and width in one script.

    python integrations/torch_pruning/hybrid.py --model builtin --num-blocks 2 --pruning-ratio 0.2 --out run/
    python integrations/torch_pruning/hybrid.py --model timm:resnet18 --data imgs/ --num-blocks 1 --out run/

1. ``BlockDropPruner`` + ``RecoverabilityImportance`` removes the ``--num-blocks`` most recoverable blocks (in
   place) and the adaptors fitted for them are folded into the neighbouring convs.
2. ``tp.pruner.BasePruner`` + L2 ``MagnitudeImportance`` removes ``--pruning-ratio`` of the channels. Its
   dependency graph is built **after** the block surgery: one built before would still hold the removed blocks.
3. One feature-mimicking recovery on the tiny set, against the untouched teacher.

The checkpoint's surgery is both records in order (``blocks.surgery() + channel_surgery(channels)``), so
``load_compressed`` replays the drop, then the channel removal, on a fresh model (``weights_only=True``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tp_example import (  # noqa: E402 - the helper sits next to this script
    RECOVER_ITERS,
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

from practise_plugin.surgery.channel_removal import feature_writer  # noqa: E402
from practise_plugin.torch_pruning.block_pruner import BlockDropPruner  # noqa: E402
from practise_plugin.torch_pruning.history import channel_surgery  # noqa: E402
from practise_plugin.torch_pruning.importance import RecoverabilityImportance  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--num-blocks", type=int, default=2, help="blocks to drop (default 2)")
    p.add_argument("--pruning-ratio", type=float, default=0.2, help="channel pruning ratio after the drop (default 0.2)")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    setup = load(args)
    model, x = setup.model, setup.example_inputs
    data = require_data(setup, "hybrid pruning")
    summary: dict[str, Any] = {"method": "practise blocks + torch-pruning channels"}

    # 1. depth: whole blocks
    imp = RecoverabilityImportance(data, batch_size=args.batch_size)
    blocks = BlockDropPruner(model, x, imp, num_blocks=args.num_blocks, ignored_layers=classifier_layers(model, x))
    blocks.step()
    fold_adaptors(model, setup.teacher, data, blocks.dropped_blocks, args.batch_size)

    # 2. width: channels, with a dependency graph of the model as it is now
    ignored = classifier_layers(model, x) + [feature_writer(model, x)]  # keep the logits and the mimicked features
    channels = tp.pruner.BasePruner(model, x, tp.importance.MagnitudeImportance(p=2), pruning_ratio=args.pruning_ratio,
                                    ignored_layers=ignored)
    channels.step()
    summary["blocks_dropped"] = blocks.dropped
    summary["channels"] = {"removed": sum(len(i) for _, _, i in channels.DG.pruning_history())}

    # 3. one recovery for both edits
    iters = RECOVER_ITERS if args.recover_iters is None else args.recover_iters
    if iters:
        record_quality(setup, model, summary, "before_recovery")
    model, summary["recovery"] = recover_student(setup, model, args, iters)
    return finish(args, setup, model, blocks.surgery() + channel_surgery(channels), summary, t0)


def main(argv: list[str] | None = None) -> int:
    return script_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
