"""Model specs resolve to real networks; the built-in teachers are really trained."""

from __future__ import annotations

import pytest
import torch

from conftest import random_model
from practise_plugin import ModelError, load_model
from practise_plugin.models import builtin
from practise_plugin.runtime.evaluate import top1


def test_builtin_teacher_is_trained(teacher):
    assert teacher.pretrained and teacher.data_config.input_size == (1, 28, 28)
    assert top1(teacher.model, builtin.test_set(full=False)) > 0.93  # the shipped 2000 test images


def test_efficientnet_lite0_has_real_imagenet_weights():
    b = load_model("builtin:efficientnet_lite0")
    photos = builtin.imagenet_samples(b.data_config)
    with torch.no_grad():
        top5 = b.model(photos.images).topk(5, 1).indices
    hits = (top5 == photos.labels[:, None]).any(1).sum().item()
    assert hits >= 17  # 19 of the 20 foolbox ImageNet photos were seen in the top-5


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:resnet18", "torchvision.models:resnet18"])
def test_spec_forms(spec):
    b = random_model(spec)
    assert b.model(b.example_input()).shape == (1, 1000)


def test_bad_specs_name_the_fix():
    with pytest.raises(ModelError, match="Did you mean: resnet50"):
        load_model("timm:resnet5O")
    with pytest.raises(ModelError, match="accepted forms"):
        load_model("resnet50")
    with pytest.raises(ModelError, match="cannot import"):
        load_model("no_such_package.mod:fn")


def test_weights_loading(teacher, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(teacher.model.state_dict(), path)
    b = load_model("builtin", weights=path)
    x = teacher.example_input(2)
    with torch.no_grad():
        assert torch.equal(b.model(x), teacher.model(x))
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match="do not fit the model"):
        load_model("builtin", weights=path)
