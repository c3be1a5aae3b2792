"""Accuracy and teacher agreement of a (compressed) classifier on an image set.

Why it exists: users with labels want top-1; users without labels still deserve a number, and the
fraction of images on which student and teacher agree (top-1) needs no labels at all.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.inputs import ImageSet


@torch.no_grad()
def predictions(model: nn.Module, data: ImageSet, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Top-1 class index per image (eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    out = [model(data.images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def top1(model: nn.Module, data: ImageSet, batch_size: int = 256, device: str = "cpu") -> float | None:
    """Top-1 accuracy, or None when the images carry no labels."""
    if not data.has_labels:
        return None
    return float((predictions(model, data, batch_size, device) == data.labels).float().mean())


def agreement(student: nn.Module, teacher: nn.Module, data: ImageSet, batch_size: int = 256, device: str = "cpu") -> float:
    """Fraction of images where student and teacher predict the same class."""
    return float((predictions(student, data, batch_size, device) == predictions(teacher, data, batch_size, device)).float().mean())
