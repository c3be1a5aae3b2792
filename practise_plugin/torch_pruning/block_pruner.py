"""``BlockDropPruner``: whole-block removal with Torch-Pruning's pruner interface (its issue #254).

Why it exists: Torch-Pruning users write importance -> pruner -> ``pruner.step()`` -> fine-tune, and
Torch-Pruning removes channels only. This pruner takes the same arguments and modes (ratio or explicit
targets, ``ignored_layers``, ``iterative_steps``, ``step(interactive=True)``) but removes whole residual
blocks, using the library's own modules for each part: candidates from :mod:`~practise_plugin.graph.discover`,
ranking and latency targets from :mod:`~practise_plugin.practise.selection`, surgery from :mod:`~practise_plugin.surgery.drop`,
latency from :mod:`~practise_plugin.runtime.latency`. The model is edited in place, as Torch-Pruning does; build any
Torch-Pruning pruner (its dependency graph) *after* the blocks are gone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from ..core.errors import ConfigError, TargetError
from ..core.torch_utils import copy_model, eval_mode
from ..graph.discover import Block, discover_blocks, parse_block_name
from ..practise.selection import rank_blocks, select_blocks
from ..runtime.latency import LatencyMeter, LatencyTable, Reduction, block_latency_table
from ..surgery.drop import drop_blocks
from .importance import BlockImportance


class BlockGroup:
    """One block chosen by a step: inspect it, then call :meth:`prune` (or skip it), like a Torch-Pruning group.

    ``importance`` is the raw score, ``saving`` the fraction of latency this block alone saves (None without
    a latency table) and ``score`` the ranking key ``importance / saving`` (lower goes first).
    """

    def __init__(self, pruner: BlockDropPruner, block: Block, importance: float, saving: float | None,
                 score: float) -> None:
        self.block, self.importance, self.saving, self.score = block, importance, saving, score
        self._pruner = pruner

    @property
    def name(self) -> str:
        return self.block.name

    @property
    def module(self) -> nn.Module:
        """The block's module as it is now in the model (before :meth:`prune`: the block itself)."""
        return self._pruner.model.get_submodule(self.block.path)

    @property
    def pruned(self) -> bool:
        return self.block.name in self._pruner.dropped

    def prune(self) -> None:
        """Drop this block from the model in place (a second call does nothing)."""
        self._pruner._drop(self.block)

    def __repr__(self) -> str:
        saving = "" if self.saving is None else f", saving={self.saving:.2%}"
        return f"BlockGroup({self.name}, importance={self.importance:.4g}{saving}, score={self.score:.4g})"


class BlockDropPruner:
    """Drop whole residual blocks, Torch-Pruning style.

    Give exactly one target, reached after the last of ``iterative_steps`` steps (linearly in between):

    - ``num_blocks``: how many blocks to drop;
    - ``pruning_ratio``: that count as a fraction of the droppable (non-ignored) blocks, rounded;
    - ``latency_reduction``: the fraction of latency to remove, measured (PRACTISE's target).

    Blocks are ranked by ``importance / saving`` ascending (PRACTISE's score) when per-block savings are
    known (``latency_table``, or built with ``latency_backend`` when a latency target needs one), else by
    importance alone. A block containing any module (or parameter) of ``ignored_layers`` (or inside one) is
    never dropped. ``example_inputs`` is one input batch; candidates are the model's identity-shortcut
    residual blocks (:func:`~practise_plugin.graph.discover.discover_blocks`). With a latency target the
    pruner keeps a copy of the model as built, so later steps measure against the original latency.

    The rest of ``tp.pruner.BasePruner``'s keywords are accepted, so a Torch-Pruning script keeps its call:
    ``max_pruning_ratio`` caps the fraction of droppable blocks dropped, ``iterative_pruning_ratio_scheduler``
    paces the steps, ``forward_fn`` runs the model for discovery, ``ch_sparsity`` is ``pruning_ratio``'s old
    name, and ``global_pruning`` is always in effect (blocks are ranked across the whole model). Keywords that
    steer channel pruning (``round_to``, ``channel_groups``, ``num_heads``, ``unwrapped_parameters``, ...)
    have nothing to act on when whole blocks go: given a value other than Torch-Pruning's default, they are
    named once in a warning. Build a channel pruner (its dependency graph) after the blocks are gone.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        importance: BlockImportance,
        *,
        pruning_ratio: float | None = None,
        num_blocks: int | None = None,
        latency_reduction: float | None = None,
        ignored_layers: Sequence[nn.Module] | None = None,
        iterative_steps: int = 1,
        latency_table: LatencyTable | None = None,
        latency_backend: str = "openvino",
        include_stage_entry: bool = False,
        global_pruning: bool = True,
        max_pruning_ratio: float = 1.0,
        iterative_pruning_ratio_scheduler: Callable[[float, int], list[float]] | None = None,
        forward_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
        ch_sparsity: float | None = None,
        **channel_options: Any,
    ) -> None:
        _check_importance(importance)
        _warn_channel_options(channel_options)
        if ch_sparsity is not None:
            if pruning_ratio is not None:
                raise ConfigError("give pruning_ratio or its old name ch_sparsity, not both")
            pruning_ratio = ch_sparsity
        if not 0 < max_pruning_ratio <= 1:
            raise ConfigError(f"max_pruning_ratio must be in (0, 1], got {max_pruning_ratio}")
        self.global_pruning = global_pruning
        self.max_pruning_ratio = max_pruning_ratio
        self.scheduler = iterative_pruning_ratio_scheduler
        if not isinstance(example_inputs, torch.Tensor):
            raise ConfigError("example_inputs must be one input tensor (batch, C, H, W), as the model takes it")
        given = [n for n, v in (("pruning_ratio", pruning_ratio), ("num_blocks", num_blocks),
                                ("latency_reduction", latency_reduction)) if v is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of pruning_ratio (fraction of droppable blocks), num_blocks or "
                              f"latency_reduction (fraction of measured latency); got {', '.join(given) or 'none'}")
        if iterative_steps < 1:
            raise ConfigError(f"iterative_steps must be >= 1, got {iterative_steps}")
        self.model, self.example_inputs, self.importance = model, example_inputs, importance
        self.iterative_steps, self.current_step = iterative_steps, 0
        self.latency_reduction = latency_reduction
        self.dropped: list[str] = []
        self.history: list[dict[str, Any]] = []
        self._branch_originals: dict[str, nn.Module] = {}

        with eval_mode(model):
            found = discover_blocks(model, example_inputs[:1], include_stage_entry=include_stage_entry, count_cost=False,
                                    forward_fn=forward_fn)
        self.ignored_layers = [m for layer in (ignored_layers or []) for m in _modules_of(layer)]
        ignored_params = [p for p in (ignored_layers or []) if isinstance(p, nn.Parameter)]
        ignored = {id(m) for m in self.ignored_layers} | {id(p) for p in ignored_params}
        self.ignored = [b.name for b in found if any(id(m) in ignored for m in model.get_submodule(b.path).modules())
                        or any(id(p) in ignored for p in model.get_submodule(b.path).parameters())]
        self._candidates = [b for b in found if b.name not in self.ignored]
        if not self._candidates:
            raise TargetError(f"every droppable block ({', '.join(self.ignored)}) contains an ignored layer; nothing to drop")

        self.total_blocks = self._total(pruning_ratio, num_blocks)
        self.latency_table = latency_table
        self._reference: nn.Module | None = None
        if latency_reduction is not None:
            if not 0 < latency_reduction < 1:
                raise ConfigError(f"latency_reduction must be a fraction in (0, 1), e.g. 0.22; got {latency_reduction}")
            if latency_table is None:
                with eval_mode(model):  # MAC counting runs a forward: keep BatchNorm statistics as they are
                    self.latency_table = block_latency_table(model, [b.name for b in self._candidates],
                                                             tuple(example_inputs.shape[1:]), latency_backend,
                                                             progress=False)
            self._reference = copy_model(model).eval()
        if self.latency_table is not None:
            missing = [b.name for b in self._candidates if b.name not in self.latency_table.saved]
            if missing:
                raise ConfigError(f"latency_table has no saving for {', '.join(missing)}; build it for these candidates "
                                  "with practise_plugin.runtime.latency.block_latency_table")

    # -- public interface ----------------------------------------------------------------------------------
    @property
    def candidates(self) -> list[Block]:
        """Blocks that may still be dropped (not ignored, not dropped yet)."""
        return [b for b in self._candidates if b.name not in self.dropped]

    @property
    def dropped_blocks(self) -> list[Block]:
        """The dropped blocks as :class:`~practise_plugin.graph.discover.Block` records (e.g. to fit adaptors for them)."""
        by_name = {b.name: b for b in self._candidates}
        return [by_name[n] for n in self.dropped]

    def step(self, interactive: bool = False) -> Iterator[BlockGroup] | None:
        """One pruning step. ``interactive=True`` returns the chosen blocks as :class:`BlockGroup` objects,
        one at a time (handle them in order); only those whose ``prune()`` is called are dropped."""
        self.current_step += 1
        groups = self._groups()
        if interactive:
            return groups
        for group in groups:
            group.prune()
        return None

    @property
    def DG(self) -> tp.DependencyGraph:  # noqa: N802 - Torch-Pruning's name
        """A Torch-Pruning dependency graph of the model as it is now (built on each access: after a drop the
        old graph would still hold the removed modules)."""
        with eval_mode(self.model):
            return tp.DependencyGraph().build_dependency(self.model, example_inputs=self.example_inputs)

    def surgery(self) -> list[dict[str, Any]]:
        """The replayable record for :func:`practise_plugin.models.checkpoint.save_compressed` (empty if nothing dropped)."""
        return [{"op": "drop_blocks", "blocks": list(self.dropped)}] if self.dropped else []

    # -- internals ------------------------------------------------------------------------------------------
    def _total(self, pruning_ratio: float | None, num_blocks: int | None) -> int | None:
        n = len(self._candidates)
        if pruning_ratio is not None:
            if not 0 < pruning_ratio <= 1:
                raise ConfigError(f"pruning_ratio must be in (0, 1], got {pruning_ratio}")
            num_blocks = math.floor(pruning_ratio * n + 0.5)
            if num_blocks == 0:
                raise TargetError(f"pruning_ratio={pruning_ratio} of {n} droppable blocks rounds to 0; "
                                  f"use at least {0.5 / n:.3f} or num_blocks=1")
        if num_blocks is not None and not 1 <= num_blocks <= n:
            raise TargetError(f"num_blocks={num_blocks} but {n} blocks may be dropped "
                              f"({len(self.ignored)} more are ignored); choose 1..{n}")
        if num_blocks is not None:
            num_blocks = min(num_blocks, self._cap())  # Torch-Pruning clips at max_pruning_ratio too
        return num_blocks

    def _cap(self) -> int:
        """The most blocks max_pruning_ratio lets go (at least one)."""
        return max(1, math.floor(self.max_pruning_ratio * len(self._candidates)))

    def _groups(self) -> Iterator[BlockGroup]:
        if self.current_step > self.iterative_steps:
            warnings.warn(f"step {self.current_step} exceeds iterative_steps={self.iterative_steps}; nothing is dropped",
                          stacklevel=3)
            return
        remaining = self.candidates
        if not remaining:
            return
        with eval_mode(self.model):
            raw = self.importance(self.model, remaining)
        values = torch.as_tensor(raw, dtype=torch.float64).flatten()
        if len(values) != len(remaining) or not torch.isfinite(values).all():
            raise ConfigError(f"{type(self.importance).__name__} returned {len(values)} scores for {len(remaining)} "
                              "blocks, or non-finite values; return one finite score per block")
        imp = {b.name: float(v) for b, v in zip(remaining, values)}
        saving = self.latency_table.saved if self.latency_table is not None else {n: 1.0 for n in imp}
        fraction = (self.scheduler(1.0, self.iterative_steps)[self.current_step] if self.scheduler is not None
                    else self.current_step / self.iterative_steps)
        entry: dict[str, Any] = {"step": self.current_step, "importance": imp}
        if self.latency_reduction is not None:
            target = self.latency_reduction * fraction
            selection = select_blocks(imp, saving, latency_reduction=target,
                                      measure=lambda names: self._measure(names, target), dropped=self.dropped)
            chosen, scores = selection.blocks, selection.scores
            if len(self.dropped) + len(chosen) > self._cap():
                raise TargetError(f"the latency target needs {len(self.dropped) + len(chosen)} blocks, but "
                                  f"max_pruning_ratio={self.max_pruning_ratio} allows {self._cap()}; raise it or "
                                  "lower latency_reduction")
            entry["selection"] = selection.to_dict()
        else:
            scores = rank_blocks(imp, saving)[1]
            wanted = math.floor(self.total_blocks * fraction + 0.5) - len(self.dropped)
            chosen = select_blocks(imp, saving, num_blocks=wanted).blocks if wanted > 0 else []
        entry.update(score=scores, chosen=list(chosen))
        self.history.append(entry)
        by_name = {b.name: b for b in remaining}
        for name in chosen:
            known = self.latency_table is not None
            yield BlockGroup(self, by_name[name], imp[name], saving[name] if known else None, scores[name])

    def _measure(self, names: list[str], target: float) -> Reduction:
        """Measured fraction of the original model's latency saved by dropping ``names``, with its interval."""
        table, reference = self.latency_table, self._reference
        meter = LatencyMeter(table.backend, batch_size=table.batch_size, device=table.device,
                             input_size=tuple(self.example_inputs.shape[1:]))
        return meter.reduction(reference, drop_blocks(reference, names), target=target, cache=True, dropped=names)

    def _drop(self, block: Block) -> None:
        if block.name in self.dropped:
            return
        if block.branch is not None:
            # A block rewritten for an earlier branch drop renumbers its branches: rebuild it from the
            # original (whose kept sub-modules are the very objects the rewrite shares) with all its branches.
            earlier = [n for n in self.dropped if parse_block_name(n)[0] == block.path]
            if earlier:
                self.model.set_submodule(block.path, self._branch_originals[block.path])
            else:
                self._branch_originals[block.path] = self.model.get_submodule(block.path)
            drop_blocks(self.model, earlier + [block.name], inplace=True)
        else:
            drop_blocks(self.model, [block.name], inplace=True)
        self.dropped.append(block.name)


def _modules_of(layer: Any) -> list[nn.Module]:
    if isinstance(layer, nn.Parameter):
        return []
    if not isinstance(layer, nn.Module):
        raise ConfigError(f"ignored_layers takes modules or parameters (e.g. model.fc, model.layer4); got "
                          f"{type(layer).__name__}")
    return list(layer.modules())


# Torch-Pruning keywords that steer channel pruning, with their defaults (tp.pruner.BasePruner, 1.6).
CHANNEL_OPTIONS: dict[str, Any] = {
    "pruning_ratio_dict": None, "round_to": None, "isomorphic": False, "in_channel_groups": {}, "out_channel_groups": {},
    "num_heads": {}, "prune_num_heads": False, "prune_head_dims": True, "head_pruning_ratio": 0.0,
    "head_pruning_ratio_dict": None, "customized_pruners": None, "unwrapped_parameters": None,
    "root_module_types": None, "output_transform": None, "channel_groups": {}, "ch_sparsity_dict": None,
}


def _warn_channel_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(CHANNEL_OPTIONS))
    if unknown:
        raise ConfigError(f"BlockDropPruner got unexpected keyword(s) {', '.join(unknown)}; it takes "
                          "tp.pruner.BasePruner's keywords plus num_blocks, latency_reduction and latency_table")
    given = [k for k, v in options.items() if v is not None and v != CHANNEL_OPTIONS[k]]
    if given:
        warnings.warn(f"BlockDropPruner removes whole blocks; {', '.join(sorted(given))} steer channel pruning and "
                      "are not applied (build a Torch-Pruning channel pruner after the blocks are gone)", stacklevel=3)


def _check_importance(importance: Any) -> None:
    if isinstance(importance, BlockImportance):
        return
    if isinstance(importance, tp.importance.Importance):
        raise ConfigError(
            f"{type(importance).__name__} scores channels; BlockDropPruner scores whole blocks. Use "
            "RecoverabilityImportance(data), BlockMagnitudeImportance() or BlockTaylorImportance(data), or keep "
            "this importance for a Torch-Pruning channel pruner (tp.pruner.BasePruner)"
        )
    raise ConfigError(f"importance must be a BlockImportance (e.g. BlockMagnitudeImportance()), got {type(importance).__name__}")
