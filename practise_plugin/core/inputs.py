"""What every model is fed: how it wants its input (:class:`DataConfig`) and a tiny set of images (:class:`ImageSet`).

Why it exists: every strategy, runtime and exporter consumes the same two values, so they live at the
bottom of the package. An :class:`ImageSet` holds at most a few thousand images, already preprocessed for
the model: tiny sets fit in memory, and holding tensors keeps training loops simple and deterministic.
Loading them from folders and datasets is :mod:`practise_plugin.data`'s job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DataError


@dataclass(frozen=True)
class DataConfig:
    """How a model wants its input: ``input_size`` is (C, H, W); images are resized so the shorter side
    is ``H / crop_pct``, centre-cropped to H x W, scaled to [0, 1] and normalised by mean/std."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
            "interpolation": self.interpolation, "crop_pct": self.crop_pct,
        }

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return cls(tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), d.get("interpolation", "bilinear"),
                   float(d.get("crop_pct", 1.0)))

    def with_input_size(self, input_size: tuple[int, int, int]) -> DataConfig:
        return DataConfig(tuple(input_size), self.mean, self.std, self.interpolation, self.crop_pct)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (N, C, H, W) to the model's input space."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def check_count(name: str, n: int | None) -> None:
    """Refuse a set size below 1 (None means "all" or "the default"); callers check before a model loads or
    an output folder is made, so a run that cannot make sense does no work and leaves nothing behind."""
    if n is not None and n < 1:
        raise DataError(f"{name} (--{name.replace('_', '-')}) must be at least 1, got {n}")


def sample_tiny_set(labels: np.ndarray | torch.Tensor | None, n: int, seed: int = 0, num_items: int | None = None) -> np.ndarray:
    """Indices of a tiny set of ``n`` items, drawn as in the PRACTISE paper.

    Fewer images than classes: drawn at random (class-imbalanced). Otherwise ``n // C`` per class, the
    remainder at random from what is left, so each class is represented. Without labels: random.
    """
    total = num_items if labels is None else len(labels)
    if total is None:
        raise ValueError("give labels or num_items")
    check_count("num_samples", n)
    if n > total:
        raise DataError(f"asked for {n} images but only {total} are available; lower --num-samples to at most {total}")
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(total, n, replace=False))
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    if len(classes) == 0 or n < len(classes):
        return np.sort(rng.choice(total, n, replace=False))
    per = n // len(classes)
    chosen: list[int] = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(pool, min(per, len(pool)), replace=False).tolist())
    rest = np.setdiff1d(np.arange(total), np.asarray(chosen))
    chosen.extend(rng.choice(rest, n - len(chosen), replace=False).tolist())
    return np.sort(np.asarray(chosen))


@dataclass
class ImageSet:
    """Preprocessed images (N, C, H, W float32) with optional integer labels (-1: unlabelled)."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    source: str = ""
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4:
            shape = tuple(self.images.shape) if hasattr(self.images, "shape") else type(self.images).__name__
            raise DataError(f"images must be a 4-D (N, C, H, W) tensor, got {shape}")
        if len(self.images) == 0:
            raise DataError(f"the image set from {self.source or 'memory'} is empty; give at least one image")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and bool((self.labels >= 0).all())

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.source, self.class_names)

    def sample(self, n: int | None, seed: int = 0) -> ImageSet:
        """A tiny set of ``n`` of these images (:func:`sample_tiny_set`); all of them when ``n`` is None or
        not smaller than the set."""
        if n is None or n >= len(self):
            return self
        labels = self.labels.numpy() if self.has_labels else None
        out = self.subset(sample_tiny_set(labels, n, seed, num_items=len(self)).tolist())
        out.source = f"{self.source or 'memory'} [{n} of {len(self)}]"
        return out

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One pass over the set; shuffled with its own generator so the global RNG is untouched."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield self.images[idx], (None if self.labels is None else self.labels[idx])

    def check_input_size(self, input_size: tuple[int, int, int]) -> None:
        """Fail early, with the fix, when images do not match what the model expects."""
        got = tuple(self.images.shape[1:])
        if got != tuple(input_size):
            raise DataError(
                f"images from {self.source or 'memory'} have shape {got} but the model expects {tuple(input_size)}; "
                "load them with the model's DataConfig (load_images(path, data_config)) so they are resized for it"
            )
