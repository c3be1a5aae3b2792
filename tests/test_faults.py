"""What goes wrong when users (or attackers) hand us bad things: every case exits 2 with the fix named, no
traceback, nothing half written, and no file makes the tool import or run code nobody asked for."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from practise_plugin import ConfigError, DataError, ModelError, PractiseError, load_compressed, load_model
from practise_plugin.cli import main
from practise_plugin.core.files import dumps_json, work_dir_lock
from practise_plugin.data import load_images
from practise_plugin.models.builtin import FMNIST_CONFIG
from practise_plugin.models.checkpoint import FORMAT, save_compressed
from practise_plugin.nncf.config import NNCFStyleConfig
from practise_plugin.practise.recovery import RecoveryConfig, recover
from practise_plugin.strategies import build_config, list_strategies
from practise_plugin.surgery.drop import drop_blocks

FAST = ["--num-blocks", "1", "--recover-iters", "4", "--latency-backend", "macs", "--num-samples", "32",
        "--eval-samples", "64", "--quiet"]


def _fails(capsys, args: list[str], *messages: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for m in messages:
        assert m in err, err
    return err


def _record(tmp_path: Path, **fields) -> Path:
    """A checkpoint file with the given fields (None: the field is left out)."""
    path = tmp_path / "ckpt.pt"
    record = {"format": FORMAT, "base_spec": "builtin", "data_config": FMNIST_CONFIG.to_dict(), "surgery": [],
              "meta": {}, "state_dict": {}, **fields}
    torch.save({k: v for k, v in record.items() if v is not None}, path)
    return path


def _malicious(tmp_path: Path) -> Path:
    """A checkpoint whose base model is a function that creates a directory when called."""
    return _record(tmp_path, base_spec="tempfile:mkdtemp")


@pytest.fixture
def empty_tmpdir(tmp_path, monkeypatch):
    """TMPDIR of this process pointed at an empty folder: anything mkdtemp creates shows up there."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# 1. A checkpoint cannot make the tool run code ---------------------------------------------------------


def test_malicious_checkpoint_runs_nothing_through_the_api(tmp_path, empty_tmpdir):
    path = _malicious(tmp_path)
    with pytest.raises(ModelError, match="trust_code=True"):
        load_compressed(path)
    with pytest.raises(ModelError, match="--trust-code"):
        load_model(str(path))
    assert list(empty_tmpdir.iterdir()) == []  # mkdtemp was never called
    with pytest.raises(ModelError):  # with the opt-in, the code does run: the check is what stopped it
        load_compressed(path, trust_code=True)
    assert len(list(empty_tmpdir.iterdir())) == 1


@pytest.mark.parametrize("command", [["discover"], ["bench"], ["export", "--out", "ir"]])
def test_malicious_checkpoint_runs_nothing_through_the_cli(tmp_path, empty_tmpdir, capsys, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _malicious(tmp_path)
    _fails(capsys, [command[0], str(path), *command[1:]], "--trust-code")
    _fails(capsys, ["compress", "--model", str(path), "--out", str(tmp_path / "out"), *FAST], "--trust-code")
    assert list(empty_tmpdir.iterdir()) == [] and not (tmp_path / "ir").exists()


def test_malicious_checkpoint_in_a_fresh_process_creates_nothing(tmp_path):
    """The same through the installed ``practise`` entry point, in a process of its own."""
    path = _malicious(tmp_path)
    folder = tmp_path / "tmp"
    folder.mkdir()
    env = {**os.environ, "TMPDIR": str(folder)}
    run = subprocess.run([sys.executable, "-m", "practise_plugin", "discover", str(path)], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 2 and "--trust-code" in run.stderr and "Traceback" not in run.stderr
    assert list(folder.iterdir()) == []


# 4. Checkpoints without their keys, or naming themselves -----------------------------------------------


@pytest.mark.parametrize("fields,message", [
    ({"base_spec": None}, "lacks base_spec"),
    ({"state_dict": None}, "lacks state_dict"),
    ({"data_config": [1, 2]}, "data_config is not a mapping"),
    ({"data_config": {"input_size": [1, 28], "mean": [0], "std": [1]}}, "data_config is not"),
    ({"surgery": "drop everything"}, "surgery is not a list"),
    ({"state_dict": {"w": 3}}, "state_dict is not a mapping of names to tensors"),
])
def test_checkpoint_fields_are_checked_before_use(tmp_path, fields, message):
    with pytest.raises(ModelError, match=message):
        load_compressed(_record(tmp_path, **fields))


def test_a_checkpoint_naming_itself_is_a_clear_error(tmp_path):
    path = tmp_path / "self.pt"
    torch.save({"format": FORMAT, "base_spec": str(path), "data_config": FMNIST_CONFIG.to_dict(), "surgery": [],
                "meta": {}, "state_dict": {}}, path)
    with pytest.raises(ModelError, match="is a file; a checkpoint's base must be builtin"):
        load_compressed(path)
    with pytest.raises(ModelError, match="not a file"):
        load_compressed(tmp_path)


def test_unknown_surgery_is_refused(tmp_path, teacher):
    path = save_compressed(tmp_path / "s.pt", teacher.model, "builtin", teacher.data_config,
                           [{"op": "exec", "code": "print(1)"}])
    with pytest.raises(ModelError, match="unknown edit 'exec'"):
        load_compressed(path)


# 2, 3. Options and output paths are checked before any work ----------------------------------------------


def test_zero_latency_reduction_is_an_error_not_the_default(tmp_path, capsys):
    _fails(capsys, ["compress", "--latency-reduction", "0", "--out", str(tmp_path / "o")],
           "latency_reduction must be in (0, 1)")
    with pytest.raises(ConfigError, match="num_blocks must be >= 1"):
        build_config("practise", num_blocks=0)
    assert not (tmp_path / "o" / "model.pt").exists()


def test_output_paths_occupied_by_the_wrong_kind_fail_before_the_work(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "model.pt").mkdir(parents=True)
    _fails(capsys, ["compress", "--out", str(out), *FAST], "model.pt is a folder")
    assert not (out / ".work").exists()  # refused before the work directory was even made
    other = tmp_path / "other"
    other.mkdir()
    (other / "openvino").write_text("a file where the IR folder goes")
    _fails(capsys, ["compress", "--out", str(other), *FAST], "openvino is a file")
    assert not (other / ".work").exists()
    (tmp_path / "plain").write_text("x")
    _fails(capsys, ["compress", "--out", str(tmp_path / "plain" / "sub"), *FAST], "not writable")
    _fails(capsys, ["discover", "builtin", "--json", str(tmp_path)], "is a folder")


# 5. Output folders get the usual permissions -------------------------------------------------------------


def test_exported_folders_respect_the_umask(tmp_path):
    out = tmp_path / "out"
    assert main(["compress", "--out", str(out), *FAST]) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((out / "openvino").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((out / "openvino" / "model.xml").stat().st_mode) == 0o666 & ~mask


# 6. One run per work directory; a resume says so ---------------------------------------------------------


def test_a_second_run_into_the_same_directory_names_the_first(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from practise_plugin.core.files import work_dir_lock
        with work_dir_lock({str(out / '.work')!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _fails(capsys, ["compress", "--out", str(out), *FAST], f"another practise run (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    with work_dir_lock(out / ".work"):  # released when its holder died
        pass


def test_a_resumed_recovery_says_so_in_a_line_of_its_own(teacher, tiny, tmp_path, caplog):
    student = drop_blocks(teacher.model, ["layer2.1"])
    cfg = RecoveryConfig(iters=6, checkpoint_every=2, batch_size=16)

    def stop(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recover(student, teacher.model, tiny, cfg, work_dir=tmp_path, progress=False, on_step=stop)
    with caplog.at_level("INFO", logger="practise_plugin"):
        _, log = recover(student, teacher.model, tiny, cfg, work_dir=tmp_path, progress=False)
    assert log.resumed_from == 4
    assert any(r.getMessage().startswith("resuming recovery from step 4") for r in caplog.records)


# 9. Output hygiene ------------------------------------------------------------------------------------


def test_reports_are_strict_json(tmp_path):
    text = dumps_json({"inf": math.inf, "nan": [math.nan, 1.0], "np": np.float32(2.5), "t": torch.tensor([1, 2])})

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse) == {"inf": None, "nan": [None, 1.0], "np": 2.5, "t": [1, 2]}
    out = tmp_path / "out"
    assert main(["compress", "--out", str(out), *FAST]) == 0
    for name in ("report.json", "openvino/model.json"):
        json.loads((out / name).read_text(), parse_constant=refuse)


def test_cli_output_names_its_sets_states_defaults_and_suggests_the_next_step(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    assert "top-1 (%) on Fashion-MNIST test" in text and "next: benchmark_app -m " in text
    assert main(["discover", "builtin"]) == 0
    assert "next: practise bench builtin --all-blocks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    help_text = capsys.readouterr().out
    assert "(default: practise-out)" in help_text and "(default: fp32)" in help_text


def test_warnings_are_one_line_without_source():
    run = subprocess.run([sys.executable, "-m", "practise_plugin", "discover", "timm:resnet18"], capture_output=True,
                         text=True, check=True)
    lines = [ln for ln in run.stderr.splitlines() if "randomly initialised" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: timm:resnet18 is randomly initialised")
    assert "load_model(" not in run.stderr and "UserWarning" not in run.stderr and "CUDA" not in run.stderr


# Fuzzed inputs never produce a traceback ------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategy=st.sampled_from(["practise", "swd", "udfc"]),
       params=st.dictionaries(st.sampled_from(["latency_reduction", "num_blocks", "blocks", "recover_iters", "lr",
                                               "target", "mode", "ratio", "bits", "a_max", "seed", "nope"]), JSON,
                              max_size=4))
def test_fuzzed_strategy_options_raise_config_errors_only(strategy, params):
    assert strategy in list_strategies()
    try:
        build_config(strategy, params)
    except ConfigError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.dictionaries(st.sampled_from(["compression", "input_info", "target_device", "ignored_scopes", "model",
                                            "practise", "log_dir"]), JSON, max_size=4) | JSON)
def test_fuzzed_nncf_configs_raise_config_errors_only(raw):
    try:
        NNCFStyleConfig.from_dict(raw)
    except ConfigError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(st.binary(max_size=300), min_size=1, max_size=3), suffix=st.sampled_from([".png", ".jpg", ".bmp"]))
def test_fuzzed_image_files_raise_data_errors_only(tmp_path_factory, blobs, suffix):
    folder = tmp_path_factory.mktemp("imgs")
    for i, blob in enumerate(blobs):
        (folder / f"{i}{suffix}").write_bytes(blob)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "ok.png")
    try:
        images = load_images(folder, FMNIST_CONFIG)
        assert images.images.shape[1:] == (1, 28, 28)
    except DataError:
        pass


def test_every_user_error_is_a_practise_error():
    for cls in (ConfigError, DataError, ModelError):
        assert issubclass(cls, PractiseError)


# 8. The same seed on the same machine gives the same blocks and the same weights --------------------------


@pytest.mark.slow
def test_compress_is_deterministic_for_a_seed_with_measured_latency(tmp_path):
    """Two `practise compress` runs with OpenVINO latency (short budgets), same seed: the second reuses the
    per-machine measurements of the first, so the blocks are the same and the weights bitwise equal."""
    args = ["compress", "--num-samples", "64", "--recover-iters", "6", "--latency-reduction", "0.12",
            "--latency-time", "0.3", "--threads", "1", "--eval-samples", "64", "--no-export", "--quiet",
            "--latency-cache", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / x / "report.json").read_text()) for x in "ab")
    assert a["blocks"]["chosen"] == b["blocks"]["chosen"] and a["blocks"]["chosen"]
    assert a["selection"]["history"] == b["selection"]["history"]
    sa, sb = (load_compressed(tmp_path / x / "model.pt").model.state_dict() for x in "ab")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
