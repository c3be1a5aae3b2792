"""Adaptors sit where the paper puts them, start as the identity, and fold exactly."""

from __future__ import annotations

import torch

from conftest import random_model
from practise_plugin import discover_blocks, find_feature_point
from practise_plugin.practise.adaptors import Adaptors, StreamAnalysis
from practise_plugin.surgery.drop import dropped_temporarily


def _analysis(bundle):
    x = bundle.example_input()
    blocks = {b.name: b for b in discover_blocks(bundle.model, x, count_cost=False)}
    return StreamAnalysis(bundle.model, x, find_feature_point(bundle.model, x)), blocks


def test_resnet34_sites_follow_the_paper():
    b = random_model("torchvision:resnet34")
    sa, blocks = _analysis(b)
    sites = {(s.module, s.side) for s in sa.sites(blocks["layer3.2"])}
    assert sites == {
        # after the last conv (before BN) of the earlier blocks of the stage, and of its downsample conv
        ("layer3.0.conv2", "out"), ("layer3.0.downsample.0", "out"), ("layer3.1.conv2", "out"),
        # before the first conv of the later blocks, and of the next stage's first block and downsample
        ("layer3.3.conv1", "in"), ("layer3.4.conv1", "in"), ("layer3.5.conv1", "in"),
        ("layer4.0.conv1", "in"), ("layer4.0.downsample.0", "in"),
    }
    last = {(s.module, s.side) for s in sa.sites(blocks["layer4.2"])}
    assert all(side == "out" for _, side in last)  # nothing reads the stream after layer4 before pooling


def _perturbed(adaptors: Adaptors, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adaptors.mats:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _check_fold(bundle, block_name: str, atol: float) -> None:
    sa, blocks = _analysis(bundle)
    model = bundle.model
    x = bundle.example_input(2)
    adaptors = Adaptors(sa.sites(blocks[block_name]))  # positions come from the intact model
    assert adaptors.sites
    with dropped_temporarily(model, [block_name]), torch.no_grad():
        plain = model(x)
        adaptors.attach(model)
        assert torch.allclose(model(x), plain, atol=1e-6)  # identity initialisation changes nothing
        _perturbed(adaptors, 0)
        hooked = model(x)
        assert not torch.allclose(hooked, plain, atol=1e-4)
        adaptors.detach()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with adaptors.folded(model):  # the scorer's passes: folded for the duration, then restored
            temporary = model(x)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert torch.equal(model(x), plain)
        adaptors.fold_into(model)
        folded = model(x)
    assert torch.allclose(temporary, hooked, atol=atol, rtol=1e-4)
    assert torch.allclose(folded, hooked, atol=atol, rtol=1e-4)


def test_fold_is_exact_on_resnet(teacher):
    import copy

    b = copy.deepcopy(teacher)
    _check_fold(b, "layer2.2", 1e-5)


def test_fold_is_exact_for_linear_adaptors_in_convnext_and_vit():
    _check_fold(random_model("timm:convnext_atto"), "stages.2.blocks.3", 1e-4)
    _check_fold(random_model("timm:vit_tiny_patch16_224"), "blocks.5#1", 1e-4)
