"""Data-free images: synthesised from the teacher's BatchNorm statistics (DeepInversion-style).

Why it exists: some users may not share a single real image (privacy, licensing). A trained network's
BN layers remember the mean and variance of their inputs over the training set; optimising random
images so those statistics match (plus a class-confidence term and smoothness priors) yields images the
teacher "recognises", enough for PRACTISE's label-free feature mimicking. Results are cached on disk,
keyed by the teacher's weights and the settings, because synthesis is the slowest data path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.errors import ModelError, TrainingError
from ..core.files import atomic_torch_save
from ..core.inputs import DataConfig, ImageSet


@dataclass
class SynthesisConfig:
    """DeepInversion recipe: Adam on pixels, BN-statistics loss + CE to random classes + TV/L2 priors."""

    num_images: int = 256
    iters: int = 200
    lr: float = 0.1
    batch_size: int = 64
    bn_weight: float = 1.0
    ce_weight: float = 1.0
    tv_weight: float = 1e-3
    l2_weight: float = 1e-5
    seed: int = 0


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


def _cache_key(model: nn.Module, cfg: SynthesisConfig, dc: DataConfig) -> str:
    h = hashlib.sha256(json.dumps([asdict(cfg), dc.to_dict()], sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])
        h.update(str(float(v.float().sum())).encode())
    return h.hexdigest()[:20]


def synthesize(
    teacher: nn.Module,
    data_config: DataConfig,
    config: SynthesisConfig | None = None,
    *,
    cache_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> ImageSet:
    """``config.num_images`` synthetic images for ``teacher`` (normalised like real inputs)."""
    cfg = config or SynthesisConfig()
    bns = _bn_layers(teacher)
    if not bns:
        raise ModelError(
            "data-free synthesis needs BatchNorm layers with running statistics in the teacher; "
            "give real or out-of-domain images instead (--data FOLDER)"
        )
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"synthetic-{_cache_key(teacher, cfg, data_config)}.pt"
        if cache.exists():
            blob = torch.load(cache, weights_only=True)
            return ImageSet(blob["images"], blob["labels"], f"synthetic (cached {cache.name})")
    teacher = teacher.eval().to(device)
    grad_flags = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(mod, args, out):
        x = args[0]
        dims = [0, 2, 3] if x.ndim == 4 else [0]
        stats.append((x.mean(dims), x.var(dims, unbiased=False)))

    handles = [bn.register_forward_hook(hook) for bn in bns]
    gen = torch.Generator().manual_seed(cfg.seed)
    c, h, w = data_config.input_size
    mean = torch.tensor(data_config.mean).view(1, -1, 1, 1)
    std = torch.tensor(data_config.std).view(1, -1, 1, 1)
    lo, hi = ((0 - mean) / std).to(device), ((1 - mean) / std).to(device)
    images, labels = [], []
    n_batches = -(-cfg.num_images // cfg.batch_size)
    bar = tqdm(total=n_batches * cfg.iters, desc="synthesising images", unit="it", disable=not progress, leave=False)
    try:
        for b in range(n_batches):
            n = min(cfg.batch_size, cfg.num_images - b * cfg.batch_size)
            x = torch.randn(n, c, h, w, generator=gen).to(device).requires_grad_(True)
            with torch.no_grad():
                num_classes = teacher(x[:1]).shape[1]
            stats.clear()
            y = torch.randint(0, num_classes, (n,), generator=gen).to(device)
            opt = torch.optim.Adam([x], lr=cfg.lr)
            for _ in range(cfg.iters):
                stats.clear()
                flip = torch.rand(1, generator=gen).item() < 0.5
                logits = teacher(x.flip(3) if flip else x)
                bn_loss = sum(
                    torch.norm(m - bn.running_mean, 2) + torch.norm(v - bn.running_var, 2)
                    for (m, v), bn in zip(stats, bns)
                )
                tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
                loss = cfg.bn_weight * bn_loss + cfg.ce_weight * F.cross_entropy(logits, y) + cfg.tv_weight * tv * h \
                    + cfg.l2_weight * x.pow(2).sum() / n
                if not torch.isfinite(loss):
                    raise TrainingError("image synthesis diverged (NaN loss); lower SynthesisConfig.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.copy_(torch.max(torch.min(x, hi), lo))
                bar.update(1)
            images.append(x.detach().cpu())
            labels.append(y.cpu())
    finally:
        for hd in handles:
            hd.remove()
        for p, flag in zip(teacher.parameters(), grad_flags):
            p.requires_grad_(flag)
        bar.close()
    out = ImageSet(torch.cat(images), torch.cat(labels), "synthetic (BN inversion)")
    if cache is not None:
        atomic_torch_save({"images": out.images, "labels": out.labels}, cache)
    return out
