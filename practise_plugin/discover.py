"""Find the droppable residual blocks of any network.

Why it exists: the reference PRACTISE code hard-codes block names for three torchvision models. We read
the structure instead: a module is a droppable *block* when its own forward returns ``x + f(x)``
(optionally through a trailing activation, as in ResNet) with matching input/output shapes; a module
whose forward is a chain ``x -> x + f1(x) -> ... + fk(.)`` (transformer blocks) offers each residual
*branch* as a candidate. Following the paper, the first block of each stage (the first child of its
container) is not a candidate unless ``include_stage_entry=True``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import ModelError
from .graph import is_container, residual_chain


@dataclass(frozen=True)
class Block:
    """A drop candidate. ``name`` is the module path, with ``#k`` for the k-th residual branch."""

    name: str
    path: str
    branch: int | None
    stage: str
    index: int
    module_type: str
    in_shape: tuple[int, ...]
    macs: int = 0
    params: int = 0

    @property
    def kind(self) -> str:
        return "block" if self.branch is None else "branch"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind
        return d


def parse_block_name(name: str) -> tuple[str, int | None]:
    """``"layer1.1"`` -> ("layer1.1", None); ``"blocks.3#1"`` -> ("blocks.3", 1)."""
    path, _, branch = name.partition("#")
    return path, (int(branch) if branch else None)


@dataclass
class ForwardTrace:
    """What one forward pass showed: execution order, call counts, shapes and tensor identities."""

    order: dict[str, int]
    calls: dict[str, int]
    in_shape: dict[str, tuple[int, ...]]
    out_shape: dict[str, tuple[int, ...]]
    in_ptr: dict[str, int]
    out_ptr: dict[str, int]


def trace_forward(model: nn.Module, example_input: torch.Tensor, fn=None) -> ForwardTrace:
    """Run ``fn(model, x)`` (default ``model(x)``) once under hooks on every module."""
    t = ForwardTrace({}, {}, {}, {}, {}, {})
    handles = []

    def first_tensor(args):
        for a in args:
            if isinstance(a, torch.Tensor):
                return a
        return None

    def pre(name):
        def hook(mod, args):
            t.order.setdefault(name, len(t.order))
            t.calls[name] = t.calls.get(name, 0) + 1
            x = first_tensor(args)
            if x is not None:
                t.in_shape.setdefault(name, tuple(x.shape))
                t.in_ptr.setdefault(name, x.data_ptr())
        return hook

    def post(name):
        def hook(mod, args, out):
            if isinstance(out, torch.Tensor):
                t.out_shape.setdefault(name, tuple(out.shape))
                t.out_ptr.setdefault(name, out.data_ptr())
        return hook

    for name, m in model.named_modules():
        if name:
            handles.append(m.register_forward_pre_hook(pre(name)))
            handles.append(m.register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            (fn or (lambda m, x: m(x)))(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return t


def parent_path(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def children_in_order(model: nn.Module, path: str, trace: ForwardTrace) -> list[str]:
    """Executed children of the module at ``path``, in execution order."""
    parent = model.get_submodule(path) if path else model
    names = [f"{path}.{n}" if path else n for n, _ in parent.named_children()]
    return sorted((n for n in names if n in trace.order), key=trace.order.__getitem__)


def discover_blocks(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    include_stage_entry: bool = False,
    count_cost: bool = True,
) -> list[Block]:
    """Drop candidates of ``model`` in execution order, with MACs and parameters each one removes.

    Raises :class:`ModelError` if there is none (the model has no identity-shortcut residual blocks).
    """
    model.eval()
    trace = trace_forward(model, example_input)
    accepted: list[str] = []
    found: list[Block] = []
    for path, module in model.named_modules():
        if not path or path not in trace.order or not is_container(module):
            continue
        if any(path.startswith(a + ".") for a in accepted):
            continue
        if trace.calls.get(path) != 1 or trace.in_shape.get(path) != trace.out_shape.get(path):
            continue
        chain = residual_chain(module)
        if chain is None:
            continue
        accepted.append(path)
        stage = parent_path(path)
        siblings = children_in_order(model, stage, trace)
        index = siblings.index(path)
        if index == 0 and not include_stage_entry:
            continue
        branches = [None] if len(chain.adds) == 1 else list(range(len(chain.adds)))
        for b in branches:
            name = path if b is None else f"{path}#{b}"
            found.append(Block(name, path, b, stage, index, type(module).__name__, trace.in_shape[path]))
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no droppable block: no module computes x + f(x) with matching "
            "shapes (identity shortcut). Block dropping needs a residual network (ResNet, MobileNetV2, "
            "EfficientNet, RegNet, ConvNeXt, ViT); use strategy 'udfc' or 'swd' for plain conv chains."
        )
    found.sort(key=lambda b: (trace.order[b.path], b.branch or 0))
    if count_cost:
        found = _with_cost(model, found, example_input[:1])
    return found


def _flop_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """MACs per module path ("" for the whole model) from one pass of torch's FLOP counter.

    Runs with autograd enabled on purpose: under no_grad, nn.MultiheadAttention takes a fused fast path
    that the FLOP counter cannot see."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(x)
    root = type(model).__name__
    out = {}
    for key, ops in fc.get_flop_counts().items():
        if key == "Global":
            out[""] = int(sum(ops.values()) // 2)
        elif key.startswith(root + "."):
            out[key[len(root) + 1 :]] = int(sum(ops.values()) // 2)
    return out


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2)."""
    return _flop_counts(model, x)[""]


def _with_cost(model: nn.Module, blocks: list[Block], x: torch.Tensor) -> list[Block]:
    """MACs and parameters each candidate removes: read off one counted pass for whole blocks, measured by
    dropping for branches (a branch is not a module of its own)."""
    from .drop import dropped_temporarily

    per_module = _flop_counts(model, x)
    n_params = sum(p.numel() for p in model.parameters())
    out = []
    for b in blocks:
        if b.branch is None:
            macs = per_module.get(b.path, 0)
            params = sum(p.numel() for p in model.get_submodule(b.path).parameters())
        else:
            with dropped_temporarily(model, [b.name]):
                macs = per_module[""] - count_macs(model, x)
                params = n_params - sum(p.numel() for p in model.parameters())
        out.append(Block(**{**asdict(b), "macs": macs, "params": params}))
    return out
