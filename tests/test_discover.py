"""Block discovery finds the paper's candidates by structure, on torchvision and timm models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import random_model
from practise_plugin import ModelError, discover_blocks
from practise_plugin.graph.macs import count_macs
from practise_plugin.graph.trace import trace_forward

RESNET34_CANDIDATES = [
    "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer2.3",
    "layer3.1", "layer3.2", "layer3.3", "layer3.4", "layer3.5", "layer4.1", "layer4.2",
]
MOBILENETV2_CANDIDATES = [f"features.{i}" for i in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]


@pytest.mark.parametrize("spec", ["torchvision:resnet34", "timm:resnet34"])
def test_resnet34_has_the_papers_12_candidates_with_equal_macs(spec):
    b = random_model(spec)
    blocks = discover_blocks(b.model, b.example_input())
    assert [x.name for x in blocks] == RESNET34_CANDIDATES
    total = count_macs(b.model, b.example_input())
    shares = {round(x.macs / total, 3) for x in blocks}
    assert shares == {0.063}  # METHODS.md: every droppable ResNet-34 block costs 6.3% of the MACs


def test_mobilenetv2_candidates_are_the_papers_10():
    b = random_model("torchvision:mobilenet_v2")
    assert [x.name for x in discover_blocks(b.model, b.example_input(), count_cost=False)] == MOBILENETV2_CANDIDATES


def test_timm_mobilenetv2_same_structure_other_names():
    b = random_model("timm:mobilenetv2_100")
    names = [x.name for x in discover_blocks(b.model, b.example_input(), count_cost=False)]
    assert names == ["blocks.1.1", "blocks.2.1", "blocks.2.2", "blocks.3.1", "blocks.3.2", "blocks.3.3",
                     "blocks.4.1", "blocks.4.2", "blocks.5.1", "blocks.5.2"]


@pytest.mark.parametrize("spec,expected", [
    ("timm:efficientnet_b0", 9), ("torchvision:efficientnet_b0", 9),
    ("timm:convnext_atto", 12),  # every block keeps the shape: the first of each stage is a candidate too
    ("torchvision:regnet_y_400mf", 12),
])
def test_other_cnn_families_have_candidates(spec, expected):
    b = random_model(spec)
    blocks = discover_blocks(b.model, b.example_input(), count_cost=False)
    assert len(blocks) == expected
    assert all(x.branch is None for x in blocks)


def test_vit_offers_each_residual_branch():
    b = random_model("timm:vit_tiny_patch16_224")
    blocks = discover_blocks(b.model, b.example_input())
    assert blocks[0].name == "blocks.0#0" and blocks[1].name == "blocks.0#1"
    assert len(blocks) == 24  # 12 blocks, every one with an identity shortcut, x (attention, MLP)
    attn, mlp = blocks[0], blocks[1]
    assert attn.kind == mlp.kind == "branch"
    assert mlp.macs > attn.macs > 0  # ViT-Ti: the MLP branch costs about twice the attention branch


def test_stage_entry_blocks_on_request(teacher):
    blocks = discover_blocks(teacher.model, teacher.example_input(), include_stage_entry=True, count_cost=False)
    assert blocks[0].name == "layer1.0" and len(blocks) == 13  # layer2.0.. have downsample: not identity


def test_plain_network_has_no_candidate_and_says_what_to_do():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    with pytest.raises(ModelError, match="no residual add at all.*udfc"):
        discover_blocks(plain, torch.randn(1, 3, 16, 16))


def test_the_trace_tells_tensors_apart_where_the_allocator_reuses_their_memory():
    """A chain of layers frees each activation once the next is made, and the allocator hands that memory to a
    later one: equal addresses, different tensors. The trace's identities must differ there (they once were
    the addresses, and a ViT's readers of different tensors were fitted as readers of one)."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(256, 256) if i % 2 == 0 else nn.ReLU() for i in range(9)]).eval()
    addresses: dict[str, int] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: addresses.__setitem__(n, a[0].data_ptr()))
             for n, m in model.named_children()]
    reused = 0
    try:  # whether the allocator reuses memory within one pass depends on what else allocates meanwhile
        for _ in range(20):
            addresses.clear()
            trace = trace_forward(model, torch.randn(4, 256))
            assert len(set(trace.in_id.values())) == len(addresses) == 9  # every input told apart
            reused += len(set(addresses.values())) < len(addresses)
    finally:
        for h in hooks:
            h.remove()
    assert reused  # some pass had equal addresses for different tensors, so the identities above were tested
    relu = nn.ReLU(inplace=True)
    inplace = nn.Sequential(nn.Linear(8, 8), relu).eval()
    t = trace_forward(inplace, torch.randn(2, 8))
    assert t.in_id["1"] == t.out_id["0"] == t.out_id["1"]  # one tensor: the in-place ReLU's input is its output
