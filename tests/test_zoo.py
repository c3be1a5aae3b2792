"""Block discovery on the model zoo users bring: every identity-shortcut block or branch is offered, whatever
surrounds it, the feature point is the real pre-pooling map at any size, and detection and segmentation
backbones are compressed by mimicking all of their outputs. Random weights: structure does not need them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import random_model
from practise_plugin import ModelError, compress
from practise_plugin.graph.discover import discover_blocks
from practise_plugin.graph.features import find_feature_point
from practise_plugin.models.builtin import imagenet_samples
from practise_plugin.practise.recoverability import RecoverabilityScorer
from practise_plugin.runtime.openvino import compile_cpu, to_openvino
from practise_plugin.surgery.drop import drop_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (spec, candidates, one of them, what makes it one): the four families that had none and the two that had
# some, then the plain ViT whose first block the positional rule used to remove.
ZOO = [
    ("timm:ghostnet_100", 11, "blocks.6.1", "identity shortcut"),  # the shortcut is an empty nn.Sequential()
    ("timm:swin_tiny_patch4_window7_224", 24, "layers.0.blocks.0#1", "residual branch 1"),  # reshapes between adds
    ("timm:fastvit_t8", 20, "stages.0.blocks.0.token_mixer", "identity shortcut"),  # the mixer is a first child
    ("timm:dla34", 6, "level2.tree2", "identity shortcut"),  # forward(x, shortcut=None): a keyword shortcut
    ("timm:mobilevit_xxs", 20, "stages.1.1", "identity shortcut"),  # a trailing nn.Identity after the add
    ("timm:caformer_s18", 36, "stages.2.blocks.0#0", "scaled shortcut"),  # res_scale * x + f(x)
    ("timm:vit_small_patch16_224", 24, "blocks.0#0", "residual branch 0"),
]


@pytest.mark.parametrize("spec, count, name, why", ZOO, ids=[z[0] for z in ZOO])
def test_every_identity_shortcut_is_found_and_drops_cleanly(spec, count, name, why):
    bundle = random_model(spec)
    x = bundle.example_input()
    blocks = {b.name: b for b in discover_blocks(bundle.model, x, count_cost=False)}
    assert len(blocks) == count, sorted(blocks)
    assert name in blocks and why in blocks[name].why
    first, last = list(blocks)[0], list(blocks)[-1]
    student = drop_blocks(bundle.model, [first, last])
    with torch.no_grad():
        expected = student(x)
    assert expected.shape == bundle.model(x).shape
    got = compile_cpu(to_openvino(student, bundle.data_config.input_size), exact_f32=True)(x.numpy())[0]
    assert abs(got - expected.numpy()).max() <= 1e-3 * abs(expected).max()


def test_a_model_caching_tensors_made_from_its_weights_is_copied_and_dropped():
    # EfficientFormer-V2 keeps its attention biases in a dict after an eval forward; they are not graph
    # leaves, so a plain deepcopy (the first step of every drop) raised instead of copying
    bundle = random_model("timm:efficientformerv2_s0")
    x = bundle.example_input()
    bundle.model(x)  # with autograd on, as a user's own evaluation would run it
    cached = [v for m in bundle.model.modules() for v in getattr(m, "attention_bias_cache", {}).values()]
    assert cached and all(t.grad_fn is not None for t in cached)
    blocks = discover_blocks(bundle.model, x, count_cost=False)
    student = drop_blocks(bundle.model, [blocks[-1].name])
    with torch.no_grad():
        assert student(x).shape == bundle.model(x).shape
        assert not torch.equal(student(x), bundle.model(x))


def test_a_model_without_identity_shortcuts_is_told_what_it_has():
    bundle = random_model("timm:resnest14d")  # one block per stage, each with a projected shortcut
    with pytest.raises(ModelError, match="residual adds .* projected or reshaped shortcut"):
        discover_blocks(bundle.model, bundle.example_input())
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with pytest.raises(ModelError, match="no residual add at all"):
        discover_blocks(plain, torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("spec, point, count", [("torchvision:resnet34", "layer4", 12),
                                                ("torchvision:mobilenet_v2", "features", 10)])
def test_at_32_pixels_every_block_is_scored_on_the_real_feature_map(spec, point, count):
    """At 32 x 32 ResNet-34's layer4 and MobileNetV2's features are 1 x 1 maps: still the pre-pooling point,
    and every paper candidate changes them when dropped (none scores a silent R = 0)."""
    bundle = random_model(spec)
    bundle.data_config = bundle.data_config.with_input_size((3, 32, 32))
    from practise_plugin.core.inputs import ImageSet

    images = ImageSet(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    found = find_feature_point(bundle.model, images.images[:1])
    assert found.describe() == f"output of {point}"
    blocks = discover_blocks(bundle.model, images.images[:1], count_cost=False)
    assert len(blocks) == count
    scores = RecoverabilityScorer(bundle.model, images, method="none", point=found).score(blocks, progress=False)
    assert all(r.mse_dropped > 0 for r in scores)


def test_the_users_feature_point_and_its_errors(teacher, tiny):
    res = compress(teacher, tiny, "practise", num_blocks=1, feature_point=("layer4",), recover="none",
                   latency_backend="macs", progress=False)
    assert res.stats["feature_point"] == "output of layer4"
    with pytest.raises(ModelError, match="layer9 is not a module"):
        compress(teacher, tiny, "practise", num_blocks=1, feature_point=("layer9",), latency_backend="macs",
                 progress=False)
    with pytest.raises(ModelError, match="run after the feature point .*--feature-point"):
        compress(teacher, tiny, "practise", num_blocks=1, feature_point=("layer2",), latency_backend="macs",
                 progress=False)


def _calibrated(spec: str, size: int):
    """A random backbone whose BatchNorm statistics are those of the real photos it is fed (so that its
    activations have a sane scale), and those photos."""
    bundle = random_model(spec)
    bundle.data_config = bundle.data_config.with_input_size((3, size, size))
    photos = imagenet_samples(bundle.data_config)
    for m in bundle.model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    bundle.model.train()
    with torch.no_grad():
        bundle.model(photos.images)
    bundle.model.eval()
    return bundle, photos


@pytest.mark.parametrize("spec", ["torchvision:fasterrcnn_mobilenet_v3_large_320_fpn#backbone",
                                  "torchvision:deeplabv3_mobilenet_v3_large#backbone"])
def test_detection_and_segmentation_backbones_are_compressed_on_all_their_outputs(spec):
    bundle, photos = _calibrated(spec, 96)
    with torch.no_grad():
        before = bundle.model(photos.images[:2])
    res = compress(bundle, photos, "practise", num_blocks=2, recover_iters=10, batch_size=10, lr=1e-4,
                   recover_bn="frozen", augment=False, latency_backend="macs", progress=False)
    assert res.stats["feature_point"] == "every output of the model"
    mse = res.stats["feature_mse"]
    assert mse["recovered"] < mse["dropped"]  # adaptors and mimicking on every FPN level / the 'out' map
    with torch.no_grad():
        after = res.model(photos.images[:2])
    assert list(after) == list(before) and all(after[k].shape == before[k].shape for k in before)
