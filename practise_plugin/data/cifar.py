"""CIFAR-10/100 in their standard "python" layout, for users who hold it (nothing here downloads).

The batches are Python pickles, a format that can name any function to call while loading. They are read
with an unpickler that resolves only what a data batch holds (numpy arrays), so a tampered file is an
error, not code run on the user's machine.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.inputs import DataConfig, ImageSet
from .images import from_uint8

# What a CIFAR batch may reference: numpy's array reconstruction (numpy 1.x and 2.x module names).
_DATA_ONLY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "ndarray"), ("numpy", "dtype")}


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path) -> None:  # noqa: ANN001
        super().__init__(fh, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _DATA_ONLY:
            return super().find_class(module, name)
        raise DataError(f"{self.path} is not a plain CIFAR batch: it asks to load {module}.{name}, which could run "
                        "code; refusing it (re-extract the batches from the official archive)")


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
            d = _DataUnpickler(fh, f).load()
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64))
    return from_uint8(np.concatenate(xs), np.concatenate(ys), cfg, str(root))
