"""Dropping blocks is exact, never touches the teacher, and replays from names (checkpoints)."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx

from conftest import random_model
from practise_plugin import ModelError, drop_blocks, load_compressed, save_compressed
from practise_plugin.surgery.drop import DroppedBlock, dropped_temporarily


def test_teacher_untouched_and_blocks_gone(teacher):
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    student = drop_blocks(teacher.model, ["layer1.1", "layer3.2"])
    assert isinstance(student.layer1[1], DroppedBlock) and isinstance(student.layer3[2], DroppedBlock)
    assert not isinstance(teacher.model.layer1[1], DroppedBlock)
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    x = teacher.example_input(4)
    assert student(x).shape == teacher.model(x).shape
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.model.parameters())


def test_dropped_block_is_identity_on_its_input(teacher):
    t = teacher.model
    student = drop_blocks(t, ["layer2.2"])
    x = teacher.example_input(2)
    with torch.no_grad():
        h = t.layer1(t.relu(t.bn1(t.conv1(x))))
        expected = t.layer2[3](t.layer2[1](t.layer2[0](h)))
        assert torch.allclose(student.layer2(h), expected)


def test_vit_branch_drop_removes_the_branch_only():
    b = random_model("timm:vit_tiny_patch16_224")
    block = b.model.blocks[3]
    student = drop_blocks(b.model, ["blocks.3#0"])
    new = student.blocks[3]
    assert isinstance(new, fx.GraphModule)
    assert not hasattr(new, "attn") and hasattr(new, "mlp")
    x = torch.randn(2, 197, 192)
    with torch.no_grad():
        expected = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        assert torch.allclose(new(x), expected, atol=1e-6)
    removed = sum(p.numel() for p in block.attn.parameters()) + sum(p.numel() for p in block.norm1.parameters())
    assert sum(p.numel() for p in b.model.parameters()) - sum(p.numel() for p in student.parameters()) == removed


def test_temporary_drop_restores_exactly(teacher):
    x = teacher.example_input(2)
    with torch.no_grad():
        ref = teacher.model(x)
        with dropped_temporarily(teacher.model, ["layer1.2", "layer4.1"]) as m:
            changed = m(x)
        after = teacher.model(x)
    assert not torch.allclose(ref, changed)
    assert torch.equal(ref, after)


def test_unknown_block_name(teacher):
    with pytest.raises(ModelError, match="no module 'layer9.1'"):
        drop_blocks(teacher.model, ["layer9.1"])


def test_checkpoint_roundtrip_with_weights_only(teacher, tmp_path):
    student = drop_blocks(teacher.model, ["layer1.1", "layer2.3"])
    with torch.no_grad():
        student.fc.bias.add_(1.0)  # weights differ from the base model
    path = save_compressed(tmp_path / "s.pt", student, "builtin", teacher.data_config,
                           [{"op": "drop_blocks", "blocks": ["layer1.1", "layer2.3"]}])
    loaded = load_compressed(path)
    x = teacher.example_input(3)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), student(x), atol=1e-6)
    assert isinstance(loaded.model.layer2[3], DroppedBlock)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary files left behind
