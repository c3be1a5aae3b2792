"""Recovery by feature mimicking lowers the feature error, resumes after interruption, stops on NaN."""

from __future__ import annotations

import pytest
import torch

from practise_plugin import ConfigError, DataError, ImageSet, RecoveryConfig, TrainingError, drop_blocks, recover
from practise_plugin.graph.features import collect_features, feature_mse, find_feature_point


def _mse(model, teacher, data):
    point = find_feature_point(teacher.model, data.images[:1])
    return feature_mse(collect_features(model, point, data.images), collect_features(teacher.model, point, data.images))


def test_mimicking_reduces_feature_error(teacher, tiny):
    student = drop_blocks(teacher.model, ["layer1.1", "layer2.2", "layer3.3"])
    before = _mse(student, teacher, tiny)
    recovered, log = recover(student, teacher.model, tiny, RecoveryConfig(iters=40, seed=0), progress=False)
    assert _mse(recovered, teacher, tiny) < 0.8 * before
    assert log.losses[-1][1] < log.losses[0][1]
    assert _mse(student, teacher, tiny) == pytest.approx(before)  # the input student is not modified


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(teacher, tiny, tmp_path):
    student = drop_blocks(teacher.model, ["layer2.1"])
    cfg = RecoveryConfig(iters=20, checkpoint_every=10, batch_size=16, seed=3)
    full, _ = recover(student, teacher.model, tiny, cfg, progress=False)

    def stop_at_15(step, loss):
        if step == 15:
            raise Interrupt

    with pytest.raises(Interrupt):
        recover(student, teacher.model, tiny, cfg, work_dir=tmp_path, progress=False, on_step=stop_at_15)
    assert len(list(tmp_path.glob("recovery-*.pt"))) == 1
    resumed, log = recover(student, teacher.model, tiny, cfg, work_dir=tmp_path, progress=False)
    assert log.resumed_from == 10
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    assert not list(tmp_path.glob("recovery-*.pt"))  # removed once training completed


def test_nan_loss_stops_with_advice(teacher, tiny):
    bad = ImageSet(tiny.images.clone(), tiny.labels)
    bad.images[:] = float("nan")
    with pytest.raises(TrainingError, match="lower the learning rate"):
        recover(drop_blocks(teacher.model, ["layer1.1"]), teacher.model, bad, RecoveryConfig(iters=3), progress=False)


def test_cross_entropy_needs_labels(teacher, tiny):
    unlabelled = ImageSet(tiny.images, None)
    with pytest.raises(DataError, match="use 'mimic'"):
        recover(teacher.model, teacher.model, unlabelled, RecoveryConfig(method="bp", iters=1), progress=False)


def test_frozen_batchnorm_keeps_the_teachers_statistics(teacher, tiny):
    student = drop_blocks(teacher.model, ["layer3.3"])
    stats = {k: v.clone() for k, v in student.state_dict().items() if "running_" in k}
    weights = {k: v.clone() for k, v in student.state_dict().items() if k.endswith("conv1.weight")}
    frozen, _ = recover(student, teacher.model, tiny, RecoveryConfig(iters=3, batch_size=16, bn="frozen"), progress=False)
    after = frozen.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in stats.items())  # eval-mode BN: running stats untouched
    assert any(not torch.equal(v, after[k]) for k, v in weights.items())  # ... while the weights train
    trained, _ = recover(student, teacher.model, tiny, RecoveryConfig(iters=1, batch_size=16, bn="train"), progress=False)
    assert any(not torch.equal(v, trained.state_dict()[k]) for k, v in stats.items())  # the paper's mode updates them
    with pytest.raises(ConfigError, match="frozen"):
        recover(student, teacher.model, tiny, RecoveryConfig(iters=1, bn="eval"), progress=False)
