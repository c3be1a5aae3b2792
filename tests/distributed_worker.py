"""One rank of a distributed test run: ``torchrun --nproc_per_node=N tests/distributed_worker.py A,B,... OUT_DIR``.

Each scenario runs the library under the process group and rank 0 writes ``OUT_DIR/<scenario>.json``,
which the tests compare with the same launch on one process (``--nproc_per_node=1``: no group at all).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from practise_plugin import RecoverabilityScorer, discover_blocks, drop_blocks, load_model
from practise_plugin.core import distributed
from practise_plugin.models import builtin
from practise_plugin.practise.recovery import RecoveryConfig, recover
from practise_plugin.swd.config import SWDConfig
from practise_plugin.swd.regularizer import SWDRegularizer
from practise_plugin.swd.train import make_schedule, train

DROPPED = ["layer2.2", "layer3.3"]


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 64), nn.ReLU(), nn.Linear(64, 10))


def run(scenario: str) -> dict:
    """The scenario's result (in one process, or on every rank of a group)."""
    teacher = load_model("builtin")
    if scenario == "score":
        tiny = builtin.tiny_set(32, seed=0)
        blocks = discover_blocks(teacher.model, teacher.example_input(), count_cost=False)
        scores = RecoverabilityScorer(teacher.model, tiny, method="closed_form", batch_size=16).score(blocks, False)
        return {"mse": [r.mse for r in scores], "mse_dropped": [r.mse_dropped for r in scores],
                "blocks": [r.block for r in scores]}
    if scenario.startswith("recover") or scenario == "kill":
        tiny = builtin.tiny_set(64, seed=0)
        bn = "train" if scenario == "recover-bn-train" else "frozen"
        cfg = RecoveryConfig(iters=1000 if scenario == "kill" else 20, batch_size=32, bn=bn, checkpoint_every=0)

        def die(step: int, loss: float) -> None:  # rank 1 is killed mid-run, as by the OOM killer
            if scenario == "kill" and distributed.rank() == 1 and step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

        student, log = recover(drop_blocks(teacher.model, DROPPED), teacher.model, tiny, cfg, progress=False,
                               on_step=die)
        return {"losses": log.losses, "weights": {k: v.tolist() for k, v in student.state_dict().items()
                                                  if k.startswith("layer4.0.conv1")}}
    if scenario == "swd":
        data = builtin.tiny_set(256, seed=0)
        cfg = SWDConfig(mode="unstructured", target=0.9, epochs=2, batch_size=32, lr=0.02, seed=0, checkpoint_every=0)
        model, schedule = lenet(), make_schedule(len(data), cfg)
        reg = SWDRegularizer(model, cfg, schedule.total_steps)
        history = train(model, data, cfg, schedule, regularizer=reg, progress=False)
        return {"loss": [h["loss"] for h in history], "outside_norm": [h["outside_norm"] for h in history],
                "weights": {k: v.tolist() for k, v in model.state_dict().items() if k.startswith("7.")}}
    raise SystemExit(f"unknown scenario {scenario}")


def main() -> int:
    scenarios, out = sys.argv[1].split(","), Path(sys.argv[2])
    torch.set_num_threads(1)
    distributed.init_from_env("cpu", timeout_s=float(os.environ.get("PRACTISE_DIST_TIMEOUT", "60")))
    try:
        for scenario in scenarios:
            result = run(scenario)
            if distributed.is_main():
                (out / f"{scenario}.json").write_text(json.dumps({**result, "world_size": distributed.world_size()}))
    except Exception as e:  # noqa: BLE001 - the test reads the message
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
