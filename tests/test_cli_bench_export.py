"""`practise bench`, `practise export` and the deployment recipe, run as a user runs them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from practise_plugin.cli import main
from practise_plugin.data import sample_tiny_set
from practise_plugin.data.images import load_images, write_image_folder
from practise_plugin.models.builtin import train_pool
from practise_plugin.models.builtin.fmnist import FMNIST_CLASSES
from practise_plugin.models.loading import load_model

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory) -> Path:
    """40 real Fashion-MNIST images as PNG files, one sub-folder per class named as the model's classes."""
    images, labels = train_pool()
    idx = sample_tiny_set(labels, 40, seed=1)
    return write_image_folder(images[idx], labels[idx], tmp_path_factory.mktemp("png") / "images", list(FMNIST_CLASSES))


def _deploy():
    spec = importlib.util.spec_from_file_location("deploy", ROOT / "integrations" / "openvino" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_macs_table_as_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "builtin", "--backend", "macs", "--all-blocks", "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert [b["name"] for b in report["blocks"]] == [f"layer{s}.{i}" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3))
                                                     for i in range(1, n)]
    for b in report["blocks"]:
        assert b["saved_fraction"] == pytest.approx(b["macs"] / report["macs_per_image"])
    printed = capsys.readouterr().out
    assert "layer4.2" in printed and "saved" in printed


def test_bench_openvino_two_blocks(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "builtin", "--threads", "1", "--blocks", "layer4.1", "--time", "0.3",
                 "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["base"]["backend"] == "openvino" and report["base"]["threads"] == 1
    assert report["base"]["runs"] >= 10 and report["base"]["median_ms"] > 0
    for b in report["blocks"]:
        lo, hi = b["saved_spread"]
        assert lo <= b["saved_fraction"] <= hi and b["macs"] > 0 and b["params"] > 0


def test_bench_errors_name_the_fix(capsys):
    assert main(["bench", "builtin", "--backend", "macs", "--blocks", "layer9.9"]) == 2
    err = capsys.readouterr().err
    assert "layer9.9" in err and "layer1.1" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["bench", "builtin", "--backend", "tensorrt"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_bench_on_cuda_without_a_gpu(capsys):
    assert main(["bench", "builtin", "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_export_int8_builtin_uses_the_shipped_images(tmp_path, capsys):
    out = tmp_path / "ir"
    assert main(["export", "builtin", "--out", str(out), "--precision", "int8", "--num-samples", "64"]) == 0
    cfg = json.loads((out / "model.json").read_text())
    assert cfg["precision"] == "int8" and cfg["class_names"] == list(FMNIST_CLASSES)
    assert cfg["check"]["top1_agreement"] >= 0.9 and cfg["check"]["mean_cosine"] >= 0.98
    assert "top-1 agreement" in capsys.readouterr().out


def test_export_int8_without_data_for_other_models(tmp_path, capsys):
    assert main(["export", "timm:resnet18", "--input-size", "3", "32", "32", "--precision", "int8",
                 "--out", str(tmp_path / "ir")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "synthetic" in err
    assert not (tmp_path / "ir").exists()


def test_export_from_image_files_then_deploy(tmp_path, png_folder, capsys):
    out = tmp_path / "ir"
    assert main(["export", "builtin", "--out", str(out), "--precision", "fp16", "--data", str(png_folder)]) == 0
    assert "max |IR - torch|" in capsys.readouterr().out

    assert _deploy().main([str(out), str(png_folder), "--threads", "1", "--min-runs", "60"]) == 0
    lines = capsys.readouterr().out.splitlines()
    per_image = [ln for ln in lines if ln.endswith("%") and ".png:" in ln]
    assert len(per_image) == 40 and all(ln.count("%") == 5 for ln in per_image)  # top-5 for every image
    # The recipe's answers are the torch model's answers on the same files (fp16 weights change no top-1 here).
    model = load_model("builtin")
    imgs = load_images(png_folder, model.data_config)
    with torch.no_grad():
        expected = model.model(imgs.images).argmax(1)
    files = sorted(png_folder.rglob("*.png"))
    got = {ln.split(":")[0]: ln.split(": ")[1].split(" ")[0] for ln in per_image}
    assert [got[f.name] for f in files] == [FMNIST_CLASSES[i] for i in expected]
    (acc_line,) = [ln for ln in lines if ln.startswith("top-1 accuracy")]
    assert float(acc_line.rsplit("= ", 1)[1]) >= 0.85  # the trained teacher on real images
    (lat_line,) = [ln for ln in lines if ln.startswith("latency")]
    assert "60 runs" in lat_line and "median" in lat_line


def test_deploy_reports_a_missing_ir(tmp_path, capsys):
    assert _deploy().main([str(tmp_path / "nothing.xml"), str(tmp_path)]) == 2
    assert "not an OpenVINO IR" in capsys.readouterr().err
