"""Images in, normalised tensors out: folders, tiny-set sampling, standard dataset layouts.

Why it exists: every strategy consumes the same thing, an :class:`ImageSet` of at most a few thousand
images already preprocessed for the model (size, channels, mean/std from its :class:`DataConfig`).
Tiny sets fit in memory, so holding tensors keeps training loops simple and deterministic.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (N, C, H, W) to the model's input space."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class ImageSet:
    """Preprocessed images (N, C, H, W float32) with optional integer labels."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    source: str = ""
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be a 4-D (N, C, H, W) tensor, got shape {tuple(self.images.shape)}")
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


def sample_tiny_set(labels: np.ndarray | torch.Tensor | None, n: int, seed: int = 0, num_items: int | None = None) -> np.ndarray:
    """Indices of a tiny set of ``n`` items, drawn as in the PRACTISE paper.

    Fewer images than classes: drawn at random (class-imbalanced). Otherwise ``n // C`` per class, the
    remainder at random from what is left, so each class is represented. Without labels: random.
    """
    total = num_items if labels is None else len(labels)
    if total is None:
        raise ValueError("give labels or num_items")
    if n <= 0:
        raise DataError(f"num_samples must be positive, got {n}")
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


def preprocess(img: Image.Image, cfg: DataConfig) -> torch.Tensor:
    """PIL image -> normalised (C, H, W) tensor per ``cfg`` (grey or RGB as the model wants)."""
    c, h, w = cfg.input_size
    img = img.convert("L" if c == 1 else "RGB")
    resample = {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST}.get(cfg.interpolation, Image.BILINEAR)
    scale = max(h, w) / cfg.crop_pct / min(img.size)
    new = (max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale)))
    img = img.resize(new, resample)
    left, top = (new[0] - w) // 2, (new[1] - h) // 2
    img = img.crop((left, top, left + w, top + h))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.copy()).view(h, w, -1).permute(2, 0, 1)
    if x.shape[0] != c:
        x = x.expand(c, h, w)
    return cfg.normalise(x.unsqueeze(0))[0]


def list_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files of an ImageFolder layout (one sub-folder per class) or of a flat folder (labels -1)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; pass --data with a folder of images")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass --data with a folder of images (ImageFolder or flat)")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    if subdirs:
        for ci, d in enumerate(subdirs):
            for f in sorted(d.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    files.append(f)
                    labels.append(ci)
        names = [d.name for d in subdirs]
    else:
        names = []
    flat = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if flat and not files:
        files, labels = flat, [-1] * len(flat)
    if not files:
        raise DataError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {root}; put images there directly "
            "or in one sub-folder per class"
        )
    return files, labels, names


def load_images(
    root: Path | str, cfg: DataConfig, num_samples: int | None = None, seed: int = 0, progress: bool = False
) -> ImageSet:
    """Load an image folder (ImageFolder layout or flat), optionally a tiny-set sample of it."""
    files, labels, names = list_images(Path(root))
    lab = np.asarray(labels)
    if num_samples is not None:
        idx = sample_tiny_set(lab if (lab >= 0).all() else None, num_samples, seed, num_items=len(files))
        files, lab = [files[i] for i in idx], lab[idx]
    return load_image_files(files, cfg, lab, str(root), names, progress)


def load_image_files(
    files: list[Path], cfg: DataConfig, labels: np.ndarray | None = None, source: str = "",
    class_names: list[str] | None = None, progress: bool = False,
) -> ImageSet:
    """Read and preprocess the given image files; a file that is not an image names itself in the error."""
    tensors = []
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc="loading images", unit="img", leave=False)
    for f in it:
        try:
            with Image.open(f) as im:
                tensors.append(preprocess(im, cfg))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{f} is not a readable image ({e.__class__.__name__}: {e}); remove or replace it") from e
    if not tensors:
        raise DataError(f"no images to load from {source or 'the given list'}")
    y = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return ImageSet(torch.stack(tensors), y, source, list(class_names or []))


def from_uint8(images: np.ndarray, labels: np.ndarray | None, cfg: DataConfig, source: str) -> ImageSet:
    """uint8 arrays (N, H, W) grey or (N, H, W, 3) colour -> ImageSet resized for ``cfg``."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    c, h, w = cfg.input_size
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).expand(-1, c, -1, -1) if c in (1, 3) else x
        if x.shape[1] != c:
            raise DataError(f"cannot turn {x.shape[1]}-channel images into the {c} channels the model expects")
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    y = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return ImageSet(cfg.normalise(x.contiguous()), y, source)


def load_cifar_batches(root: Path | str, cfg: DataConfig, split: str = "test") -> ImageSet:
    """CIFAR-10/100 python batches (``data_batch_*`` / ``test_batch`` or ``train`` / ``test``)."""
    root = Path(root)
    names = {"train": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "train"],
             "test": ["test_batch", "test"]}[split]
    found = [root / n for n in names if (root / n).exists()]
    if not found:
        raise DataError(f"no CIFAR {split} batches ({', '.join(names)}) in {root}; point to the extracted cifar-*-python folder")
    xs, ys = [], []
    for f in found:
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64))
    return from_uint8(np.concatenate(xs), np.concatenate(ys), cfg, str(root))


def write_image_folder(images: np.ndarray, labels: np.ndarray, root: Path | str, class_names: list[str] | None = None) -> Path:
    """Write uint8 images as PNG files in ImageFolder layout (used to hand tiny sets to other tools)."""
    root = Path(root)
    for i, (im, y) in enumerate(zip(images, labels)):
        d = root / (class_names[int(y)] if class_names else f"class_{int(y):03d}")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:05d}.png")
    return root
