"""OpenVINO models whose UDFC weights are really low-bit, not float tensors that happen to hold few values.

Why it exists: UDFC's torch output is fake-quantized (each weight tensor holds at most 2^k distinct
floats). Two ways to make that real in OpenVINO, both verified on OpenVINO 2026.4 / NNCF 3.4:

* ``backend="exact"`` (any k <= 8): every Convolution/MatMul weight that lies on UDFC's per-tensor grid
  ``m * (2t/(2^k-1) - 1)`` is stored as the integer t in the smallest OpenVINO type that fits (u2, u3,
  u4, u6, u8) followed by ``(convert(t) - (2^k-1)/2) * step_c``; the step is per output channel because
  the converter folds each BN's ``gamma/sigma`` into the conv weight. The IR holds k-bit integers and
  the model computes the torch model's weights (to float rounding). The CPU plugin keeps u2/u4/u8 weights compressed in
  its FullyConnected (MatMul) kernels; for Convolution it decompresses every type to f32/bf16 at compile
  time (smaller file and download, same runtime arithmetic).
* ``backend="nncf"`` (k = 8): ``nncf.compress_weights(mode=INT8_SYM)``, NNCF's per-channel int8 weights
  for Convolution and MatMul. NNCF's INT4 modes compress MatMul weights only and give every Convolution
  the INT8_ASYM backup precision, even with ``all_layers=True``; below 8 bits use ``"exact"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, ExportError
from ..udfc.chains import analyse
from ..udfc.compensate import channel_affine

WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")
STORAGE = ((2, "u2"), (3, "u3"), (4, "u4"), (6, "u6"), (8, "u8"))  # k -> the smallest unsigned type holding it
GRID_TOL = 1e-5  # |W - grid(W)| <= GRID_TOL * max|W|: the tensor is on the k-bit grid
MATCH_RTOL = 1e-4  # an OpenVINO constant is this torch layer's weight (after BN folding) within this tolerance


@dataclass
class GridWeight:
    """A torch weight on UDFC's grid: ``W = (t - L/2) * step``; ``bn_scale`` is the per-channel factor
    ``gamma / sigma`` that OpenVINO's converter folds into the weight when a BN follows."""

    path: str
    t: np.ndarray
    step: float
    L: int
    bn_scale: np.ndarray | None


def storage_type(bits: int) -> str:
    for width, name in STORAGE:
        if bits <= width:
            return name
    raise ConfigError(f"OpenVINO low-bit storage holds at most 8 bits, got bits={bits}")


def grid_indices(W: np.ndarray, bits: int) -> tuple[np.ndarray, float] | None:
    """``(t, m)`` with ``W == m * (2t/L - 1)`` (L = 2^bits - 1, t in 0..L) if W lies on that grid, else None."""
    m = float(np.abs(W).max())
    if m == 0.0:
        return None
    L = 2**bits - 1
    t = np.clip(np.rint((W / m + 1.0) * L / 2.0), 0, L)
    if np.abs(m * (2.0 * t / L - 1.0) - W).max() > GRID_TOL * m:
        return None
    return t.astype(np.uint8), m


def grid_weights(model: nn.Module, example_input: torch.Tensor, bits: int) -> list[GridWeight]:
    """Every Conv2d/Linear weight of ``model`` that lies on the ``bits``-bit grid, with its BN factor."""
    out = []
    for info in analyse(model, example_input):
        layer = model.get_submodule(info.path)
        found = grid_indices(layer.weight.detach().cpu().numpy(), bits)
        if found is None:
            continue
        t, m = found
        bn = model.get_submodule(info.bn) if info.bn else None
        scale = channel_affine(layer, bn)[0].cpu().numpy().astype(np.float64) if bn is not None else None
        L = 2**bits - 1
        out.append(GridWeight(info.path, t, 2.0 * m / L, L, scale))
    return out


def _match(W: np.ndarray, candidates: list[GridWeight]) -> tuple[GridWeight, np.ndarray] | None:
    """The candidate whose grid (plain or BN-folded) reproduces ``W``, with its per-channel steps."""
    for c in candidates:
        if c.t.shape != W.shape:
            continue
        for factor in ([c.bn_scale] if c.bn_scale is not None else []) + [np.ones(W.shape[0])]:
            steps = c.step * factor
            expected = (c.t.astype(np.float64) - c.L / 2.0) * steps.reshape(-1, *([1] * (W.ndim - 1)))
            if np.allclose(W, expected, rtol=MATCH_RTOL, atol=MATCH_RTOL * float(np.abs(expected).max())):
                return c, steps
    return None


def pack_weights(ov_model, weights: list[GridWeight], bits: int) -> dict[str, int]:
    """Store each Convolution/MatMul weight constant of ``ov_model`` that is one of ``weights`` (possibly
    BN-folded by the converter) as k-bit integers with per-channel steps, in place.

    Returns counts ``{"packed": n, "left_float": n}`` (a weight left float matched no grid weight)."""
    import openvino as ov
    import openvino.opset13 as ops

    et = getattr(ov.Type, storage_type(bits))
    remaining = list(weights)
    counts = {"packed": 0, "left_float": 0}
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPS:
            continue
        node = op.input_value(1).get_node()
        if node.get_type_name() != "Constant" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        W = node.get_data()
        found = _match(W, remaining)
        if found is None:
            counts["left_float"] += 1
            continue
        c, steps = found
        remaining.remove(c)
        step = steps.astype(np.float32).reshape(-1, *([1] * (W.ndim - 1)))
        w = ops.convert(ops.constant(c.t, dtype=et), ov.Type.f32)
        w = ops.multiply(ops.subtract(w, ops.constant(np.float32(c.L / 2.0))), ops.constant(step))
        op.input(1).replace_source_output(w.output(0))
        counts["packed"] += 1
    ov_model.validate_nodes_and_infer_types()
    return counts


def lowbit_model(
    model: nn.Module, example_input: torch.Tensor, bits: int | None = None,
    backend: Literal["exact", "nncf"] = "exact",
):
    """Convert a UDFC-compressed torch model to an ``ov.Model`` with real ``bits``-bit weights.

    ``bits=None`` converts as is (fp32). See the module docstring for what each backend stores and runs.
    """
    import openvino as ov

    if backend not in ("exact", "nncf"):
        raise ConfigError(f"backend must be 'exact' or 'nncf', got {backend!r}")
    if bits is not None and backend == "nncf" and bits != 8:
        raise ConfigError(
            f"NNCF compresses convolution weights to 8 bits only (its INT4 modes cover MatMul); got bits={bits}. "
            "Use backend='exact' to store k-bit weights."
        )
    with torch.no_grad():
        ov_model = ov.convert_model(model.eval(), example_input=example_input)
    if bits is None:
        return ov_model
    if backend == "nncf":
        import nncf

        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_SYM)
    counts = pack_weights(ov_model, grid_weights(model, example_input, bits), bits)
    if counts["packed"] == 0:
        raise ExportError(f"no weight of the model lies on a {bits}-bit UDFC grid; quantize it with bits={bits} first")
    return ov_model
