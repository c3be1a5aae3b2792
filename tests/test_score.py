"""Recoverability: adaptors recover part of what a dropped block removes; the fit is deterministic."""

from __future__ import annotations

import pytest

from practise_plugin import ConfigError, RecoverabilityScorer, discover_blocks


@pytest.fixture(scope="module")
def candidates(teacher):
    blocks = discover_blocks(teacher.model, teacher.example_input(), count_cost=False)
    return [b for b in blocks if b.name in ("layer1.2", "layer2.2", "layer3.4", "layer4.1")]


def test_closed_form_adaptors_lower_the_feature_error(teacher, tiny, candidates):
    small = tiny.subset(range(128))
    scores = RecoverabilityScorer(teacher.model, small, method="closed_form").score(candidates, progress=False)
    for r in scores:
        assert r.sites > 0
        assert r.mse < r.mse_dropped, r  # every one of these holes has readers to fit
    # the hole right before the head (layer4.1) is by far the hardest to recover in this network
    assert max(scores, key=lambda r: r.mse).block == "layer4.1"


def test_sgd_adaptors_train_and_are_deterministic(teacher, tiny, candidates):
    small = tiny.subset(range(64))
    kw = dict(method="sgd", iters=15, batch_size=32, seed=7)
    a = RecoverabilityScorer(teacher.model, small, **kw).fit(candidates[1])[0]
    b = RecoverabilityScorer(teacher.model, small, **kw).fit(candidates[1])[0]
    assert a.mse < a.mse_dropped
    assert a.mse == b.mse


def test_joint_fit_excludes_layers_inside_dropped_blocks(teacher, tiny, candidates):
    scorer = RecoverabilityScorer(teacher.model, tiny.subset(range(32)), method="none")
    names = {s.module for s in scorer.sites(candidates[:2])}
    assert "layer1.2.conv1" not in names  # layer1.2 is dropped itself
    assert "layer2.3.conv1" in names


def test_unknown_method():
    with pytest.raises(ConfigError, match="closed_form, sgd, none"):
        RecoverabilityScorer(None, None, method="magic")  # type: ignore[arg-type]
