"""Image files in, normalised tensors out: folders (ImageFolder or flat), single files, uint8 arrays.

Why it exists: every strategy consumes an :class:`~practise_plugin.core.inputs.ImageSet` already
preprocessed for the model (size, channels, mean/std from its ``DataConfig``); users hold folders of
photos. One loader resizes, crops and normalises them the way the model's config says, and names the
file at fault when one is not an image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..core.errors import DataError
from ..core.inputs import DataConfig, ImageSet, sample_tiny_set

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def pixels(img: Image.Image, cfg: DataConfig) -> np.ndarray:
    """PIL image -> u8 (H, W, C) pixels at the model's size: the shorter side resized to ``H / crop_pct``,
    then centre-cropped to H x W, grey or RGB as the model wants (what an IR with embedded preprocessing
    takes)."""
    c, h, w = cfg.input_size
    img = img.convert("L" if c == 1 else "RGB")
    resample = {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST}.get(cfg.interpolation, Image.BILINEAR)
    scale = max(h, w) / cfg.crop_pct / min(img.size)
    new = (max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale)))
    img = img.resize(new, resample)
    left, top = (new[0] - w) // 2, (new[1] - h) // 2
    arr = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.uint8).reshape(h, w, -1)
    return np.ascontiguousarray(np.broadcast_to(arr, (h, w, c))) if arr.shape[2] != c else arr


def load_pixels(files: list[Path], cfg: DataConfig, progress: bool = False) -> np.ndarray:
    """u8 (N, H, W, C) pixels of image files at the model's size; a file that is not an image names itself."""
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc="loading images", unit="img", leave=False)
    out = []
    for f in it:
        try:
            with Image.open(f) as im:
                out.append(pixels(im, cfg))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{f} is not a readable image ({e.__class__.__name__}: {e}); remove or replace it") from e
    return np.stack(out)


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


def tiny_set_from(data: ImageSet | str | Path | None, cfg: DataConfig, num_samples: int | None = None, seed: int = 0,
                  progress: bool = False) -> ImageSet | None:
    """What users pass as images (a folder, an :class:`ImageSet` or None) as a tiny set for a model fed by
    ``cfg``: ``num_samples`` of them drawn as the paper does, their shape checked against the model's."""
    if isinstance(data, (str, Path)):
        data = load_images(data, cfg, num_samples=num_samples, seed=seed, progress=progress)
    elif isinstance(data, ImageSet):
        data = data.sample(num_samples, seed)
    elif data is not None:
        raise DataError(f"images must be an ImageSet, a folder of images or None, got {type(data).__name__}")
    if data is not None:
        data.check_input_size(cfg.input_size)
    return data


def load_image_files(
    files: list[Path], cfg: DataConfig, labels: np.ndarray | None = None, source: str = "",
    class_names: list[str] | None = None, progress: bool = False,
) -> ImageSet:
    """Read and preprocess the given image files; a file that is not an image names itself in the error."""
    if not files:
        raise DataError(f"no images to load from {source or 'the given list'}")
    x = torch.from_numpy(load_pixels(files, cfg, progress)).permute(0, 3, 1, 2).float().div_(255.0)
    y = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return ImageSet(cfg.normalise(x).contiguous(), y, source, list(class_names or []))


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


def write_image_folder(images: np.ndarray, labels: np.ndarray, root: Path | str, class_names: list[str] | None = None) -> Path:
    """Write uint8 images as PNG files in ImageFolder layout (used to hand tiny sets to other tools)."""
    root = Path(root)
    for i, (im, y) in enumerate(zip(images, labels)):
        d = root / (class_names[int(y)] if class_names else f"class_{int(y):03d}")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:05d}.png")
    return root
