"""Recoverability: adaptors recover part of what a dropped block removes; the fit is deterministic."""

from __future__ import annotations

import pytest
import torch

from practise_plugin import ConfigError, RecoverabilityScorer, discover_blocks, load_model
from practise_plugin.models import builtin


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


def _out_sites(adaptors):
    return {s.module: m.detach() for s, m in zip(adaptors.sites, adaptors.mats) if s.side == "out"}


@pytest.mark.parametrize("dead", [False, True])
def test_closed_form_pre_adaptors_reach_the_least_squares_optimum_on_a_linear_stream(dead):
    """EfficientNet's stream is BN(conv_pwl(.)) + skip: the pre-adaptor fit is a plain least squares. With a
    writer channel that is zero on every image (``dead``) the first images cannot show its scale, and every
    batch is probed instead."""
    b = load_model("builtin:efficientnet_lite0", input_size=(3, 64, 64))
    photos = builtin.imagenet_samples(b.data_config)
    teacher = b.model
    if dead:
        with torch.no_grad():
            teacher.blocks[4][0].conv_pwl.weight[3].zero_()
    block = next(x for x in discover_blocks(teacher, photos.images[:1], count_cost=False) if x.name == "blocks.4.1")
    rec, adaptors = RecoverabilityScorer(teacher, photos, method="closed_form").fit(block)
    p = _out_sites(adaptors)["blocks.4.0.conv_pwl"]  # 4.0 is the stage's first unit: its output is bn3(conv_pwl)
    assert not torch.allclose(p, torch.eye(len(p)))
    seen: dict[str, torch.Tensor] = {}
    hooks = [teacher.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o))
             for n in ("blocks.4.0.conv_pwl", "blocks.4.1")]
    with torch.no_grad():
        teacher(photos.images)
    for h in hooks:
        h.remove()
    bn = teacher.blocks[4][0].bn3
    y, t = seen["blocks.4.0.conv_pwl"], seen["blocks.4.1"]
    flat = lambda z: z.transpose(0, 1).reshape(z.shape[1], -1).double()  # noqa: E731
    with torch.no_grad():
        e = bn(torch.zeros_like(y))
        fitted = bn(torch.einsum("oc,nchw->nohw", p, y))
    # the best map of this form, by torch.linalg.lstsq: (t - e) ~ Z y with Z = D P; a dead channel's row of P
    # cannot be reached (its scale in D is never seen) and stays the identity's
    z = torch.linalg.lstsq(flat(y).t(), flat(t - e).t()).solution
    residual = (flat(t - e) - z.t() @ flat(y)).pow(2).sum(1)
    if dead:
        assert torch.equal(p[3], torch.eye(len(p))[3])
        residual[3] = (flat(t) - flat(bn(y))).pow(2).sum(1)[3]
    best = float(residual.sum())
    ours = float((flat(t) - flat(fitted)).pow(2).sum())
    bare = float((flat(t) - flat(bn(y).detach())).pow(2).sum())  # the hole: the stream goes on as 4.0 left it
    assert ours <= 1.02 * best  # ridge-regularised, so a hair above the unregularised optimum
    assert ours < 0.8 * bare
    assert rec.mse < rec.mse_dropped


def test_closed_form_pre_adaptors_fit_the_relu_input_behind_a_relu(teacher, tiny):
    """ResNet units end in relu(bn2(conv2) + downsample): the fit is a least squares on the ReLU's input,
    toward t where the teacher's stream t is positive and min(o, 0) elsewhere; both writers are fitted."""
    model = teacher.model
    small = tiny.subset(range(64))
    block = next(b for b in discover_blocks(model, small.images[:1], count_cost=False) if b.name == "layer2.1")
    rec, adaptors = RecoverabilityScorer(model, small, method="closed_form").fit(block)
    pre = _out_sites(adaptors)
    p2, pd = pre["layer2.0.conv2"], pre["layer2.0.downsample.0"]
    assert not torch.allclose(p2, torch.eye(len(p2))) and not torch.allclose(pd, torch.eye(len(pd)))
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o.clone()))
             for n in ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1")]
    with torch.no_grad():
        model(small.images)
    for h in hooks:
        h.remove()
    bn2, bnd = model.layer2[0].bn2, model.layer2[0].downsample[1]
    y2, yd, t = seen["layer2.0.conv2"], seen["layer2.0.downsample.0"], seen["layer2.1"]
    mix = lambda p, y: torch.einsum("oc,nchw->nohw", p, y)  # noqa: E731
    flat = lambda z: z.transpose(0, 1).reshape(z.shape[1], -1).double()  # noqa: E731
    with torch.no_grad():
        e = bn2(torch.zeros_like(y2)) + bnd(torch.zeros_like(yd))
        o = bn2(y2) + bnd(yd)  # the ReLU's input with identity adaptors
        fitted = bn2(mix(p2, y2)) + bnd(mix(pd, yd))
    tau = torch.where(t > 0, t, o.clamp_max(0.0))
    ys = torch.cat([flat(y2), flat(yd)])
    z = torch.linalg.lstsq(ys.t(), flat(tau - e).t()).solution
    best = float((flat(tau - e) - z.t() @ ys).pow(2).sum())
    ours = float((flat(tau) - flat(fitted)).pow(2).sum())
    assert ours <= 1.02 * best  # ridge-regularised toward identity, so a hair above the optimum
    after = float((fitted.relu() - t).pow(2).sum())
    bare = float((o.relu() - t).pow(2).sum())  # the hole: the stream goes on as layer2.0 left it
    assert after < 0.8 * bare
    assert rec.mse < rec.mse_dropped
