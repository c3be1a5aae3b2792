"""The practise strategy through the public API: targets, determinism, data-free, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from practise_plugin import (
    ConfigError,
    DataError,
    ImageSet,
    ModelError,
    TargetError,
    compress,
    load_compressed,
    save_compressed,
)
from practise_plugin.surgery.drop import DroppedBlock

FAST = dict(recover_iters=15, batch_size=32, latency_backend="macs", progress=False)


def dropped(model: nn.Module) -> list[str]:
    return sorted(n for n, m in model.named_modules() if isinstance(m, DroppedBlock))


def test_num_blocks_drop_fold_recover(teacher, tiny, tmp_path):
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    res = compress(teacher, tiny, "practise", num_blocks=2, **FAST)
    assert dropped(res.model) == sorted(res.stats["selection"]["blocks"]) and len(dropped(res.model)) == 2
    mse = res.stats["feature_mse"]
    assert mse["adaptors_folded"] < mse["dropped"] and mse["recovered"] < mse["dropped"]
    assert all(torch.equal(v, before[k]) for k, v in teacher.model.state_dict().items())  # teacher untouched
    path = save_compressed(tmp_path / "s.pt", res.model, teacher.spec, teacher.data_config, res.surgery)
    x = teacher.example_input(2)
    with torch.no_grad():
        assert torch.allclose(load_compressed(path).model(x), res.model(x), atol=1e-5)


def test_latency_target_is_met_as_measured(teacher, tiny):
    res = compress(teacher, tiny, "practise", latency_reduction=0.15, recover="none", **FAST)
    sel = res.stats["selection"]
    assert sel["measured"] >= 0.15 and sel["target"] == 0.15
    assert sel["history"][-1]["blocks"] == sel["blocks"]


def test_same_seed_same_blocks_and_weights(teacher, tiny):
    a = compress(teacher, tiny, "practise", num_blocks=3, seed=5, **FAST)
    b = compress(teacher, tiny, "practise", num_blocks=3, seed=5, **FAST)
    assert a.stats["selection"]["blocks"] == b.stats["selection"]["blocks"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_data_free(teacher):
    res = compress(teacher, None, "practise", num_blocks=1, synthetic_images=16, synthetic_iters=3, **FAST)
    assert res.stats["data"]["source"].startswith("synthetic") and res.stats["data"]["images"] == 16
    assert len(dropped(res.model)) == 1


def test_explicit_blocks_and_their_errors(teacher, tiny):
    res = compress(teacher, tiny, "practise", blocks=("layer1.2", "layer3.1"), recover="none", **FAST)
    assert dropped(res.model) == ["layer1.2", "layer3.1"]
    with pytest.raises(ModelError, match="not drop candidates of this model: layer1.0"):
        compress(teacher, tiny, "practise", blocks=("layer1.0",), **FAST)


def test_unreachable_target(teacher, tiny):
    with pytest.raises(TargetError, match="not reachable"):
        compress(teacher, tiny, "practise", latency_reduction=0.95, recover="none", **FAST)


def test_bad_inputs(teacher, tiny):
    with pytest.raises(ConfigError, match="unknown strategy 'practice'"):
        compress(teacher, tiny, "practice")
    with pytest.raises(DataError, match="expects \\(1, 28, 28\\)"):
        compress(teacher, ImageSet(torch.zeros(4, 3, 32, 32)), "practise", num_blocks=1, **FAST)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    from practise_plugin.models.bundle import ModelBundle

    bundle = ModelBundle(plain, teacher.data_config, "module")
    with pytest.raises(ModelError, match="no residual add at all"):
        compress(bundle, tiny, "practise", num_blocks=1, **FAST)
