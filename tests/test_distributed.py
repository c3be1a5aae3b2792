"""Real multi-process runs (torchrun, gloo on the CPU) against the same work in one process.

Each test launches ``tests/distributed_worker.py`` (or the CLI) with 2 ranks and with 1, both as separate
processes with one torch thread each, and compares what rank 0 wrote.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PRACTISE_DIST_TIMEOUT": "30"}


def torchrun(n: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)


SCENARIOS = ("score", "recover", "recover-bn-train", "swd")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, dict[str, dict]]:
    """Every scenario on 2 ranks and on 1 process: two launches for all the comparisons below."""
    found = {}
    for n in (2, 1):
        out = tmp_path_factory.mktemp(f"ranks{n}")
        proc = torchrun(n, str(WORKER), ",".join(SCENARIOS), str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[n] = {s: json.loads((out / f"{s}.json").read_text()) for s in SCENARIOS}
        assert {r["world_size"] for r in found[n].values()} == {n}
    return found


def max_diff(a: dict, b: dict) -> float:
    return max(float((torch.tensor(a[k]) - torch.tensor(b[k])).abs().max()) for k in a)


def test_sharded_scoring_returns_exactly_the_serial_scores(runs):
    two, one = runs[2]["score"], runs[1]["score"]
    assert two["blocks"] == one["blocks"] and len(one["blocks"]) == 12
    assert two["mse"] == one["mse"] and two["mse_dropped"] == one["mse_dropped"]


def test_the_candidates_are_split_into_shares_of_equal_estimated_cost():
    """Costs falling along the order (the built-in network's 12 candidates, as modules from each start unit): the
    shares' totals differ by less than the cheapest item, where dealing every other item gave the first rank the
    costlier of each pair; each item lands once, each share in order, and the split is the same on every call."""
    from practise_plugin.core.distributed import split

    costs = [110.0, 104.0, 91.0, 82.0, 76.0, 63.0, 54.0, 48.0, 42.0, 36.0, 23.0, 14.0]
    shares = split(costs, 2)
    totals = [sum(costs[i] for i in share) for share in shares]
    assert abs(totals[0] - totals[1]) < min(costs)
    assert sum(costs[0::2]) - sum(costs[1::2]) > abs(totals[0] - totals[1])
    assert sorted(i for share in shares for i in share) == list(range(12)) and all(s == sorted(s) for s in shares)
    assert split(costs, 2) == shares and split(costs, 1) == [list(range(12))]
    assert split([1.0, 1.0, 1.0], 4)[3] == []  # more ranks than items: a rank may have none


def test_recovery_on_two_ranks_follows_the_one_process_run(runs):
    # BatchNorm frozen: each rank's half of the global batch gives exactly the full batch's mean gradient
    two, one = runs[2]["recover"], runs[1]["recover"]
    assert max_diff(two["weights"], one["weights"]) < 1e-6
    assert [s for s, _ in two["losses"]] == [s for s, _ in one["losses"]]
    for (_, a), (_, b) in zip(two["losses"], one["losses"]):
        assert abs(a - b) <= 1e-5 * b
    assert two["losses"][-1][1] < two["losses"][0][1]


def test_recovery_with_batchnorm_training_stays_close(runs):
    # BatchNorm in train mode normalises each rank's half batch by its own statistics (as DDP does without
    # SyncBatchNorm): not the same numbers, the same training. Measured: final loss 0.0226 vs 0.0192.
    two, one = runs[2]["recover-bn-train"], runs[1]["recover-bn-train"]
    assert 0 < max_diff(two["weights"], one["weights"]) < 1e-2
    assert abs(two["losses"][-1][1] - one["losses"][-1][1]) <= 0.5 * one["losses"][-1][1]


def test_swd_training_on_two_ranks_follows_the_one_process_run(runs):
    two, one = runs[2]["swd"], runs[1]["swd"]
    assert max_diff(two["weights"], one["weights"]) < 1e-6  # the penalty is applied once, masks agree
    assert two["outside_norm"] == pytest.approx(one["outside_norm"], rel=1e-4)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_ends_the_other_with_a_clear_error(tmp_path):
    # launched by hand (no torchrun agent, which would stop the survivor itself): rank 0 must find out alone
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), "kill", str(tmp_path / "kill.json")], cwd=ROOT,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    t0 = time.monotonic()
    _, err0 = procs[0].communicate(timeout=240)
    procs[1].wait(timeout=60)
    assert procs[1].returncode == -9  # killed at step 3
    assert procs[0].returncode == 2, err0[-2000:]
    assert "rank 0 of 2" in err0 and "another rank stopped" in err0, err0[-2000:]
    assert time.monotonic() - t0 < 120  # within the 30 s collective timeout plus start-up, not a hang
    assert not (tmp_path / "kill.json").exists()


@pytest.mark.slow
def test_compress_under_torchrun_picks_the_blocks_of_one_process_and_writes_once(tmp_path):
    args = ["-m", "practise_plugin", "compress", "--num-samples", "64", "--recover-iters", "10",
            "--latency-backend", "macs", "--no-export", "--quiet", "--eval-samples", "200"]
    runs = {}
    for n in (2, 1):
        out = tmp_path / f"out{n}"
        proc = torchrun(n, *args, "--out", str(out), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("practise on builtin") == 1, proc.stdout  # rank 0 alone prints the summary
        runs[n] = json.loads((out / "report.json").read_text())
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
            "model.pt", "report.json", "report.png"]
    assert runs[2]["blocks"]["chosen"] == runs[1]["blocks"]["chosen"]
    assert [r["mse"] for r in runs[2]["recoverability"]] == [r["mse"] for r in runs[1]["recoverability"]]
    mse2, mse1 = runs[2]["feature_mse"]["recovered"], runs[1]["feature_mse"]["recovered"]
    assert abs(mse2 - mse1) <= 0.5 * mse1  # BatchNorm trains on half batches per rank (see above)


def test_a_global_batch_that_does_not_divide_over_the_ranks_is_refused(tmp_path):
    out = tmp_path / "odd"
    proc = torchrun(2, "-m", "practise_plugin", "compress", "--num-samples", "64", "--recover-iters", "2",
                    "--batch-size", "33", "--latency-backend", "macs", "--no-export", "--quiet", "--out", str(out))
    assert proc.returncode != 0
    assert "multiple of 2" in proc.stderr


def test_the_swd_regulariser_in_a_users_own_ddp_loop(tmp_path):
    out = tmp_path / "swd.pt"
    proc = torchrun(2, "integrations/torch_ddp/swd_ddp.py", "--epochs", "2", "--images", "512", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("pruned: 10.0% of the weights kept") == 1  # rank 0 reports once
    state = torch.load(out, weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    kept = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(kept - 0.10) < 0.01
