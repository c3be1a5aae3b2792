"""NNCF-style configs, run as users run them: real model, real images, real NNCF 3.x and OpenVINO calls.

The model is the built-in trained Fashion-MNIST ResNet; outputs are compared with it on real test images.
PRACTISE runs with small settings (two blocks, 20 recovery steps) to keep the file short on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from practise_plugin.cli import main
from practise_plugin.core.errors import ConfigError, DataError, PractiseError
from practise_plugin.models import builtin
from practise_plugin.nncf import create_compressed_model, run_config
from practise_plugin.nncf.config import load_config
from practise_plugin.nncf.legacy import legacy_nncf_available, register
from practise_plugin.nncf.schema import config_schema, known_algorithms
from practise_plugin.runtime.openvino import compile_cpu
from practise_plugin.strategies import list_strategies
from practise_plugin.surgery.drop import DroppedBlock

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "integrations" / "nncf"
FAST_PRACTISE = {"num_blocks": 2, "recover_iters": 20, "recoverability": "none", "batch_size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tiny_64():
    """64 real Fashion-MNIST training images (the tiny set and the calibration set)."""
    return builtin.tiny_set(64, seed=0)


@pytest.fixture(scope="module")
def test_images(teacher):
    """500 real Fashion-MNIST test images and the teacher's top-1 on them."""
    images = builtin.test_set(full=False).images[:500]
    with torch.no_grad():
        return images, teacher.model(images).argmax(1).numpy()


def example(name: str, **params) -> dict:
    """An example config from integrations/nncf, with the first entry's params replaced (speed)."""
    cfg = json.loads((EXAMPLES / name).read_text())
    if params:
        cfg["compression"][0]["params"] = params
    return cfg


def ir_top1(model: Path | ov.Model, images: torch.Tensor) -> np.ndarray:
    """Top-1 classes of an IR file or an in-memory OpenVINO model, one image per request."""
    request = compile_cpu(model).create_infer_request()
    return np.array([request.infer({0: images[i : i + 1].numpy()})[0].argmax() for i in range(len(images))])


def test_practise_then_int8_quantization(teacher, tiny_64, test_images, tmp_path):
    model, ctrl = create_compressed_model(teacher, example("practise_int8.json", **FAST_PRACTISE), tiny_64,
                                          latency_backend="macs", progress=False)
    practise, quantization = ctrl.statistics()["entries"]
    assert len(practise["blocks_dropped"]) == 2
    for name in practise["blocks_dropped"]:
        assert isinstance(ctrl.model.get_submodule(name), DroppedBlock)
        assert not isinstance(teacher.model.get_submodule(name), DroppedBlock)  # the input model is untouched
    assert practise["params_after"] < practise["params_before"]
    assert quantization["fake_quantize_nodes"] > 0 and quantization["calibration_images"] == 64
    assert quantization["subset_size"] == 64 and quantization["subset_size_requested"] == 300
    assert model is ctrl.ov_model

    xml = ctrl.export_model(tmp_path / "ir")
    images, teacher_top1 = test_images
    agreement = (ir_top1(xml, images) == teacher_top1).mean()
    assert agreement >= 0.95, f"INT8 student agrees with the teacher on {agreement:.3f} of test images"
    report = json.loads((tmp_path / "ir" / "report.json").read_text())
    assert report["precision"] == "int8" and report["entries"][0]["blocks_dropped"] == practise["blocks_dropped"]
    assert json.loads(xml.with_suffix(".json").read_text())["check"]["top1_agreement"] >= 0.9


def test_data_free_quantization_calibrates_on_synthetic_images(teacher, test_images):
    config = {"input_info": {"sample_size": [1, 1, 28, 28]}, "compression": [{"algorithm": "quantization"}]}
    _, ctrl = create_compressed_model(teacher, config, None, synthetic_images=32, synthetic_iters=20, progress=False)
    entry = ctrl.statistics()["entries"][0]
    assert entry["calibration_source"].startswith("synthetic") and entry["calibration_images"] == 32
    images, teacher_top1 = test_images
    assert (ir_top1(ctrl.ov_model, images) == teacher_top1).mean() >= 0.95


def test_cli_sparsity_then_weight_compression(tmp_path, capsys):
    config = tmp_path / "sparse_int8_weights.json"
    config.write_text(json.dumps({
        "input_info": {"sample_size": [1, 1, 28, 28]},
        "compression": [
            {"algorithm": "magnitude_sparsity", "sparsity_init": 0.1,
             "params": {"schedule": "multistep", "multistep_sparsity_levels": [0.1, 0.3, 0.5]}},
            {"algorithm": "weight_compression", "mode": "int8_sym"},
        ],
    }))
    with pytest.warns(UserWarning, match="params.schedule"):
        assert main(["nncf", str(config), "--model", "builtin", "--out", str(tmp_path / "ir"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "ir" / "report.json").read_text())
    sparsity, weights = report["entries"]
    assert sparsity["sparsity_level"] == 0.5  # the schedule's last level, applied at once
    assert sparsity["zero_fraction_of_pruned_weights"] == pytest.approx(0.5, abs=0.01)
    assert sparsity["not_applied"] == ["params.schedule"]
    assert weights["low_precision_constants"]["i8"] > 0 and report["precision"] == "weights-int8_sym"
    assert {p.name for p in (tmp_path / "ir").iterdir()} == {"model.xml", "model.bin", "model.json", "report.json"}
    assert "weight_compression" in capsys.readouterr().out


def test_run_config_script_exports_ir(teacher, tiny_64, test_images, tmp_path):
    spec = importlib.util.spec_from_file_location("run_config_script", EXAMPLES / "run_config.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = tmp_path / "int8_weights.json"
    config.write_text(json.dumps({"compression": {"algorithm": "weight_compression", "mode": "int8_asym"}}))
    assert script.main([str(config), "--model", "builtin", "--out", str(tmp_path / "ir"), "--no-progress"]) == 0
    images, teacher_top1 = test_images
    assert (ir_top1(tmp_path / "ir" / "model.xml", images) == teacher_top1).mean() >= 0.98


def test_udfc_example_is_data_free(teacher, test_images, tmp_path):
    ctrl = run_config(teacher, example("udfc.json"), None, tmp_path / "ir", progress=False)
    udfc, weights = ctrl.statistics()["entries"]
    assert udfc["params_after"] <= 0.85 * udfc["params_before"]  # 20% of the filters of every prunable conv
    assert weights["low_precision_constants"]["i8"] > 0
    images, teacher_top1 = test_images
    assert (ir_top1(tmp_path / "ir" / "model.xml", images) == teacher_top1).mean() >= 0.95


def test_swd_example_then_int8(teacher, tiny_64, test_images, tmp_path):
    cfg = example("swd.json", mode="structured", target=0.3, steps=20, batch_size=32)
    ctrl = run_config(teacher, cfg, tiny_64, tmp_path / "ir", progress=False)
    swd, quantization = ctrl.statistics()["entries"]
    assert swd["params_after"] <= 0.75 * swd["params_before"]
    assert quantization["fake_quantize_nodes"] > 0
    images, teacher_top1 = test_images
    assert (ir_top1(tmp_path / "ir" / "model.xml", images) == teacher_top1).mean() >= 0.9


def test_global_ignored_scopes_reach_nncf_prune(teacher):
    config = {"ignored_scopes": ["{re}fc/.*"],
              "compression": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}}
    _, ctrl = create_compressed_model(teacher, config, None, progress=False)
    entry = ctrl.statistics()["entries"][0]
    assert entry["pruned_tensors"] == 36  # 36 convolutions; the fc layer is ignored
    assert (ctrl.model.fc.weight == 0).sum() == 0 and (ctrl.model.conv1.weight == 0).any()


def test_schema_lists_strategies_and_native_algorithms():
    enum = config_schema()["$defs"]["entry"]["properties"]["algorithm"]["enum"]
    assert set(list_strategies()) <= set(enum) and {"quantization", "magnitude_sparsity", "weight_compression"} <= set(enum)
    assert enum == known_algorithms()
    for path in EXAMPLES.glob("*.json"):
        if all(e["algorithm"] in enum for e in json.loads(path.read_text())["compression"]):
            assert load_config(path).entries


@pytest.mark.parametrize("legacy, alternative", [
    ("filter_pruning", '"udfc"'), ("rb_sparsity", "magnitude_sparsity"), ("const_sparsity", "fine-tune"),
    ("movement_sparsity", '"swd"'), ("knowledge_distillation", '"practise"'),
])
def test_legacy_algorithms_name_the_alternative(legacy, alternative):
    with pytest.raises(ConfigError, match=f"{legacy}.*{alternative}"):
        load_config({"compression": [{"algorithm": "quantization"}, {"algorithm": legacy}]})


@pytest.mark.parametrize("config, message", [
    ({"compression": [{"algorithm": "practice"}]}, "unknown algorithm 'practice' \\(did you mean 'practise'"),
    ({"input_info": {"sample_size": [1, 1, 28, 28]}}, "'compression' is a required property"),
    ({"compression": {"algorithm": "quantization", "presett": "mixed"}}, "compression.*'presett' was unexpected"),
    ({"compression": [{"algorithm": "practise", "params": {"num_blockz": 2}}]}, "params.*'num_blockz'"),
    ({"compression": [{"algorithm": "practise", "params": {"num_blocks": "two"}}]}, "params.num_blocks"),
    ({"compression": [{"params": {}}]}, "compression\\[0\\]: 'algorithm' is a required property"),
    ({"input_info": {"sample_size": [1, 28, 28]}, "compression": {"algorithm": "quantization"}}, "sample_size"),
    ({"compression": 3}, "expected array or object"),
    ({"compression": {"algorithm": "quantization"}, "practise": {"latency_backend": "mac"}}, "latency_backend"),
])
def test_malformed_configs_fail_with_the_place(config, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config)


@pytest.mark.parametrize("compression, message", [
    ([{"algorithm": "quantization"}, {"algorithm": "practise"}], "move 'practise' before it"),
    ([{"algorithm": "weight_compression"}, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}],
     "move 'magnitude_sparsity' before it"),
    ([{"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}, {"algorithm": "practise"}],
     "move magnitude_sparsity after it"),
    ([{"algorithm": "quantization"}, {"algorithm": "weight_compression"}], "keep one of them"),
])
def test_order_is_validated(compression, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"compression": compression})


@pytest.mark.parametrize("entry, message", [
    ({"algorithm": "quantization", "target_scopes": ["x"]}, "target_scopes.*ignored_scopes instead"),
    ({"algorithm": "quantization", "weights": {"bits": 4}}, "weights.bits=4.*weight_compression"),
    ({"algorithm": "quantization", "initializer": {"precision": {"type": "hawq"}}}, "mixed-precision"),
    ({"algorithm": "magnitude_sparsity"}, "sets no sparsity level"),
    ({"algorithm": "magnitude_sparsity", "sparsity_init": 0.5, "weight_importance": "normed_abs"}, '"weight_importance": "abs"'),
    ({"algorithm": "practise", "params": {"num_blocks": 0}}, "num_blocks must be >= 1"),
])
def test_entries_that_cannot_run_fail_before_any_work(teacher, entry, message):
    config = {"compression": [{"algorithm": "practise", "params": FAST_PRACTISE}, entry]}
    with pytest.raises(ConfigError, match=message):
        create_compressed_model(teacher, config, builtin.tiny_set(16), progress=False)


def test_strategy_that_needs_data_says_so(teacher):
    with pytest.raises(DataError, match="needs labelled images"):
        create_compressed_model(teacher, {"compression": {"algorithm": "swd"}}, None)


def test_ignored_scope_names_must_exist(teacher, tiny_64):
    config = {"compression": {"algorithm": "quantization", "ignored_scopes": ["ResNet/Conv2d[conv1]/conv2d_0"]}}
    with pytest.raises(ConfigError, match="not found.*ignored_scopes name nodes of the model.*'__module.fc/aten::linear/MatMul'"):
        create_compressed_model(teacher, config, tiny_64, progress=False)


def test_input_channels_must_match_the_model(teacher):
    config = {"input_info": {"sample_size": [1, 3, 224, 224]}, "compression": {"algorithm": "quantization"}}
    with pytest.raises(ConfigError, match="3 channels but builtin:fmnist_resnet34q takes 1"):
        create_compressed_model(teacher, config, None)


def test_out_dir_with_other_files_is_refused_before_work(teacher, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PractiseError, match="already holds other files"):
        run_config(teacher, {"compression": {"algorithm": "weight_compression"}}, None, tmp_path)


@pytest.mark.skipif(not legacy_nncf_available(), reason="needs NNCF 2.x (nncf.torch.create_compressed_model and its "
                    "algorithm registry); NNCF 3.x is installed and removed both")
def test_nncf2_create_compressed_model_accepts_practise(teacher, tiny_64):
    from nncf import NNCFConfig
    from nncf.torch import create_compressed_model as nncf2_create_compressed_model

    from practise_plugin.nncf.legacy import register_init_args

    assert "practise" in register()
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 28, 28]},
                                   "compression": [{"algorithm": "practise", "params": FAST_PRACTISE}]})
    register_init_args(config, tiny_64, teacher.data_config, latency_backend="macs", progress=False)
    ctrl, model = nncf2_create_compressed_model(builtin.teacher().model, config)
    dropped = [b for op in ctrl.stats["surgery"] for b in op["blocks"]]
    assert len(dropped) == 2 and all(isinstance(model.get_submodule(n), DroppedBlock) for n in dropped)


def test_nncf2_registration_explains_itself_under_nncf3():
    if legacy_nncf_available():
        pytest.skip("NNCF 2.x is installed")
    with pytest.raises(PractiseError, match="NNCF 2.x is not installed"):
        register()


# NNCF 2.x-shaped files, as users hold them: training keys at the top level, comments, legacy names -------

NNCF2_SHAPED = """{
    // The shape of NNCF 2.x's sample configs: its training script reads the top-level keys.
    "model": "resnet34", "pretrained": false, "num_classes": 10, "batch_size": 32, "epochs": 70,
    "dataset": "FashionMNIST", "multiprocessing_distributed": true, "workers": 4, "save_freq": 5,
    "optimizer": {"type": "SGD", "base_lr": 0.001, "schedule_type": "multistep", "steps": [50, 60]},
    "input_info": {"sample_size": [2, 1, 28, 28]},   /* a batch of 2: only the tracing batch */
    "target_device": "VPU",
    "compression": [
        {"algorithm": "practise", "params": {"num_blocks": 2, "recover_iters": 10, "recoverability": "none"}},
        {
            "algorithm": "magnitude_sparsity", "sparsity_init": 0.1,
            "params": {"schedule": "multistep", "multistep_steps": [5, 10], "multistep_sparsity_levels": [0.1, 0.3],
                       "sparsity_freeze_epoch": 50},
        },
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 32},
                                                      "batchnorm_adaptation": {"num_bn_adaptation_samples": 16}}},
    ],
}"""


def test_check_reads_an_nncf2_file_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.json").write_text(NNCF2_SHAPED)
    assert main(["nncf", "cfg.json", "--model", "builtin", "--check"]) == 0
    out = capsys.readouterr().out
    assert "can run" in out and "runs here (strategy 'practise')" in out and "delegated to nncf.prune" in out
    for key in ("model", "epochs", "optimizer", "multiprocessing_distributed", "save_freq"):
        assert f"top-level key not used: {key} (" in out
    assert "'VPU' is read as 'NPU'" in out and "IR batch 1" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"]


@pytest.mark.parametrize("entry, replacement", [
    ({"algorithm": "binarization", "mode": "xnor"}, "udfc"),
    ({"algorithm": "filter_pruning", "params": {"interlayer_ranking_types": ["learned_ranking"]}}, '"practise"'),
    ({"algorithm": "quantization", "initializer": {"precision": {"type": "manual", "bitwidth_per_scope": [[4, "x"]]}}},
     "weight_compression"),
    ({"algorithm": "rb_sparsity", "sparsity_init": 0.05}, "magnitude_sparsity"),
    ({"algorithm": "knowledge_distillation", "type": "mse"}, "mimicking"),
])
def test_check_refuses_what_cannot_run_and_names_the_replacement(tmp_path, capsys, entry, replacement):
    config = json.loads(read_config(NNCF2_SHAPED))
    config["compression"][2] = entry  # in place of the quantization entry
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    assert main(["nncf", str(tmp_path / "cfg.json"), "--model", "builtin", "--check"]) == 2
    out = capsys.readouterr().out
    assert "refused" in out and replacement in out and "did you mean" not in out
    assert "cannot run as it is" in out


def read_config(text: str) -> str:
    from practise_plugin.nncf.config import read_json

    return json.dumps(read_json(text))


def test_an_nncf2_file_runs_with_its_training_keys(teacher, tiny_64, tmp_path):
    (tmp_path / "cfg.json").write_text(NNCF2_SHAPED)
    with pytest.warns(UserWarning, match="'VPU' is read as 'NPU'"):
        ctrl = run_config(teacher, tmp_path / "cfg.json", tiny_64, tmp_path / "ir", latency_backend="macs",
                          progress=False)
    stats = ctrl.statistics()
    assert stats["batch_size"] == 1 and stats["target_device"] == "NPU"  # the IR batch is 1, not sample_size's 2
    assert {"model", "epochs", "optimizer"} <= set(stats["not_used"])
    practise_entry = stats["entries"][0]
    assert practise_entry["config"]["batch_size"] == 32  # the top-level batch_size, as the strategy's default
    inputs = ov.Core().read_model(tmp_path / "ir" / "model.xml").inputs
    assert list(inputs[0].get_partial_shape().to_shape()) == [1, 1, 28, 28]
