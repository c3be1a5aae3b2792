"""Forwards that start part-way: scoring from cached unit inputs gives the values of full passes.

The scorer caches the teacher's input of the unit before each hole and starts every pass there
(``practise_plugin.graph.resume``). These tests compare it with the same scorer forced to run every pass
from the image (``cache_bytes=0``) on real models, and check that a model where starting part-way is not
exact (an early module's output read again after the unit) falls back instead of giving other numbers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import random_model
from practise_plugin import ModelError, RecoverabilityScorer, discover_blocks
from practise_plugin.core.inputs import ImageSet
from practise_plugin.graph.features import capture, capture_many, feature_fn, find_feature_point
from practise_plugin.graph.resume import StartAt, reproduces
from practise_plugin.graph.trace import trace_forward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _both_ways(model: nn.Module, data: ImageSet, blocks, method: str = "closed_form", *,
               starts: bool = True) -> tuple[list, list]:
    scorer = RecoverabilityScorer(model, data, method=method, batch_size=8)
    unit = scorer.start_unit([blocks[-1]])
    assert (scorer._unit_inputs(unit) is not None) == starts, unit  # the start is used where it is exact
    started = scorer.score(blocks, progress=False)
    full = RecoverabilityScorer(model, data, method=method, batch_size=8, cache_bytes=0).score(blocks, progress=False)
    return started, full


def _same(started: list, full: list) -> None:
    assert [r.block for r in started] == [r.block for r in full]
    for a, b in zip(started, full):
        for key in ("mse", "mse_dropped"):
            x, y = getattr(a, key), getattr(b, key)
            assert abs(x - y) <= 1e-5 * max(abs(y), 1e-12), (a.block, key, x, y)


def test_started_scores_equal_full_passes_on_the_builtin_network(teacher, tiny):
    blocks = discover_blocks(teacher.model, teacher.example_input(), count_cost=False)
    data = tiny.subset(range(24))
    for method in ("closed_form", "none"):
        started, full = _both_ways(teacher.model, data, blocks, method)
        _same(started, full)
        assert any(r.mse < r.mse_dropped for r in started) or method == "none"


@pytest.mark.parametrize("spec,size,picks", [
    ("torchvision:resnet18", 64, ("layer1.1", "layer3.1", "layer4.1")),
    ("timm:mobilenetv2_100", 64, None),
    ("timm:test_vit", 160, ("blocks.0#0", "blocks.3#1", "blocks.5#0")),
])
def test_started_scores_equal_full_passes_on_zoo_models(spec, size, picks):
    bundle = random_model(spec)
    model = bundle.model.eval()
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randn(8, 3, size, size, generator=gen))
    blocks = discover_blocks(model, data.images[:1], count_cost=False)
    chosen = [b for b in blocks if b.name in picks] if picks else blocks[::4]
    assert len(chosen) >= 3, [b.name for b in blocks]
    _same(*_both_ways(model, data, chosen))


class _ReadsTheStemAgain(nn.Module):
    """A stem whose output is added again after the blocks: starting at a block cannot be exact."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[_Res() for _ in range(3)])
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.head(self.blocks(s) + s)


class _Res(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.conv(x))


def test_a_start_that_is_not_exact_is_detected_and_scoring_runs_in_full():
    torch.manual_seed(0)
    model = _ReadsTheStemAgain().eval()
    x = torch.randn(4, 3, 12, 12)
    trace = trace_forward(model, x[:1])
    point = find_feature_point(model, x[:1])
    fn = feature_fn(model, point)
    inputs = capture(model, "blocks.1", fn, x, output=False).detach().clone()
    start = StartAt(model, "blocks.1", trace, inputs)
    with torch.no_grad():
        expected = fn(x).float()
    assert not reproduces(start, fn, x, expected, slice(0, 4))  # the stem answered zeros to the skip
    # a model whose prefix is not read again starts exactly
    seq = nn.Sequential(model.stem, *model.blocks, model.head).eval()
    seq_fn = feature_fn(seq, find_feature_point(seq, x[:1]))
    seq_in = capture(seq, "2", seq_fn, x, output=False).detach().clone()
    with torch.no_grad():
        assert reproduces(StartAt(seq, "2", trace_forward(seq, x[:1]), seq_in), seq_fn, x, seq_fn(x).float(),
                          slice(0, 4))
    # and the scorer gives the full-pass numbers on the model that cannot start part-way
    blocks = discover_blocks(model, x[:1], count_cost=False)
    assert [b.name for b in blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    _same(*_both_ways(model, ImageSet(x), blocks, starts=False))


def test_the_modules_outside_a_start_are_restored():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = seq(x)
        start = StartAt(seq, "2", trace_forward(seq, x[:1]), torch.zeros(2, 4, 6, 6))
        with start:
            start.feed(slice(0, 2))
            assert torch.equal(seq(x), seq[2](torch.zeros(2, 4, 6, 6)))
        assert "forward" not in seq[0].__dict__
        assert torch.equal(seq(x), before)


def test_capture_many_is_one_forward_with_each_capture(teacher, tiny):
    model, x = teacher.model.eval(), tiny.images[:4]
    fn = feature_fn(model, find_feature_point(model, x[:1]))
    paths = ["layer3.0.conv1", "layer1.1", "layer2.0.conv2"]
    with torch.no_grad():
        many = capture_many(model, paths, fn, x, output=False)
        for path, got in zip(paths, many):
            assert torch.equal(got, capture(model, path, fn, x, output=False))
    model.nowhere = nn.Identity()  # a module that exists but is never called
    try:
        with pytest.raises(ModelError, match="nowhere did not run"):
            capture_many(model, ["layer1.1", "nowhere"], fn, x)
    finally:
        del model.nowhere


def _fit_watching_starts(monkeypatch, scorer: RecoverabilityScorer, blocks):  # noqa: ANN001, ANN202
    """``scorer.fit(blocks)``'s Recoverability, and the (student/teacher, unit) of every start it entered."""
    entered: list[tuple[str, str]] = []
    enter = StartAt.__enter__

    def spy(self: StartAt) -> StartAt:
        entered.append(("student" if self.model is scorer.work else "teacher", self.path))
        return enter(self)

    with monkeypatch.context() as m:
        m.setattr(StartAt, "__enter__", spy)
        return scorer.fit(blocks)[0], entered


def test_reader_passes_move_their_start_to_the_unit_holding_the_reader(monkeypatch):
    """Dropping layer1.1 of resnet18: its readers (layer2.0's conv1 and downsample) are fitted from passes
    started at layer2.0, with the student's input there computed once, not from passes through layer1.0."""
    bundle = random_model("torchvision:resnet18")
    model = bundle.model.eval()
    data = ImageSet(torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    block = next(b for b in discover_blocks(model, data.images[:1], count_cost=False) if b.name == "layer1.1")
    moved, entered = _fit_watching_starts(monkeypatch, RecoverabilityScorer(model, data, batch_size=4), block)
    assert ("student", "layer2.0") in entered and ("teacher", "layer2.0") in entered, entered
    full = RecoverabilityScorer(model, data, batch_size=4, cache_bytes=0).fit(block)[0]
    assert abs(moved.mse - full.mse) <= 1e-5 * full.mse and moved.mse < moved.mse_dropped


def test_a_set_of_holes_moves_to_each_later_pre_adaptor_unit_and_scores_as_from_the_image(monkeypatch) -> None:
    """Fitting a set (the chosen blocks): the second hole's pre-adaptor passes start at its own unit, and the
    set's MSE is the one of full passes from the image."""
    model = random_model("torchvision:resnet50").model.eval()
    data = ImageSet(torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    blocks = [b for b in discover_blocks(model, data.images[:1], count_cost=False) if b.name in ("layer1.1", "layer2.2")]
    moved, entered = _fit_watching_starts(monkeypatch, RecoverabilityScorer(model, data, batch_size=4), blocks)
    assert ("student", "layer2.1") in entered, entered  # layer2.2's pre-adaptors sit in layer2.1
    full = RecoverabilityScorer(model, data, batch_size=4, cache_bytes=0).fit(blocks)[0]
    assert abs(moved.mse - full.mse) <= 1e-5 * full.mse and moved.mse < moved.mse_dropped
    assert abs(moved.mse_dropped - full.mse_dropped) <= 1e-5 * full.mse_dropped


def test_a_transformer_readers_start_at_their_block_when_their_branch_cannot_be_started_from(monkeypatch) -> None:
    """In a pre-norm block the reader blocks.k.attn.qkv sits in blocks.k.attn, whose input (norm1's output) is
    not the skip's; that branch is refused as a start and the passes start at blocks.k instead, for every later
    block, with the MSE of full passes from the image (before, each reader ran from the hole)."""
    model = random_model("timm:test_vit").model.eval()
    data = ImageSet(torch.randn(4, 3, 160, 160, generator=torch.Generator().manual_seed(0)))
    block = next(b for b in discover_blocks(model, data.images[:1], count_cost=False) if b.name == "blocks.0#1")
    scorer = RecoverabilityScorer(model, data, batch_size=4)
    moved, entered = _fit_watching_starts(monkeypatch, scorer, block)
    later = sorted({int(p.split(".")[1]) for who, p in entered if who == "student" and p.count(".") == 1} - {0})
    depth = max(int(s.module.split(".")[1]) for s in scorer.sites([block]))
    assert later == list(range(1, depth + 1)), entered
    assert scorer._exact_at.get("blocks.1.attn") is False and scorer._exact_at["blocks.1"]
    full = RecoverabilityScorer(model, data, batch_size=4, cache_bytes=0).fit(block)[0]
    assert abs(moved.mse - full.mse) <= 1e-5 * full.mse and moved.mse < moved.mse_dropped
