"""The SGD loop behind SWD, its fine-tuning and the prune+fine-tune baseline: resumable and deterministic.

Why it exists: SWD runs for many epochs, so a run must survive an interruption and resume to exactly
the weights an uninterrupted run reaches; the baseline must train with the *same* recipe so that
comparisons are fair. One loop serves all three: the data order is a pure function of (seed, epoch),
the learning rate a pure function of the step, and a checkpoint holds everything else (weights,
momentum buffers, the regulariser's step, RNG state, the epoch's running sums).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core import distributed
from ..core.accel import fast_path
from ..core.errors import DataError, TrainingError
from ..core.inputs import ImageSet
from ..core.resume import TrainState
from .config import SWDConfig
from .prune import removed_norm_fraction
from .regularizer import SWDRegularizer


@dataclass(frozen=True)
class Schedule:
    """How many steps, over which batches, at which learning rate."""

    total_steps: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    milestones: tuple[float, ...]
    gamma: float
    warmup_steps: int = 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup_steps``, then step decay: lr * gamma ** (milestones already passed)."""
        passed = sum(step >= m * self.total_steps for m in self.milestones)
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return self.lr * warm * self.gamma ** passed


def make_schedule(num_images: int, config: SWDConfig, epochs: int | None = None) -> Schedule:
    """The schedule for ``epochs`` passes (default ``config.epochs``, or exactly ``config.steps`` batches)."""
    batch = min(config.batch_size, num_images)
    per_epoch = num_images // batch  # the last partial batch is dropped: BatchNorm dislikes tiny batches
    if epochs is None and config.steps is not None:
        total = config.steps
    else:
        total = (config.epochs if epochs is None else epochs) * per_epoch
    warmup = min(total, round(config.warmup_epochs * per_epoch))
    return Schedule(total, per_epoch, batch, config.lr, tuple(config.lr_milestones), config.lr_gamma, warmup)


def labelled(data: ImageSet | None, what: str) -> ImageSet:
    """``data`` if every image has a label; SWD and fine-tuning minimise cross-entropy, so they need them."""
    if data is None or not data.has_labels:
        raise DataError(
            f"{what} trains with cross-entropy and needs labelled images: pass an ImageFolder layout "
            "(one sub-folder per class) or an ImageSet with labels"
        )
    if len(data) < 2:
        raise DataError(f"{what} needs at least 2 labelled images (BatchNorm cannot train on one), got {len(data)}")
    return data


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def train(
    model: nn.Module,
    data: ImageSet,
    config: SWDConfig,
    schedule: Schedule,
    *,
    device: str = "cpu",
    work_dir: Path | None = None,
    progress: bool = True,
    desc: str = "swd",
    regularizer: SWDRegularizer | None = None,
    fixed_masks: list[tuple[nn.Parameter, torch.Tensor]] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with SGD (momentum, weight decay ``mu``) and cross-entropy.

    ``regularizer`` adds SWD's gradient after each backward; ``fixed_masks`` keeps pruned weights at
    zero after each step (fine-tuning an unstructured-pruned model). With ``work_dir``, the state is
    saved there every ``config.checkpoint_every`` steps and at the end (a finished stage is not trained
    again), and a rerun with the same options, data and model resumes from it.
    Under ``torchrun`` the model trains in DistributedDataParallel: each rank takes its part of every
    (global, ``batch_size``) batch of the same seeded order, and rank 0 writes the checkpoints; ``train_acc``
    is then that of rank 0's part. On CUDA with ``config.mixed_precision``, autocast and channels-last; on a CPU
    channels-last (:func:`~practise_plugin.core.accel.fast_path`); ``model`` is handed back in its contiguous layout.
    Returns one dict per epoch: mean task loss and SWD penalty, train accuracy, a(t) and the criterion's
    kept fraction at the epoch's last step (NaN without a regulariser), and the learning rate.
    """
    mine = distributed.local_part(torch.arange(schedule.batch_size))  # this rank's part of each global batch
    fast = fast_path(device, config.mixed_precision)
    model = fast.prepare(model).train()
    net = distributed.wrap(model)  # gradients averaged over the ranks; the penalty is added after, on each
    images = fast.host(data.images)
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=config.momentum, weight_decay=config.mu)
    state = TrainState(work_dir, desc.replace(" ", "_"), config=config.to_dict(), schedule=schedule.__dict__,
                       model=model, images=data.images, labels=data.labels)
    torch.manual_seed(config.seed)
    start, history, run = _resume(state, model, opt, regularizer, device)
    order, order_epoch = None, -1
    bar = tqdm(total=schedule.total_steps, initial=start, desc=desc, unit="step", leave=False,
               disable=not progress or not distributed.is_main())
    try:
        with distributed.collective(desc):  # DDP talks to the other ranks in forward and backward
            for step in range(start, schedule.total_steps):
                epoch, i = divmod(step, schedule.steps_per_epoch)
                if epoch != order_epoch:
                    order, order_epoch = _epoch_order(len(data), config.seed, epoch), epoch
                idx = order[i * schedule.batch_size : (i + 1) * schedule.batch_size][mine]
                x, y = fast.batch(images[idx]), data.labels[idx].to(device)
                lr = schedule.lr_at(step)
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad(set_to_none=True)
                with fast.autocast():
                    logits = net(x).float()
                    loss = F.cross_entropy(logits, y)
                value = distributed.mean(loss).item()  # the same on every rank: all stop together on a NaN
                if not math.isfinite(value):
                    where = f"{state.path} (resumable) is kept" if state.path else "no checkpoint was written"
                    raise TrainingError(
                        f"{desc}: loss is {value} at step {step + 1}/{schedule.total_steps} (epoch {epoch + 1}); the "
                        f"images or weights hold non-finite values, or training diverged. Check the data, lower lr "
                        f"(now {lr:g}) or a_max; {where}"
                    )
                fast.backward(loss, opt)
                if regularizer is not None:  # every rank holds the same weights, so the same masks and penalty
                    regularizer.apply_to_grad()
                    with torch.no_grad():
                        run["penalty"] += regularizer.penalty().item()
                fast.step(opt)
                if fixed_masks is not None:
                    with torch.no_grad():
                        for p, m in fixed_masks:
                            p.mul_(m)
                run["loss"] += value
                run["correct"] += int((logits.argmax(1) == y).sum())
                run["seen"] += len(y)
                run["steps"] += 1
                if regularizer is not None:
                    run["a"], run["kept"] = regularizer.a(), regularizer.decision().kept_fraction
                    regularizer.step()
                bar.update(1)
                if step % 10 == 0 or step + 1 == schedule.total_steps:
                    shown = {"loss": f"{value:.3f}"}
                    if regularizer is not None:
                        shown.update(a=f"{run['a']:.3g}", kept=f"{run['kept']:.4f}")
                    bar.set_postfix(shown, refresh=False)
                if i + 1 == schedule.steps_per_epoch or step + 1 == schedule.total_steps:
                    history.append({
                        "epoch": epoch + 1, "loss": run["loss"] / run["steps"], "penalty": run["penalty"] / run["steps"],
                        "train_acc": run["correct"] / run["seen"], "a": run["a"], "kept_fraction": run["kept"], "lr": lr,
                        # how much of the decayed weights' norm the mask would still cut now: SWD drives it to ~0
                        "outside_norm": (removed_norm_fraction(regularizer.params, regularizer.masks())
                                         if regularizer is not None else float("nan")),
                    })
                    run = _fresh_running()
                done = step + 1
                if done == schedule.total_steps or (config.checkpoint_every and done % config.checkpoint_every == 0):
                    state.save(done, {
                        "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history, "running": run,
                        "regularizer": None if regularizer is None else regularizer.state_dict(),
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    })
    finally:
        bar.close()
        fast.release(model)  # in place, also when training stops: handed back in the contiguous layout
    model.eval()
    return history


def _fresh_running() -> dict[str, float]:
    return {"loss": 0.0, "penalty": 0.0, "correct": 0, "seen": 0, "steps": 0, "a": float("nan"), "kept": float("nan")}


def _resume(state: TrainState, model: nn.Module, opt: torch.optim.Optimizer, regularizer: SWDRegularizer | None,
            device: str) -> tuple[int, list, dict[str, Any]]:
    """Load a matching checkpoint into model/optimizer/regulariser: (step, history, running sums)."""
    saved = state.load(device)
    if saved is None:
        return 0, [], _fresh_running()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if regularizer is not None:
        regularizer.load_state_dict(saved["regularizer"])
    torch.set_rng_state(saved["rng"].cpu())
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda_rng"]])
    return saved["step"], list(saved["history"]), dict(saved["running"])
