"""SWD on the real built-in Fashion-MNIST teacher and real Fashion-MNIST images.

Each test runs the public API the way the README shows and asserts a property that could fail:
the schedule, the masks' budget, the penalty's effect, the real channel removal, resume, errors.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision

from practise_plugin.core.errors import ConfigError, DataError, TargetError, TrainingError
from practise_plugin.core.strategy import CompressionContext
from practise_plugin.data import ImageSet
from practise_plugin.models.builtin import FMNIST_CONFIG, tiny_set
from practise_plugin.models.builtin import test_set as fmnist_test_set
from practise_plugin.models.checkpoint import load_compressed, save_compressed
from practise_plugin.models.loading import load_model
from practise_plugin.strategies import build_config, get_strategy
from practise_plugin.surgery.channel_removal import remove_channels
from practise_plugin.swd.config import SWDConfig
from practise_plugin.swd.masks import ChannelCriterion, MagnitudeCriterion
from practise_plugin.swd.prune import hard_prune
from practise_plugin.swd.regularizer import SWDRegularizer, swd_strength
from practise_plugin.swd.strategy import magnitude_prune_finetune
from practise_plugin.swd.train import make_schedule

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; small batches gain nothing from more
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return load_model("builtin").model


@pytest.fixture(scope="module")
def images() -> ImageSet:
    return tiny_set(96, seed=1)


def _ctx(tmp_path=None) -> CompressionContext:
    return CompressionContext(FMNIST_CONFIG, work_dir=tmp_path, progress=False)


def test_strength_schedule_is_the_papers_geometric_ramp():
    cfg = SWDConfig(a_min=0.1, a_max=1e5)
    reg = SWDRegularizer(load_model("builtin").model, cfg, total_steps=60)
    values = []
    for _ in range(61):
        values.append(reg.a())
        reg.step()
    assert values[0] == pytest.approx(0.1, rel=1e-12)
    assert values[-1] == pytest.approx(1e5, rel=1e-12)
    assert all(b > a for a, b in zip(values, values[1:]))
    assert values[30] == pytest.approx(math.sqrt(0.1 * 1e5), rel=1e-12)  # geometric mean at T/2
    assert reg.a(17) == pytest.approx(0.1 * (1e5 / 0.1) ** (17 / 60), rel=1e-12)
    assert swd_strength(17, 60, 0.1, 1e5) == reg.a(17)


def test_warmup_rises_linearly_then_the_milestones_decay():
    config = SWDConfig(epochs=4, batch_size=10, lr=0.1, lr_milestones=(0.5,), warmup_epochs=1.5)
    schedule = make_schedule(100, config)  # 10 steps per epoch, 40 in all, 15 of warm-up
    lrs = [schedule.lr_at(t) for t in range(schedule.total_steps)]
    assert schedule.warmup_steps == 15
    assert lrs[:15] == pytest.approx([0.1 * (t + 1) / 15 for t in range(15)])
    assert lrs[15:20] == pytest.approx([0.1] * 5) and lrs[20:] == pytest.approx([0.01] * 20)
    assert make_schedule(100, SWDConfig(epochs=4, batch_size=10)).lr_at(0) == 0.01  # off by default


@pytest.mark.parametrize("target", [0.5, 0.99])
def test_unstructured_mask_removes_target_fraction_of_smallest_weights(teacher, target):
    decision = MagnitudeCriterion(teacher, target).decide()
    removed = 1 - decision.kept_fraction
    assert abs(removed - target) < 0.01
    crit = MagnitudeCriterion(teacher, target)
    masked = torch.cat([p.detach().abs()[~m] for p, m in zip(crit.params, decision.masks)])
    kept = torch.cat([p.detach().abs()[m] for p, m in zip(crit.params, decision.masks)])
    assert masked.max() <= kept.min()  # global, not per layer


@pytest.mark.parametrize("name", ["teacher", "mobilenet_v2"])
@pytest.mark.parametrize("target", [0.6, 0.95])
def test_structured_count_matches_real_channel_removal(teacher, name, target):
    if name == "teacher":
        model, example = copy.deepcopy(teacher), EXAMPLE
    else:  # depthwise convs and non-residual coupling, at a small input size
        torch.manual_seed(0)
        model, example = torchvision.models.mobilenet_v2(num_classes=10).eval(), torch.zeros(1, 3, 32, 32)
    total = sum(p.numel() for p in model.parameters())
    crit = ChannelCriterion(model, target, example)
    decision = crit.decide()
    remove_channels(model, example, crit.removal_plan(decision.removed))
    actual = sum(p.numel() for p in model.parameters())
    assert actual == decision.kept  # the count SWD optimises is the count removal really gives
    # SWD decays exactly what the removal deletes: filters, BatchNorm entries and the consumers' input slices
    assert sum(int((~m).sum()) for m in decision.masks) == total - actual
    assert actual <= (1 - target) * total
    assert abs(actual / total - (1 - target)) < 0.01
    assert model(example).shape == (1, 10)


def test_structured_target_beyond_reach_says_what_is_reachable(teacher):
    with pytest.raises(TargetError, match="at most 0.9"):
        ChannelCriterion(copy.deepcopy(teacher), 0.9999, EXAMPLE)


def test_penalty_gradient_equals_apply_to_grad(teacher, images):
    model = copy.deepcopy(teacher)
    reg = SWDRegularizer(model, SWDConfig(mode="structured", target=0.7), 10, EXAMPLE)
    for _ in range(4):
        reg.step()
    reg.penalty().backward()
    via_autograd = [p.grad.clone() for p in reg.params]
    model.zero_grad(set_to_none=True)
    reg.apply_to_grad()
    for a, b in zip(via_autograd, (p.grad for p in reg.params)):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in via_autograd)


def _short_run(model, images, reg: SWDRegularizer | None, steps: int = 8) -> None:
    """A user's own loop, as in the README: SWD added after backward, one regulariser step per batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    for i in range(steps):
        x, y = images.images[(i * 32) % 96 :][:32], images.labels[(i * 32) % 96 :][:32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if reg is not None:
            reg.apply_to_grad()
            reg.step()
        opt.step()


@pytest.mark.parametrize("mode", ["unstructured", "structured"])
def test_penalty_shrinks_masked_weights_and_spares_kept_ones(teacher, images, mode):
    cfg = SWDConfig(mode=mode, target=0.9 if mode == "unstructured" else 0.6, a_min=1e4, a_max=1e4)
    with_swd, without = copy.deepcopy(teacher), copy.deepcopy(teacher)
    reg = SWDRegularizer(with_swd, cfg, total_steps=8, example_input=EXAMPLE)
    masks = [m.clone() for m in reg.masks()]
    ref = SWDRegularizer(without, cfg, total_steps=8, example_input=EXAMPLE)  # same params, never applied
    _short_run(with_swd, images, reg)
    _short_run(without, images, None)

    def norms(r):
        masked = math.sqrt(sum(float((p.detach() * ~m).pow(2).sum()) for p, m in zip(r.params, masks)))
        kept = math.sqrt(sum(float((p.detach() * m).pow(2).sum()) for p, m in zip(r.params, masks)))
        return masked, kept

    (m_swd, k_swd), (m_ref, k_ref) = norms(reg), norms(ref)
    assert m_swd < 0.2 * m_ref  # decayed far more than by plain training (about 0.07 here)
    assert abs(k_swd - k_ref) / k_ref < 0.005  # the weights that stay are left alone (about 1e-4)


def test_structured_hard_prune_shrinks_model_and_matches_masked_model(teacher, tmp_path):
    test = fmnist_test_set(full=False).subset(range(256))
    model = copy.deepcopy(teacher)
    crit = ChannelCriterion(model, 0.8, EXAMPLE)
    decision = crit.decide()
    masked = copy.deepcopy(model)  # what SWD converges to: removed channels' gamma and beta at zero
    masked_params = ChannelCriterion(masked, 0.8, EXAMPLE).params
    with torch.no_grad():
        for p, m in zip(masked_params, decision.masks):
            p.mul_(m)
    surgery, fixed = hard_prune(model, crit, decision, EXAMPLE)
    assert fixed is None and surgery[0]["op"] == "torch_pruning"
    params = sum(p.numel() for p in model.parameters())
    assert params == decision.kept <= 0.2 * crit.total
    with torch.no_grad():
        torch.testing.assert_close(model(test.images), masked(test.images), atol=1e-4, rtol=1e-4)
    # the edit replays from a weights-only checkpoint onto a freshly built teacher
    path = save_compressed(tmp_path / "swd.pt", model, "builtin", FMNIST_CONFIG, surgery)
    with torch.no_grad():
        torch.testing.assert_close(load_compressed(path).model(test.images), model(test.images))


@pytest.mark.parametrize("mode,target", [("unstructured", 0.95), ("structured", 0.7)])
def test_strategy_and_baseline_prune_to_the_same_budget(teacher, images, mode, target):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = build_config("swd", {"mode": mode, "target": target, "steps": 3, "batch_size": 32})
    swd = get_strategy("swd").apply(teacher, images, config, _ctx())
    ref = magnitude_prune_finetune(teacher, images, config, _ctx())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # input untouched
    for result in (swd, ref):
        assert abs((1 - result.stats["kept_fraction"]) - target) < 0.01
        assert result.model(images.images[:4]).shape == (4, 10)
    assert swd.strategy == "swd" and ref.strategy == "magnitude_finetune"
    assert swd.stats["a_final"] == pytest.approx(config.a_max)
    assert len(ref.stats["finetune_history"]) >= 1
    assert 0 < swd.stats["removed_norm_fraction"] < ref.stats["removed_norm_fraction"] < 1  # SWD already decayed some
    if mode == "structured":
        assert swd.surgery and swd.stats["params_after"] < 0.31 * swd.stats["params_before"]
    else:
        assert not swd.surgery and swd.stats["weight_sparsity"] > 0.94


def test_optional_finetune_keeps_pruned_weights_at_zero(teacher, images):
    config = SWDConfig(mode="unstructured", target=0.9, steps=3, batch_size=32, finetune_epochs=1)
    result = get_strategy("swd").apply(teacher, images, config, _ctx())
    assert len(result.stats["finetune_history"]) == 1  # one epoch of 96 // 32 = 3 steps after the prune
    assert result.stats["weight_sparsity"] >= 0.9 - 1e-6  # momentum and weight decay did not regrow them


def test_resume_after_interruption_gives_the_same_weights(teacher, images, tmp_path, monkeypatch):
    config = SWDConfig(mode="unstructured", target=0.9, steps=6, batch_size=32, checkpoint_every=2)
    straight = get_strategy("swd").apply(teacher, images, config, _ctx(tmp_path / "a"))

    real_step = SWDRegularizer.step
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real_step(self)

    monkeypatch.setattr(SWDRegularizer, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_strategy("swd").apply(teacher, images, config, _ctx(tmp_path / "b"))
    monkeypatch.setattr(SWDRegularizer, "step", real_step)
    (checkpoint,) = (tmp_path / "b").glob("swd-*.pt")
    resumed = get_strategy("swd").apply(teacher, images, config, _ctx(tmp_path / "b"))
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert resumed.stats["history"] == straight.stats["history"]

    # Other options never resume this run's state: they train afresh, beside it.
    get_strategy("swd").apply(teacher, images, config.replace(target=0.8), _ctx(tmp_path / "b"))
    assert len(list((tmp_path / "b").glob("swd-*.pt"))) == 2
    checkpoint.write_bytes(b"not a checkpoint")  # a damaged file is named, not silently replaced
    with pytest.raises(TrainingError, match="delete it to start again"):
        get_strategy("swd").apply(teacher, images, config, _ctx(tmp_path / "b"))


def test_nan_loss_raises_training_error(teacher, images):
    bad = ImageSet(images.images.clone(), images.labels)
    bad.images[3, 0, 5, 5] = float("nan")  # one corrupted image
    config = SWDConfig(steps=3, batch_size=32)
    with pytest.raises(TrainingError, match=r"loss is nan at step [123]/3"):
        get_strategy("swd").apply(teacher, bad, config, _ctx())


def test_missing_labels_is_a_data_error(teacher, images):
    unlabelled = ImageSet(images.images, None)
    with pytest.raises(DataError, match="labelled images"):
        get_strategy("swd").apply(teacher, unlabelled, SWDConfig(steps=1), _ctx())


@pytest.mark.parametrize("bad", [
    {"target": 1.0}, {"target": 0}, {"a_min": 0}, {"a_min": 10, "a_max": 1}, {"mu": 0}, {"epochs": 0},
    {"steps": 0}, {"lr": -0.1}, {"momentum": 1.0}, {"batch_size": 0}, {"lr_milestones": [0.6, 0.3]},
    {"lr_milestones": [1.5]}, {"lr_gamma": 0}, {"finetune_epochs": -1}, {"checkpoint_every": -5},
    {"warmup_epochs": -1},
    {"mode": "sideways"}, {"target": "lots"},
    {"lr": 0.1, "lr_milestones": [], "a_max": 1e5},  # lr * mu * a_max = 5 > 3.8: the decay would diverge
])
def test_bad_config_values_are_rejected(bad):
    with pytest.raises(ConfigError):
        build_config("swd", bad)


def test_unknown_option_is_rejected_with_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown option.*'targt'.*valid options:.*target"):
        build_config("swd", {"targt": 0.9})
