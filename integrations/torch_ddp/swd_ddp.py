"""SWD inside your own DistributedDataParallel training loop: three lines added to a plain DDP script.

    torchrun --standalone --nproc_per_node=2 integrations/torch_ddp/swd_ddp.py --epochs 3 --out swd.pt
    python integrations/torch_ddp/swd_ddp.py --epochs 3          # the same script on one process

The loop is an ordinary DDP one (DistributedSampler with a seed, DDP-wrapped model, SGD). The SWD lines:
build the regulariser on the *unwrapped* model (its parameters are the ones DDP keeps equal on every
rank, so every rank computes the same masks), call ``apply_to_grad()`` after ``backward()`` (DDP has
averaged the task gradients by then; the penalty gradient is added once, on each rank identically) and
``step()`` after each batch; at the end one hard prune. Rank 0 saves the pruned model.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from practise_plugin.models import builtin
from practise_plugin.swd.config import SWDConfig
from practise_plugin.swd.prune import hard_prune, removed_norm_fraction
from practise_plugin.swd.regularizer import SWDRegularizer


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, 10))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=1000, help="Fashion-MNIST training images (shipped with the package)")
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--target", type=float, default=0.9, help="fraction of conv/linear weights SWD removes")
    p.add_argument("--out", default=None, help="where rank 0 saves the pruned model's state_dict")
    args = p.parse_args()

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # "nccl" on GPUs
    rank = dist.get_rank() if distributed else 0

    data = builtin.tiny_set(args.images, seed=0)
    dataset = TensorDataset(data.images, data.labels)
    sampler = DistributedSampler(dataset, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None, drop_last=True)

    model = small_net()
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    cfg = SWDConfig(mode="unstructured", target=args.target, mu=5e-4, a_min=0.1, a_max=1e4, lr=0.05, momentum=0.9)
    reg = SWDRegularizer(model, cfg, total_steps=args.epochs * len(loader))  # SWD line 1: the unwrapped model
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.mu)

    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            reg.apply_to_grad()  # SWD line 2: the penalty's gradient, after DDP's all-reduce
            opt.step()
            reg.step()  # SWD line 3
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, a(t) {reg.a():.3g}, weight norm outside the mask "
                  f"{removed_norm_fraction(reg.params, reg.masks()):.2%}", flush=True)

    hard_prune(model, reg.criterion, reg.decision(), data.images[:1])
    kept = sum(int(m.sum()) for m in reg.masks()) / sum(m.numel() for m in reg.masks())
    model.eval()
    with torch.no_grad():
        test = builtin.test_set()
        top1 = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in test.batches(500)) / len(test)
    if rank == 0:
        print(f"pruned: {kept:.1%} of the weights kept, top-1 {top1:.2%} on {len(test)} test images")
        if args.out:
            torch.save(model.state_dict(), args.out)
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
