"""``UDFCPruner``: Torch-Pruning's channel pruner with UDFC's data-free compensation before each removal.

Why it exists: when Torch-Pruning removes filters of a conv, the next layer loses their contribution and
accuracy collapses without fine-tuning. UDFC (Bai et al., ICCV 2023) rebuilds each removed channel from the
kept ones in closed form and folds that into the next layer's weights, needing no data. Here Torch-Pruning
keeps its jobs (importance, ratios, groups, physical removal); :func:`practise_plugin.udfc.compensate_next_layer`
edits the consumer just before a group is removed, and :func:`practise_plugin.udfc.chains.analyse` says
where that is possible: a conv (+ BN + per-channel ops) read by exactly one dense layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..core.errors import ConfigError
from ..surgery.channel_removal import plain_indices
from ..udfc.chains import LayerInfo, analyse
from ..udfc.compensate import compensate_next_layer
from ..udfc.config import A1
from .history import channel_surgery

METHODS = ("udfc", "nm", "prune")


class CompensatedGroup:
    """A Torch-Pruning group whose :meth:`prune` first compensates the next layer (when the root is a UDFC chain).

    Reads like the wrapped ``tp`` group (``group[0]``, ``len(group)``, ``print(group)``); skipping it leaves the
    model untouched, compensation included.
    """

    def __init__(self, pruner: UDFCPruner, group: tp.Group) -> None:
        self._pruner, self._group = pruner, group

    def __getitem__(self, k: int) -> Any:
        return self._group[k]

    def __len__(self) -> int:
        return len(self._group)

    def __str__(self) -> str:
        return str(self._group)

    def details(self) -> str:
        return self._group.details()

    @property
    def chain(self) -> LayerInfo | None:
        """The UDFC chain this group's root heads, or None (then it is removed without compensation)."""
        dep = self._group[0].dep
        if not self._pruner.DG.is_out_channel_pruning_fn(dep.handler):
            return None
        return self._pruner.chains.get(self._pruner.names.get(dep.target.module))

    def prune(self, idxs: list[int] | None = None) -> None:
        """Compensate (if possible), then remove ``idxs`` (default: the group's own) through Torch-Pruning."""
        root = self._group[0]
        idxs = plain_indices(root.idxs if idxs is None else idxs)
        chain = self.chain
        p = self._pruner
        if chain is not None:
            conv = p.model.get_submodule(chain.path)
            bn = p.model.get_submodule(chain.bn) if chain.bn else None
            compensate_next_layer(conv, bn, p.model.get_submodule(chain.consumer), idxs, a1=p.a1, method=p.method,
                                  nm_threshold=p.nm_threshold)
        # A fresh group rather than group.prune(idxs): Torch-Pruning 1.6 records history twice on that path.
        group = self._group if idxs == plain_indices(root.idxs) else p.DG.get_pruning_group(root.dep.target.module,
                                                                                      root.dep.handler, idxs)
        group.prune()
        key = "compensated" if chain is not None else "uncompensated"
        name = p.names[root.dep.target.module]
        p.report[key][name] = p.report[key].get(name, 0) + len(idxs)


class UDFCPruner(tp.pruner.BasePruner):
    """``tp.pruner.BasePruner`` whose ``step()`` compensates the next layer (UDFC) before removing channels.

    Takes every ``BasePruner`` argument. ``method``: ``"udfc"`` (closed form, the paper), ``"nm"`` (Neuron
    Merging) or ``"prune"`` (no compensation: plain Torch-Pruning, the baseline). By default only UDFC chain
    heads are pruned (in a ResNet: the inner convs of each block, as in the paper): every other conv and
    linear is added to ``ignored_layers``, and ``uncompensable`` lists them with the reason. With
    ``prune_uncompensable=True`` they are pruned too, without compensation. ``report`` counts the channels
    removed per layer, with and without compensation.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        importance: tp.importance.Importance,
        *,
        method: str = "udfc",
        a1: float = A1,
        nm_threshold: float = 0.0,
        prune_uncompensable: bool = False,
        ignored_layers: list[nn.Module] | None = None,
        **kwargs: Any,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.a1, self.nm_threshold = method, a1, nm_threshold
        was_training = model.training
        model.eval()  # the trace runs a forward pass: keep BatchNorm statistics as they are
        try:
            layers = analyse(model, example_inputs)
        finally:
            model.train(was_training)
        self.names = {m: n for n, m in model.named_modules()}
        self.chains = {info.path: info for info in layers if info.prunable}
        self.uncompensable = {info.path: info.reason for info in layers if not info.prunable}
        ignored = list(ignored_layers or [])
        if not prune_uncompensable:
            ignored += [model.get_submodule(path) for path in self.uncompensable]
        self.report: dict[str, dict[str, int]] = {"compensated": {}, "uncompensated": {}}
        super().__init__(model, example_inputs, importance, ignored_layers=ignored, **kwargs)

    def step(self, interactive: bool = False) -> Iterator[CompensatedGroup] | None:
        """As ``BasePruner.step``; interactive groups compensate only when their ``prune()`` is called."""
        self.current_step += 1
        groups = (CompensatedGroup(self, g) for g in self._prune())
        if interactive:
            return groups
        for group in groups:
            group.prune()
        return None

    def surgery(self) -> list[dict[str, Any]]:
        """The replayable record for :func:`practise_plugin.models.checkpoint.save_compressed`."""
        return channel_surgery(self)
