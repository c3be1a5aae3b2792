"""The SGD loop behind SWD, its fine-tuning and the prune+fine-tune baseline: resumable and deterministic.

Why it exists: SWD runs for many epochs, so a run must survive an interruption and resume to exactly
the weights an uninterrupted run reaches; the baseline must train with the *same* recipe so that
comparisons are fair. One loop serves all three: the data order is a pure function of (seed, epoch),
the learning rate a pure function of the step, and a checkpoint holds everything else (weights,
momentum buffers, the regulariser's step, RNG state, the epoch's running sums).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import ImageSet
from ..errors import DataError, TrainingError
from ..io import atomic_torch_save
from .regularizer import SWDRegularizer

if TYPE_CHECKING:
    from ..strategies.swd import SWDConfig

FORMAT = "practise-swd-train/1"


@dataclass(frozen=True)
class Schedule:
    """How many steps, over which batches, at which learning rate."""

    total_steps: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    milestones: tuple[float, ...]
    gamma: float

    def lr_at(self, step: int) -> float:
        """Step decay: lr * gamma ** (number of milestones, as fractions of the run, already passed)."""
        passed = sum(step >= m * self.total_steps for m in self.milestones)
        return self.lr * self.gamma ** passed


def make_schedule(num_images: int, config: SWDConfig, epochs: int | None = None) -> Schedule:
    """The schedule for ``epochs`` passes (default ``config.epochs``, or exactly ``config.steps`` batches)."""
    batch = min(config.batch_size, num_images)
    per_epoch = num_images // batch  # the last partial batch is dropped: BatchNorm dislikes tiny batches
    if epochs is None and config.steps is not None:
        total = config.steps
    else:
        total = (config.epochs if epochs is None else epochs) * per_epoch
    return Schedule(total, per_epoch, batch, config.lr, tuple(config.lr_milestones), config.lr_gamma)


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


def _fingerprint(model: nn.Module, data: ImageSet, config: SWDConfig, schedule: Schedule, desc: str) -> str:
    """What a checkpoint must have been written with to be resumed: same options, data and model shape."""
    blob = {
        "desc": desc, "config": config.to_dict(), "schedule": schedule.__dict__, "n": len(data),
        "images": float(data.images.double().sum()), "labels": int(data.labels.sum()),
        "shapes": [[k, list(v.shape)] for k, v in model.state_dict().items()],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()


def train(
    model: nn.Module,
    data: ImageSet,
    config: SWDConfig,
    schedule: Schedule,
    *,
    device: str = "cpu",
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "swd",
    regularizer: SWDRegularizer | None = None,
    fixed_masks: list[tuple[nn.Parameter, torch.Tensor]] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with SGD (momentum, weight decay ``mu``) and cross-entropy.

    ``regularizer`` adds SWD's gradient after each backward; ``fixed_masks`` keeps pruned weights at
    zero after each step (fine-tuning an unstructured-pruned model). With ``checkpoint``, the state is
    saved every ``config.checkpoint_every`` steps and at the end, and a matching checkpoint is resumed.
    Returns one dict per epoch: mean task loss and SWD penalty, train accuracy, a(t) and the criterion's
    kept fraction at the epoch's last step (NaN without a regulariser), and the learning rate.
    """
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=config.momentum, weight_decay=config.mu)
    fingerprint = _fingerprint(model, data, config, schedule, desc)
    torch.manual_seed(config.seed)
    state = _resume(checkpoint, fingerprint, model, opt, regularizer, device)
    start, history, run = state["step"], state["history"], state["running"]
    order, order_epoch = None, -1
    bar = tqdm(total=schedule.total_steps, initial=start, desc=desc, disable=not progress, unit="step", leave=False)
    try:
        for step in range(start, schedule.total_steps):
            epoch, i = divmod(step, schedule.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = _epoch_order(len(data), config.seed, epoch), epoch
            idx = order[i * schedule.batch_size : (i + 1) * schedule.batch_size]
            x, y = data.images[idx].to(device), data.labels[idx].to(device)
            lr = schedule.lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            value = loss.item()
            if not math.isfinite(value):
                where = f"{checkpoint} (resumable) is kept" if checkpoint else "no checkpoint was written"
                raise TrainingError(
                    f"{desc}: loss is {value} at step {step + 1}/{schedule.total_steps} (epoch {epoch + 1}); the "
                    f"images or weights hold non-finite values, or training diverged. Check the data, lower lr "
                    f"(now {lr:g}) or a_max; {where}"
                )
            loss.backward()
            if regularizer is not None:
                regularizer.apply_to_grad()
                with torch.no_grad():
                    run["penalty"] += regularizer.penalty().item()
            opt.step()
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
                })
                run = _fresh_running()
            done = step + 1
            if checkpoint is not None and (
                done == schedule.total_steps or (config.checkpoint_every and done % config.checkpoint_every == 0)
            ):
                _save(checkpoint, fingerprint, done, model, opt, regularizer, history, run)
    finally:
        bar.close()
    model.eval()
    return history


def _fresh_running() -> dict[str, float]:
    return {"loss": 0.0, "penalty": 0.0, "correct": 0, "seen": 0, "steps": 0, "a": float("nan"), "kept": float("nan")}


def _save(path: Path, fingerprint: str, step: int, model: nn.Module, opt: torch.optim.Optimizer,
          regularizer: SWDRegularizer | None, history: list, running: dict) -> None:
    atomic_torch_save({
        "format": FORMAT, "fingerprint": fingerprint, "step": step, "model": model.state_dict(),
        "optimizer": opt.state_dict(), "regularizer": None if regularizer is None else regularizer.state_dict(),
        "history": history, "running": running, "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }, path)


def _resume(path: Path | None, fingerprint: str, model: nn.Module, opt: torch.optim.Optimizer,
            regularizer: SWDRegularizer | None, device: str) -> dict[str, Any]:
    """Load a matching checkpoint into model/optimizer/regulariser; a fresh start when there is none."""
    fresh = {"step": 0, "history": [], "running": _fresh_running()}
    if path is None or not Path(path).exists():
        return fresh
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
        raise TrainingError(f"cannot read the training checkpoint {path} ({e.__class__.__name__}); delete it to restart") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainingError(f"{path} is not an SWD training checkpoint; delete it or use another work_dir")
    if ckpt["fingerprint"] != fingerprint:
        raise TrainingError(
            f"the checkpoint {path} was written with other options, data or model; delete it to restart, "
            "or use another work_dir"
        )
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if regularizer is not None:
        regularizer.load_state_dict(ckpt["regularizer"])
    torch.set_rng_state(ckpt["rng"].cpu())
    if ckpt["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["cuda_rng"]])
    return {"step": int(ckpt["step"]), "history": list(ckpt["history"]), "running": dict(ckpt["running"])}
