"""The `practise` command end to end: help, the built-in demo, real folders, and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from practise_plugin import load_compressed
from practise_plugin.cli import main
from practise_plugin.data.images import write_image_folder
from practise_plugin.models.builtin import _samples
from practise_plugin.models.builtin.fmnist import FMNIST_CLASSES

COMMANDS = ["compress", "nncf", "discover", "bench", "export", "strategies"]
FAST = ["--num-blocks", "2", "--recover-iters", "10", "--latency-backend", "macs", "--num-samples", "64",
        "--eval-samples", "300", "--quiet"]


def test_help_of_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    top = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in top
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert f"usage: practise {cmd}" in capsys.readouterr().out


def test_compress_help_lists_every_strategy_option(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    out = capsys.readouterr().out
    for flag in ("--latency-reduction", "--recover-iters", "--recoverability", "--ratio", "--bits", "--a-max", "--target"):
        assert flag in out


def test_strategies_and_discover(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("practise", "swd", "udfc"))
    assert main(["strategies", "practise"]) == 0
    assert "latency_reduction" in capsys.readouterr().out
    assert main(["discover", "builtin"]) == 0
    assert "12 drop candidates" in capsys.readouterr().out


def test_compress_builtin_fast(tmp_path):
    out = tmp_path / "out"
    assert main(["compress", "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["blocks"]["chosen"]) == 2 and report["latency"]["reduction"] > 0
    assert report["macs"]["student"] < report["macs"]["teacher"]
    assert [p["label"] for p in report["accuracy"]["points"]] == ["teacher", "blocks dropped, no recovery", "compressed"]
    assert report["accuracy"]["eval_data"]["images"] == 300
    assert (out / "report.png").stat().st_size > 10_000 and (out / "openvino" / "model.xml").exists()
    assert report["export"]["checked"] and report["export"]["max_abs_err"] is not None
    student = load_compressed(out / "model.pt").model
    assert sum(p.numel() for p in student.parameters()) == report["params"]["student"]


def test_compress_real_folders_with_udfc(tmp_path):
    s = _samples()
    folder = write_image_folder(s["train_images"][:40], s["train_labels"][:40], tmp_path / "imgs")
    out = tmp_path / "out"
    rc = main(["compress", "--strategy", "udfc", "--ratio", "0.2", "--data", str(folder), "--num-samples", "30",
               "--eval-data", str(folder), "--out", str(out), "--latency-backend", "macs", "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"] == "udfc" and report["accuracy"]["eval_data"]["images"] == 40
    assert report["params"]["student"] < report["params"]["teacher"]
    assert report["accuracy"]["metric"] == "top-1 (%)"  # ten folders for ten outputs: the order it was trained on


def test_folders_that_are_not_the_models_classes(tmp_path, capsys):
    """Two folders of photos for a ten-class model: their labels say nothing of its outputs, so the report
    scores agreement with the teacher and says why, and a strategy that trains on labels is refused."""
    s = _samples()
    pets = write_image_folder(s["train_images"][:24], np.arange(24) % 2, tmp_path / "pets", ["cat", "dog"])
    out = tmp_path / "out"
    assert main(["compress", "--strategy", "udfc", "--ratio", "0.2", "--data", str(pets), "--eval-data", str(pets),
                 "--out", str(out), "--latency-backend", "macs"]) == 0
    acc = json.loads((out / "report.json").read_text())["accuracy"]
    assert json.loads((out / "openvino" / "model.json").read_text())["class_names"] == list(FMNIST_CLASSES)
    assert acc["metric"] == "top-1 agreement with the teacher (%)" and acc["teacher"] == 1.0
    assert "cat, dog are none of its class names" in acc["eval_data"]["labels_not_used"]
    assert "not the model's 10 classes" in " ".join(capsys.readouterr().err.split())  # rich wraps the line
    assert main(["compress", "--strategy", "swd", "--data", str(pets), "--out", str(tmp_path / "swd")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trains on labels" in err and "name the folders after the model's classes" in err


@pytest.mark.slow
def test_default_demo_end_to_end(tmp_path):
    """`practise compress` as the README's first command runs it (OpenVINO latency, 500 images, 10k evaluation
    images, IR export), but with 100 of its 500 mimicking iterations: recovery took 317 of its 447 s in a worker, and
    the 500-iteration figures README quotes are measured by ``benchmarks/scale.py --parts demo``."""
    out = tmp_path / "demo"
    assert main(["compress", "--recover-iters", "100", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["selection"]["measured"] >= 0.22  # the target, as measured during selection
    assert report["latency"]["reduction"] > 0.1  # and re-measured (interleaved A/B) for the report
    acc = report["accuracy"]
    dropped = acc["points"][1]["value"]  # the blocks dropped, before recovery
    assert acc["student"] > acc["teacher"] - 0.03
    assert acc["student"] - dropped >= 0.5 * (acc["teacher"] - dropped) > 0  # recovery wins back half the drop


def _bad(tmp_path, capsys, args: list[str], message: str) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_bad_inputs_exit_2_with_the_fix(tmp_path, capsys):
    out = str(tmp_path / "o")
    _bad(tmp_path, capsys, ["compress", "--model", "timm:resnet5O", "--out", out], "Did you mean: resnet50")
    _bad(tmp_path, capsys, ["compress", "--data", str(tmp_path / "missing"), "--out", out], "does not exist")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(corrupt / "a.png")
    (corrupt / "b.jpg").write_text("not an image")
    _bad(tmp_path, capsys, ["compress", "--data", str(corrupt), "--out", out], "b.jpg is not a readable image")
    _bad(tmp_path, capsys, ["compress", "--strategy", "pratcise", "--out", out], "did you mean 'practise'")
    _bad(tmp_path, capsys, ["compress", "--latency-reduction", "0.95", "--latency-backend", "macs", "--recover", "none",
                            "--num-samples", "32", "--no-export", "--out", out, "--quiet"], "not reachable")
    (tmp_path / "file").write_text("x")
    _bad(tmp_path, capsys, ["compress", "--out", str(tmp_path / "file" / "sub")], "not writable")
    assert not (tmp_path / "o" / "report.json").exists() and not (tmp_path / "o" / "model.pt").exists()


def test_input_errors_leave_no_output_folder(tmp_path, capsys):
    """Bad input found once the model is loaded (an unreadable image, a model that is not there, an unknown
    option) leaves the disk as it was: no empty --out folder, nor its missing parents (both were left)."""
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(corrupt / "a.png")
    (corrupt / "b.jpg").write_text("not an image")
    out = tmp_path / "new" / "out"
    _bad(tmp_path, capsys, ["compress", "--data", str(corrupt), "--out", str(out)], "b.jpg is not a readable image")
    _bad(tmp_path, capsys, ["compress", "--model", "timm:resnet5O", "--out", str(out)], "Did you mean: resnet50")
    _bad(tmp_path, capsys, ["compress", "--strategy", "udfc", "--ratio", "2", "--out", str(out)], "ratio")
    assert not (tmp_path / "new").exists()
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not os.access(read_only, os.W_OK):  # root writes anywhere: nothing to refuse there
            _bad(tmp_path, capsys, ["compress", "--out", str(read_only / "a" / "b")], "not writable")
    finally:
        read_only.chmod(0o700)


@pytest.mark.parametrize(("args", "flag"), [
    (["compress", "--num-samples", "0"], "--num-samples"), (["compress", "--eval-samples", "-5"], "--eval-samples"),
    (["compress", "--latency-batch-size", "0"], "--latency-batch-size"), (["compress", "--threads", "0"], "--threads"),
    (["compress", "--latency-time", "0"], "--latency-time"), (["compress", "--latency-time", "nan"], "--latency-time"),
    (["nncf", "cfg.json", "--model", "builtin", "--num-samples", "0"], "--num-samples"),
    (["export", "builtin", "--batch-size", "0"], "--batch-size"),
    (["export", "builtin", "--input-size", "1", "0", "28"], "--input-size"), (["bench", "builtin", "--time", "-1"], "--time"),
])
def test_a_zero_or_negative_count_is_refused_while_parsing(tmp_path, capsys, args, flag):
    """Once `--num-samples 0` fell through to the demo's 500 images and ran for minutes; now every count, size
    and time is refused before anything loads: argparse's exit status 2, the flag named, no folder made."""
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        main(args if args[0] == "bench" else [*args, "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and ("must be" in err or "expected" in err)
    assert not out.exists()


def test_the_library_refuses_a_zero_count_before_making_the_output_folder(tmp_path):
    from practise_plugin.api import compress_job
    from practise_plugin.core.errors import DataError

    with pytest.raises(DataError, match=r"num_samples \(--num-samples\) must be at least 1, got 0"):
        compress_job(tmp_path / "o", "builtin", num_samples=0, progress=False)
    with pytest.raises(DataError, match="eval_samples"):
        compress_job(tmp_path / "o", "builtin", eval_samples=0, progress=False)
    assert not (tmp_path / "o").exists()


def test_interrupt_leaves_no_partial_ir(tmp_path, monkeypatch, capsys):
    import practise_plugin.export.ir as pov

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pov.ov, "save_model", interrupted)
    out = tmp_path / "out"
    assert main(["compress", "--out", str(out), *FAST]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "openvino").exists() and not list(out.glob("*.tmp")) and not list(out.glob(".openvino*"))
