"""OpenVINO export: real conversion, NNCF quantization and inference, checked against torch."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
import torch
from torch import nn

from practise_plugin.core.errors import ConfigError, DataError, ExportError
from practise_plugin.data import ImageSet
from practise_plugin.export import TOLERANCES
from practise_plugin.export.ir import export_openvino, read_ir_config
from practise_plugin.models.builtin import test_set as fmnist_test_set
from practise_plugin.models.builtin import tiny_set
from practise_plugin.models.builtin.fmnist import FMNIST_CLASSES
from practise_plugin.models.loading import load_model
from practise_plugin.runtime.openvino import load_openvino

FMNIST = (1, 28, 28)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def teacher():
    return load_model("builtin")


@pytest.fixture(scope="module")
def calibration():
    return tiny_set(64)


@pytest.fixture(scope="module")
def exports(teacher, calibration, tmp_path_factory):
    """The built-in model exported at each precision (shared: conversion is the slow part)."""
    root = tmp_path_factory.mktemp("ir")
    return {p: export_openvino(teacher.model, FMNIST, root / p, precision=p, calibration=calibration,
                               data_config=teacher.data_config, class_names=list(FMNIST_CLASSES))
            for p in ("fp32", "fp16", "int8")}


def _infer(xml, images: torch.Tensor, exact_f32: bool = True) -> np.ndarray:
    request = load_openvino(xml, num_threads=1, exact_f32=exact_f32).create_infer_request()
    return np.concatenate([request.infer({0: x[None].numpy()})[0] for x in images])


def _torch(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(images).numpy()


def test_fp32_ir_matches_torch_within_a_ten_thousandth_of_the_output_scale(teacher, exports):
    r = exports["fp32"]
    assert r.checked and r.tolerance == {"rtol": 1e-4} and r.check_inputs == 16
    assert r.max_abs_err <= 1e-4 * r.max_ref_abs
    assert sorted(p.name for p in r.xml.parent.iterdir()) == ["model.bin", "model.json", "model.xml"]
    # Independently of the export's own check: load the files as deployment does and compare.
    images = fmnist_test_set(full=False).images[:8]
    ref = _torch(teacher.model, images)
    np.testing.assert_allclose(_infer(r.xml, images), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    # OpenVINO's default CPU arithmetic (bf16 where supported) may differ more, but not in the answer.
    assert (_infer(r.xml, images, exact_f32=False).argmax(1) == ref.argmax(1)).all()


def test_ir_config_carries_preprocessing_and_class_names(teacher, exports):
    r = exports["fp32"]
    cfg = read_ir_config(r.xml)
    assert cfg.data_config == teacher.data_config and cfg.class_names == list(FMNIST_CLASSES)
    assert cfg.batch_size == 1 and cfg.precision == "fp32"
    saved = json.loads(r.config.read_text())
    assert saved["input_size"] == [1, 28, 28] and saved["check"]["max_abs_err"] == r.max_abs_err
    assert load_openvino(r.xml.parent).input(0).shape == ov.Shape([1, 1, 28, 28])  # static, as timed


def test_fp16_halves_the_weights_and_stays_within_a_hundredth(exports):
    fp32, fp16 = exports["fp32"], exports["fp16"]
    assert 0.45 < fp16.bin.stat().st_size / fp32.bin.stat().st_size < 0.6
    assert fp16.tolerance == TOLERANCES["fp16"]
    assert fp32.max_abs_err < fp16.max_abs_err <= 1e-2 * fp16.max_ref_abs


def test_int8_is_quantized_and_keeps_accuracy_on_real_test_images(teacher, exports):
    r = exports["int8"]
    assert r.top1_agreement >= 0.9 and r.mean_cosine >= 0.98
    ops = {op.get_type_name() for op in ov.Core().read_model(r.xml).get_ops()}
    assert "FakeQuantize" in ops
    test = fmnist_test_set(full=False).subset(list(range(200)))
    torch_acc = (_torch(teacher.model, test.images).argmax(1) == test.labels.numpy()).mean()
    int8_acc = (_infer(r.xml, test.images).argmax(1) == test.labels.numpy()).mean()
    assert torch_acc > 0.85 and int8_acc >= torch_acc - 0.03, (torch_acc, int8_acc)


def test_int8_without_calibration_names_the_options(teacher, tmp_path):
    with pytest.raises(DataError, match="calibration") as e:
        export_openvino(teacher.model, FMNIST, tmp_path / "ir", precision="int8")
    assert "--data" in str(e.value) and "synthetic" in str(e.value)
    assert not (tmp_path / "ir").exists()


def test_unknown_precision(teacher, tmp_path):
    with pytest.raises(ConfigError, match="fp32, fp16, int8"):
        export_openvino(teacher.model, FMNIST, tmp_path / "ir", precision="int4")


def test_timm_model_at_batch_2(tmp_path):
    bundle = load_model("timm:resnet18", input_size=(3, 64, 64))
    r = export_openvino(bundle.model, (3, 64, 64), tmp_path / "r18", batch_size=2, data_config=bundle.data_config)
    assert r.max_abs_err <= 1e-4 * r.max_ref_abs and r.check_inputs == 16
    compiled = load_openvino(r.xml, exact_f32=True)
    assert compiled.input(0).shape == ov.Shape([2, 3, 64, 64])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref = _torch(bundle.model, x)
    got = compiled.create_infer_request().infer({0: x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


class _BranchOnData(nn.Module):
    """Data-dependent control flow: tracing on the example input freezes one branch into the IR."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return 2 * y if bool(x.mean() > 0.5) else y


class _PythonState(nn.Module):
    """Scales by how often it was called: OpenVINO's converter sees its trace disagree with eager torch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.calls = nn.Conv2d(3, 4, 3), 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x).mean((2, 3)) * self.calls


class _InterruptedOnData(nn.Module):
    """Raises KeyboardInterrupt (as Ctrl-C would) on the check's real images, after the IR was saved."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if not torch.jit.is_tracing() and bool((x > 100).any()):
            raise KeyboardInterrupt
        return self.conv(x).mean((2, 3))


def test_mismatching_ir_raises_and_writes_nothing(tmp_path):
    bright = ImageSet(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0)
    with pytest.raises(ExportError, match="does not match the torch model"):
        export_openvino(_BranchOnData(), (3, 8, 8), tmp_path / "ir", calibration=bright)
    with pytest.raises(ExportError, match="could not convert"):
        export_openvino(_PythonState(), (3, 8, 8), tmp_path / "ir")
    assert list(tmp_path.iterdir()) == []


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class _StatefulResidualNet(nn.Module):
    """Drop candidates (``blocks.0``, ``blocks.1``) inside a forward that scales by how often it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.blocks, self.calls = nn.Conv2d(3, 4, 3), nn.Sequential(_Residual(), _Residual()), 0

    def forward(self, x):
        self.calls += 1
        return self.blocks(self.stem(x)).mean((2, 3)) * self.calls


def test_the_trace_check_stops_a_stateful_model_before_the_latency_table_times_it():
    from practise_plugin.runtime.latency import block_latency_table
    from practise_plugin.runtime.openvino import to_openvino

    with pytest.raises(ExportError, match="could not convert"):
        to_openvino(_PythonState(), (3, 8, 8))  # checked by default: two runs of the trace disagree
    to_openvino(_PythonState(), (3, 8, 8), check_trace=False)  # unchecked, it converts: callers must check first
    # the latency table converts its base model checked, so a stateful model fails there, before any timing
    with pytest.raises(ExportError, match="could not convert"):
        block_latency_table(_StatefulResidualNet(), ["blocks.0", "blocks.1"], (3, 8, 8), "openvino", cache_dir=None,
                            progress=False, time_s=0.05)


def test_interrupted_export_leaves_nothing_half_written(tmp_path):
    marked = ImageSet(torch.full((4, 3, 8, 8), 1000.0))
    with pytest.raises(KeyboardInterrupt):
        export_openvino(_InterruptedOnData(), (3, 8, 8), tmp_path / "new", calibration=marked)
    assert list(tmp_path.iterdir()) == []

    good = export_openvino(_InterruptedOnData(), (3, 8, 8), tmp_path / "ir")
    before = {p.name: p.read_bytes() for p in good.xml.parent.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        export_openvino(_InterruptedOnData(), (3, 8, 8), tmp_path / "ir", precision="fp16", calibration=marked)
    assert {p.name: p.read_bytes() for p in good.xml.parent.iterdir()} == before  # the earlier export survives
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]  # and no temporary folder is left


def test_bad_output_folders_are_refused_before_any_work(tmp_path):
    model = _InterruptedOnData()
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    with pytest.raises(ExportError, match="is a file"):
        export_openvino(model, (3, 8, 8), a_file)
    with pytest.raises(ExportError, match="not writable"):
        export_openvino(model, (3, 8, 8), a_file / "ir")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.md").write_text("mine")
    with pytest.raises(ExportError, match="notes.md"):
        export_openvino(model, (3, 8, 8), busy)
    assert (busy / "notes.md").read_text() == "mine" and a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "file.txt"]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_embedded_preprocessing_runs_on_raw_pixels_with_torchs_top1(tmp_path, layout):
    """An IR with the preprocessing inside takes the u8 images as they are decoded; on the shipped test images
    its top-1 is the torch model's, and benchmark_app runs it with no preprocessing options."""
    import subprocess

    from practise_plugin.api import export
    from practise_plugin.models.builtin import _samples

    bundle = load_model("builtin")
    result = export(bundle, tmp_path / "ir", embed_preprocessing=True, layout=layout)
    sidecar = json.loads(result.config.read_text())
    assert sidecar["preprocessing"]["embedded"] and sidecar["preprocessing"]["input"]["layout"] == layout
    raw = _samples()["test_images"][:300]  # (N, 28, 28) u8, as decoded
    pixels = raw[:, :, :, None] if layout == "NHWC" else raw[:, None, :, :]
    request = ov.Core().compile_model(str(result.xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    ir_top1 = np.array([request.infer({0: pixels[i : i + 1]})[0].argmax() for i in range(len(raw))])
    with torch.no_grad():
        torch_top1 = bundle.model(fmnist_test_set(full=False).images[:300]).argmax(1).numpy()
    assert (ir_top1 == torch_top1).all()
    if layout == "NHWC":
        run = subprocess.run(["benchmark_app", "-m", str(result.xml), "-niter", "20", "-hint", "latency"],
                             capture_output=True, text=True)
        assert run.returncode == 0 and "Throughput" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]


def _runtime_ops(model: ov.Model) -> list[str]:
    from practise_plugin.runtime.openvino import compile_cpu

    return sorted(op.get_type_name() for op in compile_cpu(model, 1).get_runtime_model().get_ordered_ops())


@pytest.mark.parametrize(("spec", "size", "paths"), [
    ("builtin", FMNIST, ["layer1.1", "layer4.2"]),
    ("torchvision:resnet18", (3, 64, 64), ["layer1.1", "layer3.1"]),
    ("timm:mobilenetv2_100", (3, 64, 64), ["blocks.1.1", "blocks.5.2"]),
    ("timm:vit_tiny_patch16_224", (3, 224, 224), ["blocks.3#0", "blocks.3#1"]),  # both branches of one block
])
def test_a_block_bypassed_in_the_ir_is_the_torch_drop_converted(spec, size, paths):
    """The latency table times each drop-one network from its base's IR with the block bypassed (one
    conversion per table, not one per block): that IR must compute what the torch drop computes and compile
    to the very same runtime graph as converting the torch drop would, alone and with several blocks or
    residual branches."""
    from practise_plugin.runtime.openvino import bypass_blocks, bypass_checked, to_openvino
    from practise_plugin.surgery.drop import drop_blocks

    model = load_model(spec).model.eval()
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    base = to_openvino(model, size, batch_size=2)
    before = len(base.get_ordered_ops())
    for dropped in ([paths[0]], paths):
        torch_drop = drop_blocks(model, dropped)
        bypassed = bypass_blocks(base, dropped)
        assert bypassed is not None and len(bypassed.get_ordered_ops()) < before
        assert len(base.get_ordered_ops()) == before  # a copy: the base IR is untouched
        with torch.no_grad():
            want = torch_drop(x).numpy()
        got = load_openvino_model(bypassed).infer({0: x.numpy()})[0]
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
        assert _runtime_ops(bypassed) == _runtime_ops(to_openvino(torch_drop, size, batch_size=2))
        assert bypass_checked(base, dropped, torch_drop, x) is not None


def load_openvino_model(model: ov.Model) -> ov.InferRequest:
    from practise_plugin.runtime.openvino import compile_cpu

    return compile_cpu(model, 1, exact_f32=True).create_infer_request()


def test_a_bypass_that_is_not_the_torch_drop_is_refused():
    """What the IR cannot show as one module's region is refused (None), and so is a bypass whose output is
    not the torch model's: the table then converts that network from torch as before."""
    from practise_plugin.runtime.openvino import bypass_blocks, bypass_checked, to_openvino
    from practise_plugin.surgery.drop import drop_blocks

    model = load_model("builtin").model.eval()
    base = to_openvino(model, FMNIST)
    x = torch.randn(1, *FMNIST, generator=torch.Generator().manual_seed(0))
    assert bypass_blocks(base, ["no.such.module"]) is None
    assert bypass_blocks(base, ["layer1.1"]) is not None
    assert bypass_checked(base, ["layer1.1"], drop_blocks(model, ["layer2.1"]), x) is None  # another block's drop


def test_the_latency_table_converts_its_base_once(monkeypatch):
    """Four blocks, one conversion (a spy counts the real calls); every drop is still timed and saves time."""
    import practise_plugin.runtime.openvino as openvino_runtime
    from practise_plugin.runtime.latency import block_latency_table

    model = load_model("builtin").model.eval()
    calls = []
    real = openvino_runtime.to_openvino
    monkeypatch.setattr(openvino_runtime, "to_openvino", lambda *a, **k: calls.append(a) or real(*a, **k))
    names = ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    table = block_latency_table(model, names, FMNIST, "openvino", num_threads=1, rounds=8, cache_dir=None,
                                progress=False)
    assert len(calls) == 1 and set(table.measured) == set(names)
    assert np.median(list(table.measured.values())) > 0
