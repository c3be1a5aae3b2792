"""``ModelBundle``: a network together with what is needed to feed it and to rebuild it from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.inputs import DataConfig
from ..core.torch_utils import example_input


@dataclass
class ModelBundle:
    """A network with what is needed to feed it and to rebuild it from a checkpoint."""

    model: nn.Module
    data_config: DataConfig
    spec: str
    num_classes: int | None = None
    pretrained: bool = False
    meta: dict = field(default_factory=dict)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return example_input(self.data_config.input_size, batch_size)
