"""Register the strategies with NNCF 2.x, so its own ``nncf.torch.create_compressed_model`` accepts them.

Why it exists: users on NNCF 2.x keep their training pipelines around NNCF's ``create_compressed_model``.
There, each ``"algorithm"`` name resolves through the ``PT_COMPRESSION_ALGORITHMS`` registry to a builder
and each entry is validated against ``nncf.config.schema``; adding ours to both is all it takes.

NNCF 2.x builders describe *insertions* into the wrapped model's traced graph; our strategies change
its *structure* (blocks or channels disappear). So the builder here, when NNCF asks for its layout:
runs the strategy on a plain copy of the model, moves the compressed modules into the wrapped model,
re-wraps it so NNCF traces the new structure, and returns an empty layout. Builders after it (e.g.
``quantization``) then see the smaller model. Like :mod:`practise_plugin.nncf.runner`, strategy entries must
come before NNCF's own.

Written against the NNCF 2.14.0 sources (``nncf/torch/algo_selector.py``, ``compression_method_api.py``,
``nncf_network.py``, ``config/schema.py``); where NNCF 3.x is installed, :func:`register` raises.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.errors import ConfigError, PractiseError
from ..core.inputs import DataConfig, ImageSet
from ..core.strategy import CompressionContext
from ..core.torch_utils import copy_model
from ..runtime.latency import LatencyMeter
from ..strategies import build_config, get_strategy, list_strategies
from ..surgery.log import replay_surgery
from .schema import strategy_params_schema


def legacy_nncf_available() -> bool:
    """True where NNCF 2.x (with ``nncf.torch.create_compressed_model`` and its registry) is installed."""
    try:
        from nncf.torch.algo_selector import PT_COMPRESSION_ALGORITHMS  # noqa: F401
        from nncf.torch.model_creation import create_compressed_model  # noqa: F401
    except ImportError:
        return False
    return True


class PractiseInitArgs:
    """Images and run options for our builders, attached to an ``NNCFConfig`` by :func:`register_init_args`.

    NNCF 2.x hands algorithms their data through such "extra structs" (``QuantizationRangeInitArgs``)."""

    def __init__(self, data: ImageSet | None, data_config: DataConfig, **context: Any) -> None:
        self.data = data
        self.data_config = data_config
        self.context = context

    @classmethod
    def get_id(cls) -> str:
        return "practise_init_args"


def register_init_args(nncf_config: Any, data: ImageSet | None, data_config: DataConfig, **context: Any) -> Any:
    """Attach the tiny set (or None: data-free) and CompressionContext options to an ``NNCFConfig``."""
    nncf_config.register_extra_structs([PractiseInitArgs(data, data_config, **context)])
    return nncf_config


def _plain_copy(network: nn.Module) -> nn.Module:
    """A plain torch copy of an NNCFNetwork: original class, torch modules instead of NNCF modules."""
    from nncf.torch.layer_utils import _NNCFModuleMixin

    plain = copy_model(network)
    plain.__class__ = network.nncf._original_class
    del plain._modules["_nncf"]
    for name, module in list(plain.named_modules()):
        if isinstance(module, _NNCFModuleMixin):
            base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
            torch_module = base.__new__(base)
            torch_module.__dict__.update(module.__dict__)
            torch_module._modules = {k: v for k, v in module._modules.items() if k not in ("pre_ops", "post_ops")}
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent) if parent else plain, child, torch_module)
    return plain


def _rewrap(network: nn.Module, compressed: nn.Module) -> None:
    """Make ``network`` (the object the user holds) an NNCFNetwork of ``compressed``, traced afresh.

    Mirrors ``NNCFNetworkMeta.__call__``: the interface is built while the object has its original
    class, so NNCF replaces the new modules and traces the new graph; then the NNCF class is restored."""
    from nncf.torch.nncf_network import NNCFNetworkInterface

    old = network.nncf
    nncf_class = type(network)
    user_wrap_inputs = getattr(old, "_NNCFNetworkInterface__input_info_based_input_wrapper", None) is None
    state = {k: v for k, v in compressed.__dict__.items() if k != "_nncf"}
    network.__dict__.update(state)
    network._modules.pop("_nncf", None)
    network.__class__ = old._original_class
    interface = NNCFNetworkInterface(
        network, old._input_info, old._user_dummy_forward_fn, old._wrap_inputs_fn if user_wrap_inputs else None,
        old._scopes_without_shape_matching, old._ignored_scopes, old._target_scopes, old._wrap_outputs_fn,
        old.replace_modules, old.trace_parameters)
    network._nncf = interface
    network.__class__ = nncf_class


def _context(init: PractiseInitArgs) -> CompressionContext:
    """The CompressionContext of :func:`register_init_args`' options; latency options make its meter."""
    opts = dict(init.context)
    meter = LatencyMeter(opts.pop("latency_backend", "openvino"), batch_size=opts.pop("latency_batch_size", 1),
                         num_threads=opts.pop("num_threads", None), device=opts.get("device", "cpu"),
                         input_size=init.data_config.input_size)
    return CompressionContext(init.data_config, latency=meter, **opts)


def _builder_class(name: str) -> type:
    from nncf.api.compression import CompressionStage
    from nncf.common.schedulers import StubCompressionScheduler
    from nncf.common.statistics import NNCFStatistics
    from nncf.torch.algo_selector import ZeroCompressionLoss
    from nncf.torch.compression_method_api import PTCompressionAlgorithmBuilder, PTCompressionAlgorithmController
    from nncf.torch.graph.transformations.layout import PTTransformationLayout
    from nncf.torch.utils import get_model_device

    class Controller(PTCompressionAlgorithmController):
        """Nothing left to schedule or add to the loss: the strategy has run; ``stats`` is its report."""

        def __init__(self, model: nn.Module, stats: dict[str, Any]) -> None:
            super().__init__(model)
            self.stats = stats
            self._loss = ZeroCompressionLoss(get_model_device(model))
            self._scheduler = StubCompressionScheduler()

        @property
        def loss(self) -> Any:
            return self._loss

        @property
        def scheduler(self) -> Any:
            return self._scheduler

        def compression_stage(self) -> Any:
            return CompressionStage.FULLY_COMPRESSED

        def statistics(self, quickly_collected_only: bool = False) -> Any:
            return NNCFStatistics()

    class Builder(PTCompressionAlgorithmBuilder):
        """Runs strategy ``name`` when NNCF asks for the layout (composite builders ask each in order).

        Resuming from a ``compression_state`` replays the recorded surgery instead of compressing
        again; the caller then loads the compressed weights as usual."""

        def __init__(self, config: Any, should_init: bool = True) -> None:
            super().__init__(config, should_init)
            self.surgery: list[dict[str, Any]] | None = None
            self.stats: dict[str, Any] = {}

        def _get_transformation_layout(self, target_model: nn.Module) -> Any:
            if not self.config.has_extra_struct(PractiseInitArgs):
                raise ConfigError(f"{name!r} needs practise_plugin.nncf.legacy.register_init_args(nncf_config, "
                                  "images_or_None, data_config) before create_compressed_model")
            init = self.config.get_extra_struct(PractiseInitArgs)
            plain = _plain_copy(target_model)
            if self.surgery is not None:
                compressed = replay_surgery(plain, self.surgery, init.data_config)
            else:
                ctx = _context(init)
                result = get_strategy(name).apply(plain, init.data, build_config(name, self._algo_config.get("params")), ctx)
                compressed, self.surgery, self.stats = result.model, result.surgery, result.stats
            _rewrap(target_model, compressed)
            return PTTransformationLayout()

        def _get_state_without_name(self) -> dict[str, Any]:
            return {"surgery": self.surgery}

        def _load_state_without_name(self, state_without_name: dict[str, Any]) -> None:
            self.surgery = state_without_name.get("surgery")

        def _build_controller(self, model: nn.Module) -> Any:
            return Controller(model, {"surgery": self.surgery, **self.stats})

        def initialize(self, model: nn.Module) -> None:
            pass

        def _handle_frozen_layers(self, target_model: nn.Module) -> None:
            pass  # the strategy has already run; frozen layers are its business

    Builder.__name__ = Builder.__qualname__ = f"{name.capitalize()}NNCFBuilder"
    return Builder


def register() -> list[str]:
    """Add every registered strategy to NNCF 2.x's algorithm registry and config schema; return the names.

    Idempotent. Raises :class:`PractiseError` where NNCF 2.x is not installed (NNCF 3.x has neither)."""
    if not legacy_nncf_available():
        raise PractiseError("NNCF 2.x is not installed (NNCF 3.x removed create_compressed_model and its algorithm "
                            "registry); use practise_plugin.nncf.create_compressed_model instead")
    from nncf.config import schema as nncf_schema
    from nncf.torch.algo_selector import PT_COMPRESSION_ALGORITHMS

    added = []
    compression = nncf_schema.NNCF_CONFIG_SCHEMA["properties"]["compression"]["oneOf"]
    for name in list_strategies():
        if name in PT_COMPRESSION_ALGORITHMS.registry_dict:
            continue
        PT_COMPRESSION_ALGORITHMS.register(name)(_builder_class(name))
        nncf_schema.REF_VS_ALGO_SCHEMA[name] = {
            "type": "object", "required": ["algorithm"], "description": get_strategy(name).description,
            "properties": {"algorithm": {"const": name}, "params": strategy_params_schema(name)},
        }
        ref = {"$ref": f"#/$defs/{name}"}
        for alternatives in (compression[0]["oneOf"], compression[1]["items"]["oneOf"]):
            if ref not in alternatives:
                alternatives.append(ref)
        added.append(name)
    return added


__all__ = ["PractiseInitArgs", "legacy_nncf_available", "register", "register_init_args"]
