"""CIFAR-10/100 in their standard "python" layout, for users who hold it (nothing here downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.inputs import DataConfig, ImageSet
from .images import from_uint8


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
