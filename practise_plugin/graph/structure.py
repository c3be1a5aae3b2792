"""Read a module's own forward as a data-flow graph, one level deep.

Why it exists: PRACTISE needs to know, for *any* architecture, which modules compute
``out = x + f(x)`` (droppable blocks), which convs write into the residual stream (where pre-adaptors
can be folded) and which read from it (post-adaptors). A shallow ``torch.fx`` trace, every child module
kept as a leaf, shows exactly that structure and nothing of the children's internals, so it works on
blocks whose sub-modules could never be traced (attention with shape unpacking, for instance). Where a
child is a container we trace it in turn, lazily.
"""

from __future__ import annotations

import copy
import operator
import weakref
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

ADD_FUNCS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}
# Functions and methods that keep a tensor "the same stream" for our purposes: activations and layout.
ELEMENTWISE_FUNCS = {F.relu, torch.relu, F.gelu, F.silu, F.hardswish, F.relu6, torch.sigmoid, F.sigmoid}
LAYOUT_METHODS = {"permute", "contiguous", "transpose", "relu", "relu_", "float", "to"}
LAYOUT_FUNCS = {torch.permute, torch.transpose}
SCALE_FUNCS = {operator.mul, torch.mul, operator.imul}
SCALE_METHODS = {"mul", "mul_"}
# Methods and functions that only rearrange a tensor's shape: a residual stream may pass them between its adds
# (timm's Swin reshapes (B, H, W, C) -> (B, HW, C) and back inside a block).
SHAPE_METHODS = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous"}
SHAPE_FUNCS = {torch.reshape, torch.flatten, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze}
IDENTITY_CLASS_NAMES = {"DropPath", "StochasticDepth", "Identity", "DropBlock2d"}
SCALE_CLASS_NAMES = {"LayerScale", "LayerScale2d", "Scale"}
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Sigmoid, nn.Tanh)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


class _ShallowTracer(fx.Tracer):
    """Trace only the given module's forward; every submodule call stays a ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, ...], fx.Graph | None]] = weakref.WeakKeyDictionary()


def shallow_graph(module: nn.Module, none_args: tuple[str, ...] = ()) -> fx.Graph | None:
    """The module's forward as an fx graph with children as leaves, or None if it cannot be traced.

    ``none_args`` names optional arguments the model calls the module without (or with None): they are
    traced as None, so ``forward(x, shortcut=None)`` reads as it runs (``if shortcut is None: shortcut = x``).
    Cached per module object (weakly, so models can still be freed) and set of None arguments."""
    cache = _GRAPHS.setdefault(module, {})
    if none_args not in cache:
        try:
            cache[none_args] = _ShallowTracer().trace(module, concrete_args=dict.fromkeys(none_args))
        except Exception:  # noqa: BLE001 - untraceable forwards simply have no readable structure
            cache[none_args] = None
    return cache[none_args]


def is_identity_module(m: nn.Module) -> bool:
    """Modules that return their input in eval mode (identity, dropout, drop-path, an empty Sequential)."""
    return (isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d)) or type(m).__name__ in IDENTITY_CLASS_NAMES
            or (type(m) is nn.Sequential and len(m) == 0))


def is_pass_through_module(m: nn.Module) -> bool:
    """Per-element or per-channel maps: a linear adaptor next to a conv on this path stays foldable."""
    return (
        is_identity_module(m) or isinstance(m, ACTIVATIONS + NORMS) or type(m).__name__ in SCALE_CLASS_NAMES
    )


def is_container(m: nn.Module) -> bool:
    return len(m._modules) > 0 and not isinstance(m, NORMS) and not is_pass_through_module(m)


def is_add(n: fx.Node) -> bool:
    return (n.op == "call_function" and n.target in ADD_FUNCS) or (n.op == "call_method" and n.target in ADD_METHODS)


def _is_param_derived(n: object) -> bool:
    if not isinstance(n, fx.Node):
        return True
    if n.op == "get_attr":
        return True
    if n.op in ("call_method", "call_function"):
        return all(_is_param_derived(a) for a in n.args)
    return False


def tensor_input(n: fx.Node, module_of: dict[str, nn.Module]) -> fx.Node | None:
    """The single data input of a pass-through node, or None when ``n`` is not pass-through."""
    if n.op == "call_module":
        m = module_of.get(n.target)
        if m is not None and is_pass_through_module(m) and n.args and isinstance(n.args[0], fx.Node):
            return n.args[0]
        return None
    if n.op == "call_function" and (n.target in ELEMENTWISE_FUNCS or n.target in LAYOUT_FUNCS):
        return n.args[0] if isinstance(n.args[0], fx.Node) else None
    if n.op == "call_method" and n.target in LAYOUT_METHODS:
        return n.args[0] if isinstance(n.args[0], fx.Node) else None
    if (n.op == "call_function" and n.target in SCALE_FUNCS) or (n.op == "call_method" and n.target in SCALE_METHODS):
        a, b = n.args[0], n.args[1]
        if _is_param_derived(b) and isinstance(a, fx.Node):
            return a
        if _is_param_derived(a) and isinstance(b, fx.Node):
            return b
    return None


def skip_identity(n: object, module_of: dict[str, nn.Module]) -> object:
    """Follow identity-like modules back to their input (a shortcut through nn.Identity is still x)."""
    while isinstance(n, fx.Node) and n.op == "call_module" and is_identity_module(module_of.get(n.target, nn.Module())):
        n = n.args[0]
    return n


def strip_activation(n: object, module_of: dict[str, nn.Module]) -> object:
    """Skip trailing activations: ResNet blocks end in relu(x + f(x)) and still count as residual."""
    while isinstance(n, fx.Node):
        if n.op == "call_module" and isinstance(module_of.get(n.target), ACTIVATIONS):
            n = n.args[0]
        elif (n.op == "call_function" and n.target in ELEMENTWISE_FUNCS) or (
            n.op == "call_method" and n.target in {"relu", "relu_"}
        ):
            n = n.args[0]
        else:
            break
    return n


def output_relu(module: nn.Module) -> str | None:
    """Target of the ``nn.ReLU`` that ``module``'s forward applies last, to a residual add (ResNet's
    ``relu(x + f(x))``), or None. The closed-form pre-adaptor fit then works on that ReLU's input, where
    the stream is still affine in the writers' outputs."""
    graph = shallow_graph(module)
    if graph is None:
        return None
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node) or out.op != "call_module":
        return None
    if not isinstance(modules_by_target(module).get(out.target), nn.ReLU):
        return None
    return out.target if out.args and isinstance(out.args[0], fx.Node) and is_add(out.args[0]) else None


@dataclass
class ResidualChain:
    """The residual adds that produce a module's output, in forward order: root -> add_0 -> add_1 -> ... -> output.

    ``adds[k]`` has operands (stream, branch), and the branch reads the stream: it is ``s + f(s)``, not the
    sum of two independent paths (a ResNet block with a projected shortcut is not a chain). ``root`` is
    where the chain starts; ``identity`` says it is the module's own input reached through no-ops only, so
    dropping the whole module leaves its input (otherwise only single branches are droppable). ``scaled[k]``
    says add k's stream passes a per-channel scale first (``res_scale * x + f(x)``): dropping that branch
    leaves the scale.
    """

    graph: fx.Graph
    placeholder: fx.Node
    adds: list[fx.Node]
    branches: list[fx.Node]
    root: fx.Node | None = None
    identity: bool = True
    scaled: list[bool] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        """The module itself is a drop candidate (one add, identity shortcut); else its branches are."""
        return self.identity and len(self.adds) == 1 and not any(self.scaled)


def modules_by_target(module: nn.Module) -> dict[str, nn.Module]:
    return dict(module.named_modules())


def _is_shape_op(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target in SHAPE_METHODS) or (n.op == "call_function" and n.target in SHAPE_FUNCS)


def _is_scale(n: fx.Node, mods: dict[str, nn.Module]) -> fx.Node | None:
    """The input of a per-channel scale (a scale module, or a product with a parameter), else None."""
    if n.op == "call_module" and type(mods.get(n.target)).__name__ in SCALE_CLASS_NAMES:
        return n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
    if (n.op == "call_function" and n.target in SCALE_FUNCS) or (n.op == "call_method" and n.target in SCALE_METHODS):
        a, b = n.args[0], n.args[1]
        if isinstance(a, fx.Node) and _is_param_derived(b):
            return a
        if isinstance(b, fx.Node) and _is_param_derived(a):
            return b
    return None


def _strip(n: object, mods: dict[str, nn.Module], *, activations: bool) -> object:
    """Skip no-ops, shape rearrangements and (with ``activations``) activations ending at ``n``."""
    while isinstance(n, fx.Node) and n.args:
        if n.op == "call_module" and is_identity_module(mods.get(n.target, nn.Module())):
            n = n.args[0]
        elif _is_shape_op(n) and isinstance(n.args[0], fx.Node):
            n = n.args[0]
        elif activations and strip_activation(n, mods) is not n:
            n = strip_activation(n, mods)
        else:
            break
    return n


def _ancestors(n: fx.Node) -> set[fx.Node]:
    seen, stack = set(), [n]
    while stack:
        for m in stack.pop().all_input_nodes:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return seen


def residual_chain(module: nn.Module, none_args: tuple[str, ...] = ()) -> ResidualChain | None:
    """The chain of residual adds ``s + f(s)`` that produces the module's output, if any (see
    :class:`ResidualChain`): read back from the output through no-ops, shape rearrangements and
    activations, each add's stream found as the operand the other one reads."""
    graph = shallow_graph(module, none_args)
    if graph is None:
        return None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = [n for n in graph.nodes if n.op == "output"]
    if not placeholders or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return None
    mods = modules_by_target(module)
    x = placeholders[0]
    node = _strip(outputs[0].args[0], mods, activations=True)
    adds: list[fx.Node] = []
    branches: list[fx.Node] = []
    scaled: list[bool] = []
    while isinstance(node, fx.Node) and is_add(node) and len(node.args) >= 2 and all(
            isinstance(v, fx.Node) for v in node.args[:2]):
        for stream, branch in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
            root = _strip(stream, mods, activations=False)
            scale_input = _is_scale(root, mods) if isinstance(root, fx.Node) else None
            if scale_input is not None:
                root = _strip(scale_input, mods, activations=False)
            if isinstance(root, fx.Node) and root in _ancestors(branch) and _strip(branch, mods, activations=False) is not root:
                adds.insert(0, node)
                branches.insert(0, branch)
                scaled.insert(0, scale_input is not None)
                node = root if scale_input is not None else _strip(stream, mods, activations=True)
                break
        else:
            break
    if not adds:
        return None
    return ResidualChain(graph, x, adds, branches, node, node is x, scaled)


def branch_modules(module: nn.Module, k: int, none_args: tuple[str, ...] = ()) -> list[str]:
    """Targets (relative to ``module``) of the child modules that only residual branch ``k`` uses: what
    removing that branch takes out, found by rewriting a copy of the graph as the drop does."""
    chain = residual_chain(module, none_args)
    if chain is None or not 0 <= k < len(chain.adds):
        return []
    graph = copy.deepcopy(chain.graph)
    by_name = {n.name: n for n in graph.nodes}
    before = {n.target for n in graph.nodes if n.op == "call_module"}
    add, branch = by_name[chain.adds[k].name], by_name[chain.branches[k].name]
    stream = next(a for a in add.args[:2] if a is not branch)
    add.replace_all_uses_with(stream)
    graph.erase_node(add)
    gm = fx.GraphModule(module, graph)  # dead-code elimination asks the owning module about each call
    gm.graph.eliminate_dead_code()
    after = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    return sorted(str(t) for t in before - after)
