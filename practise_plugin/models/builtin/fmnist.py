"""The built-in teacher: a ResNet-34-shaped network for Fashion-MNIST.

Why it exists: model hubs are unreachable here, yet the default run and the tests need a *trained*
teacher on *real* images. This network has ResNet-34's block layout ([3, 4, 6, 3] BasicBlocks, hence the
paper's 12 droppable candidates) at a quarter of its width, with a 3x3 stride-1 stem for 28x28 inputs.
It is built from torchvision's own ``BasicBlock`` so block discovery sees a genuine torchvision ResNet
block, not a look-alike. ``practise_plugin.models.builtin.train_teacher`` trains it on the real dataset.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ...core.errors import DataError

# Statistics of the Fashion-MNIST training images (pixel values in [0, 1]).
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530
FMNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
# Where the full dataset lives: Debian's dataset-fashion-mnist, or PRACTISE_FMNIST_DIR (a folder of the IDX .gz files).
DEBIAN_DATASET_DIR = Path(os.environ.get("PRACTISE_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))


class FMNISTResNet(nn.Module):
    """ResNet with BasicBlocks for 1x28x28 inputs; ``layers`` and ``widths`` set its size."""

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        widths: tuple[int, ...] = (16, 32, 64, 128),
        num_classes: int = 10,
        in_chans: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_planes = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            stages.append(self._make_stage(in_planes, w, n, stride))
            in_planes = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_planes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        mods = [BasicBlock(in_planes, planes, stride, downsample)]
        mods += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*mods)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def fmnist_resnet34q(num_classes: int = 10) -> FMNISTResNet:
    """ResNet-34 layout at quarter width (1.3 M parameters, 58 M MACs at 28x28)."""
    return FMNISTResNet((3, 4, 6, 3), (16, 32, 64, 128), num_classes)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not), the format Fashion-MNIST ships in."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load_fmnist_split(split: str, root: Path = DEBIAN_DATASET_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 N x 28 x 28, labels int64) of the full ``train`` or ``test`` split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    img, lab = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists():
        raise DataError(
            f"Fashion-MNIST not found at {root}. Install it with "
            "`apt-get install -y dataset-fashion-mnist` (Debian) or pass the folder holding the IDX files."
        )
    return read_idx(img), read_idx(lab).astype(np.int64)
