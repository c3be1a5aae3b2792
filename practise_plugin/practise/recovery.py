"""Recover the student after block dropping, from a tiny set: feature mimicking and its baselines.

Why it exists: PRACTISE recovers the whole student by making its pre-pooling features match the frozen
teacher's (MSE, no labels, BN in train mode), which works with 50-1000 images, out-of-domain images or
synthetic ones. The paper's baselines live here too so they are compared on identical terms:
``"bp"`` (cross-entropy on labels) and ``"kd"`` (logit distillation). Long runs show a progress bar,
checkpoint every N steps (atomically) and resume after an interruption; a NaN loss stops with advice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core import distributed
from ..core.accel import fast_path
from ..core.errors import ConfigError, DataError, TrainingError
from ..core.inputs import ImageSet
from ..core.resume import TrainState
from ..core.torch_utils import copy_model
from ..graph.features import FeaturePoint, collect_features, feature_fn, find_feature_point

RECOVERY_METHODS = ("mimic", "bp", "kd")


@dataclass
class RecoveryConfig:
    """Training recipe; defaults are the paper's (SGD 0.02, momentum 0.9, wd 1e-4, batch 64, x0.1 at 40/80%).

    ``bn``: ``"train"`` (the paper: BatchNorm normalises with batch statistics and updates its running ones)
    or ``"frozen"`` (BatchNorm stays in eval mode with the teacher's statistics). Freeze it when the tiny set
    is out-of-domain or synthetic: its statistics are not the deployment data's, and in train mode a few
    dozen running-average updates replace the teacher's. ``lr`` is the paper's for ResNets; on
    EfficientNet-Lite0 it diverges (feature MSE 0.18 -> 0.55 in 8 steps, measured), 0.002 does not.
    ``batch_size`` is the global batch: under ``torchrun`` each of N ranks takes batch_size / N of it.
    ``mixed_precision``: on CUDA, autocast (bf16, else fp16 with a loss scaler) and channels-last.
    """

    method: str = "mimic"
    iters: int = 2000
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    augment: bool = True
    kd_temperature: float = 4.0
    checkpoint_every: int = 200
    seed: int = 0
    bn: str = "train"
    mixed_precision: bool = True


@dataclass
class RecoveryLog:
    """Loss curve (every ``log_every`` steps) and whether the run resumed from a checkpoint."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 1/8 of the size (reflect padding)."""
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w].contiguous()


class _Features(nn.Module):
    """The student's features as a module's output: what DistributedDataParallel wraps for mimicking."""

    def __init__(self, student: nn.Module, features: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.student, self._features = student, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)


def recover(
    student: nn.Module,
    teacher: nn.Module,
    data: ImageSet,
    config: RecoveryConfig | None = None,
    *,
    point: FeaturePoint | None = None,
    work_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, RecoveryLog]:
    """Train a copy of ``student`` against the frozen ``teacher``; returns (recovered model, log).

    ``on_step(step, loss)`` is called after every step (logging, early stopping by raising).
    Under ``torchrun`` the student trains in DistributedDataParallel: every rank draws the same global
    batch (same seed) and trains on its part, so the run follows the one-process run; rank 0 checkpoints.
    With ``work_dir``, a checkpoint ``recovery-<fingerprint>.pt`` is written every ``checkpoint_every``
    steps (0: never) and a rerun with the same inputs resumes from it; it is removed when training completes.
    """
    cfg = config or RecoveryConfig()
    if cfg.method not in RECOVERY_METHODS:
        raise ConfigError(f"unknown recovery method {cfg.method!r}; choose one of {', '.join(RECOVERY_METHODS)}")
    if cfg.iters < 0 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.checkpoint_every < 0:
        raise ConfigError("recovery needs iters >= 0, batch_size >= 1, lr > 0 and checkpoint_every >= 0")
    if cfg.bn not in ("train", "frozen"):
        raise ConfigError(f"recovery bn must be 'train' (the paper) or 'frozen' (out-of-domain data), got {cfg.bn!r}")
    if cfg.method == "bp" and not data.has_labels:
        raise DataError("recovery by cross-entropy ('bp') needs labelled images; use 'mimic' for unlabelled ones")
    bs = min(cfg.batch_size, len(data))
    mine = distributed.local_part(torch.arange(bs))  # this rank's positions in every global batch (checked first)
    t0 = time.perf_counter()
    fast = fast_path(device, cfg.mixed_precision)
    student = fast.prepare(copy_model(student))
    teacher = fast.prepare(copy_model(teacher).eval())  # a copy: the caller's teacher keeps its device and layout
    for p in student.parameters():
        p.requires_grad_(True)
    images = fast.host(data.images)
    labels = data.labels
    point = point or find_feature_point(teacher, images[:1].to(device))
    s_feat, t_feat = feature_fn(student, point), feature_fn(teacher, point)
    cached = None if cfg.augment or cfg.method != "mimic" else collect_features(teacher, point, images, device=device)
    # what the loss is computed on, as one module: DDP averages its gradients (mimicking leaves the head unused)
    net = distributed.wrap(_Features(student, s_feat) if cfg.method == "mimic" else student,
                           find_unused=cfg.method == "mimic")

    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.4 * cfg.iters), int(0.8 * cfg.iters)], 0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = RecoveryLog()
    start = 0
    state = TrainState(work_dir, "recovery", config=asdict(cfg), student=student, images=data.images)
    saved = state.load(device)
    if saved is not None:
        student.load_state_dict(saved["student"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        gen.set_state(saved["gen"])
        log.losses = [tuple(x) for x in saved["losses"]]
        start = log.resumed_from = saved["step"]

    n = len(images)
    student.train()
    if cfg.bn == "frozen":
        for m in student.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    bar = tqdm(range(start, cfg.iters), desc=f"recovery ({cfg.method})", unit="it", leave=False,
               disable=not progress or not distributed.is_main(), initial=start, total=cfg.iters)
    with distributed.collective("recovery"):  # DDP talks to the other ranks in forward and backward
        for step in bar:
            idx = torch.randint(0, n, (bs,), generator=gen)
            x = images[idx]
            if cfg.augment:
                x = augment_batch(x, gen)
            idx, x = idx[mine], fast.batch(x[mine])
            with fast.autocast():
                if cfg.method == "mimic":
                    with torch.no_grad():  # not inference_mode: the loss's backward keeps the target
                        target = cached[idx].to(device) if cached is not None else t_feat(x)
                    loss = F.mse_loss(net(x).float(), target.float())
                elif cfg.method == "bp":
                    loss = F.cross_entropy(net(x).float(), labels[idx].to(device))
                else:
                    with torch.no_grad():
                        t_logits = teacher(x).float()
                    temp = cfg.kd_temperature
                    loss = F.kl_div(F.log_softmax(net(x).float() / temp, 1), F.softmax(t_logits / temp, 1),
                                    reduction="batchmean") * temp**2
            value = distributed.mean(loss)  # every rank sees the same value: all stop together on a NaN
            if not torch.isfinite(value):
                raise TrainingError(
                    f"recovery loss became {value.item()} at step {step}; lower the learning rate (now {cfg.lr}) "
                    "or check the images for NaN/inf values"
                )
            opt.zero_grad(set_to_none=True)
            fast.backward(loss, opt)
            fast.step(opt)
            sched.step()
            if step % 10 == 0 or step == cfg.iters - 1:
                log.losses.append((step, value.item()))
                bar.set_postfix(loss=f"{value.item():.4g}")
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iters:
                state.save(step + 1, {"student": student.state_dict(), "opt": opt.state_dict(),
                                      "sched": sched.state_dict(), "gen": gen.get_state(), "losses": log.losses})
            if on_step is not None:
                on_step(step, value.item())
    state.clear()
    fast.release(student).eval()
    log.seconds = time.perf_counter() - t0
    return student, log
