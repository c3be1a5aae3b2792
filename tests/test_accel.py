"""The fast path: channels-last full precision on the CPU (the same losses to float rounding), autocast +
channels-last on a GPU (skipped here)."""

from __future__ import annotations

import pytest
import torch

import practise_plugin.practise.recovery as recovery_module
from practise_plugin import drop_blocks
from practise_plugin.core.accel import FastPath, fast_path
from practise_plugin.practise.recovery import RecoveryConfig, recover

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_on_the_cpu_the_fast_path_is_full_precision_in_channels_last(teacher, tiny, monkeypatch):
    fast = fast_path("cpu")
    assert not fast.enabled and fast.scaler is None and fast.channels_last
    x = tiny.images[:4]
    assert torch.equal(fast.batch(x), x) and fast.batch(x).is_contiguous(memory_format=torch.channels_last)
    assert not fast.host(x).is_pinned()
    student = drop_blocks(teacher.model, ["layer3.3"])
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    data = tiny.subset(range(32))
    cfg = {"iters": 4, "batch_size": 16, "checkpoint_every": 0}
    runs = [recover(student, teacher.model, data, RecoveryConfig(**cfg, mixed_precision=mp), progress=False)
            for mp in (True, False)]
    assert runs[0][1].losses == runs[1][1].losses  # mixed precision names a CUDA feature: the CPU loop is one
    out = runs[0][0]
    assert all(p.is_contiguous() for p in out.parameters())  # handed back in the layout callers expect
    for k, v in teacher.model.state_dict().items():  # the caller's teacher keeps its layout and values
        assert v.is_contiguous() and torch.equal(v, before[k])
    monkeypatch.setattr(recovery_module, "fast_path", lambda device, enabled: FastPath(device))  # contiguous loop
    plain = recover(student, teacher.model, data, RecoveryConfig(**cfg), progress=False)
    for (step, a), (_, b) in zip(runs[0][1].losses, plain[1].losses, strict=True):
        assert a == pytest.approx(b, rel=1e-4), step  # only the order of the sums differs
    for (k, a), b in zip(out.state_dict().items(), plain[0].state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5), k


@cuda
def test_recovery_on_cuda_runs_under_autocast_and_channels_last(teacher, tiny):
    fast = fast_path("cuda")
    assert fast.enabled and fast.dtype in (torch.bfloat16, torch.float16)
    assert torch.backends.cudnn.benchmark
    student = drop_blocks(teacher.model, ["layer3.3"])
    prepared = fast.prepare(drop_blocks(teacher.model, ["layer3.3"])).get_submodule("layer1.0.conv1").weight
    assert prepared.is_cuda and prepared.is_contiguous(memory_format=torch.channels_last)
    out, log = recover(student, teacher.model, tiny.subset(range(64)), RecoveryConfig(iters=30, batch_size=32),
                       device="cuda", progress=False)
    conv = out.get_submodule("layer1.0.conv1").weight
    assert conv.is_cuda and conv.is_contiguous()  # trained channels-last, handed back contiguous
    assert conv.dtype == torch.float32  # autocast casts per op; the weights stay fp32
    assert log.losses[-1][1] < log.losses[0][1]


@cuda
def test_mixed_precision_on_cuda_stays_close_to_full_precision(teacher, tiny):
    student = drop_blocks(teacher.model, ["layer3.3"])
    data = tiny.subset(range(64))
    final = [recover(student, teacher.model, data, RecoveryConfig(iters=30, batch_size=32, mixed_precision=mp,
                                                                  augment=False), device="cuda",
                     progress=False)[1].losses[-1][1] for mp in (True, False)]
    assert abs(final[0] - final[1]) <= 0.2 * final[1]


@cuda
def test_swd_trains_on_cuda_with_the_penalty_outside_the_loss_scale(tiny):
    from practise_plugin.swd.config import SWDConfig
    from practise_plugin.swd.regularizer import SWDRegularizer
    from practise_plugin.swd.train import make_schedule, train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    cfg = SWDConfig(mode="unstructured", target=0.5, epochs=3, batch_size=32, lr=0.05, checkpoint_every=0)
    schedule = make_schedule(len(tiny), cfg)
    reg = SWDRegularizer(model.cuda(), cfg, schedule.total_steps)
    history = train(model, tiny, cfg, schedule, device="cuda", regularizer=reg, progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["outside_norm"] < history[0]["outside_norm"]
