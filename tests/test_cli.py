"""The `practise` command end to end: help, the built-in demo, real folders, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from practise_plugin import load_compressed
from practise_plugin.cli import main
from practise_plugin.data.images import write_image_folder
from practise_plugin.models.builtin import _samples

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


@pytest.mark.slow
def test_default_demo_end_to_end(tmp_path):
    """`practise compress` exactly as the README's first command runs it (OpenVINO latency, 500 images)."""
    out = tmp_path / "demo"
    assert main(["compress", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["selection"]["measured"] >= 0.22  # the target, as measured during selection
    assert report["latency"]["reduction"] > 0.1  # and re-measured (interleaved A/B) for the report
    acc = report["accuracy"]
    assert acc["student"] > acc["teacher"] - 0.03 and acc["student"] > acc["points"][1]["value"]


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


def test_interrupt_leaves_no_partial_ir(tmp_path, monkeypatch, capsys):
    import practise_plugin.export.ir as pov

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pov.ov, "save_model", interrupted)
    out = tmp_path / "out"
    assert main(["compress", "--out", str(out), *FAST]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "openvino").exists() and not list(out.glob("*.tmp")) and not list(out.glob(".openvino*"))
