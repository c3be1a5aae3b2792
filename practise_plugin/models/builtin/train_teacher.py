"""Train the built-in Fashion-MNIST teacher and write the files the package ships.

Why it exists: the default run, the tests and the benchmarks need a real trained network on real data,
and no weights can be downloaded here. This script is how the shipped checkpoint was made; rerun it to
rebuild it (``python -m practise_plugin.models.builtin.train_teacher --epochs 30``). It needs the Debian package
``dataset-fashion-mnist`` (the full 60k/10k dataset).

Outputs (written atomically into ``--out``, by default the package's ``builtin`` folder):
- ``fmnist_resnet34q.pt``: ``{"state_dict": fp16 tensors, "meta": {...accuracy, recipe...}}``
- ``fmnist_samples.npz``: 1000 training images (the pool tiny sets are drawn from) and 2000 test images,
  uint8, with labels, so the default run works without the dataset package.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...core.files import atomic_save_npz, atomic_torch_save
from .fmnist import DEBIAN_DATASET_DIR, FMNIST_MEAN, FMNIST_STD, fmnist_resnet34q, load_fmnist_split

HERE = Path(__file__).resolve().parent


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    return (x - FMNIST_MEAN) / FMNIST_STD


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel shifts and horizontal flips (the usual recipe for 28x28 clothing images)."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=float(-FMNIST_MEAN / FMNIST_STD))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    rows = (torch.arange(28).view(1, 28) + dy.view(n, 1)).view(n, 1, 28, 1).expand(n, 1, 28, 32)
    out = padded.gather(2, rows)
    cols = (torch.arange(28).view(1, 28) + dx.view(n, 1)).view(n, 1, 1, 28).expand(n, 1, 28, 28)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, bs: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += (model(x[i : i + bs].to(device)).argmax(1).cpu() == y[i : i + bs]).sum().item()
    return correct / len(x)


def train(
    epochs: int, batch_size: int, lr: float, seed: int, device: str, data_dir: Path = DEBIAN_DATASET_DIR
) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_fmnist_split("train", data_dir)
    xte, yte = load_fmnist_split("test", data_dir)
    xtr_t, ytr_t = _to_tensor(xtr), torch.from_numpy(ytr)
    xte_t, yte_t = _to_tensor(xte), torch.from_numpy(yte)
    model = fmnist_resnet34q().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = len(xtr_t) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr_t), generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            xb = _augment(xtr_t[idx], gen).to(device)
            yb = ytr_t[idx].to(device)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte_t, yte_t, device)
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f} test top-1 {acc:.4f} ({time.time() - t0:.0f} s)")
    model = model.cpu().half().float()  # the accuracy we report is that of the shipped fp16 weights
    meta = {
        "arch": "fmnist_resnet34q",
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 60k train / 10k test",
        "recipe": f"SGD nesterov lr {lr} one-cycle, wd 5e-4, batch {batch_size}, {epochs} epochs, "
        "2-px shift + flip, label smoothing 0.1, seed " + str(seed),
        "test_top1": evaluate(model, xte_t, yte_t, "cpu"),
        "train_seconds": round(time.time() - t0, 1),
        "device": device,
        "torch": str(torch.__version__),
    }
    return model, meta


def write_samples(out: Path, seed: int, data_dir: Path = DEBIAN_DATASET_DIR) -> None:
    """Ship 1000 train images (tiny-set pool) and 2000 test images, drawn at random with ``seed``."""
    rng = np.random.default_rng(seed)
    xtr, ytr = load_fmnist_split("train", data_dir)
    xte, yte = load_fmnist_split("test", data_dir)
    itr = np.sort(rng.choice(len(xtr), 1000, replace=False))
    ite = np.sort(rng.choice(len(xte), 2000, replace=False))
    atomic_save_npz(
        out / "fmnist_samples.npz",
        train_images=xtr[itr], train_labels=ytr[itr], train_index=itr,
        test_images=xte[ite], test_labels=yte[ite], test_index=ite,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--data-dir", type=Path, default=DEBIAN_DATASET_DIR, help="folder with the IDX .gz files")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    model, meta = train(a.epochs, a.batch_size, a.lr, a.seed, a.device, a.data_dir)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_torch_save({"state_dict": state, "meta": meta}, a.out / "fmnist_resnet34q.pt")
    write_samples(a.out, a.seed, a.data_dir)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
