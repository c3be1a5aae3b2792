"""Selection: lowest R/saving first, until the *measured* saving meets the target."""

from __future__ import annotations

import pytest

from practise_plugin import ConfigError, TargetError, select_blocks

R = {"a": 1.0, "b": 0.2, "c": 0.5, "d": 0.1}
SAVING = {"a": 0.10, "b": 0.05, "c": 0.10, "d": 0.0}  # d saves nothing: never worth dropping


def additive(names):
    return sum(SAVING[n] for n in names) * 0.9  # measured combined saving a bit below the prediction


def test_order_is_by_recoverability_per_saving():
    sel = select_blocks(R, SAVING, num_blocks=2)
    assert sel.order[:3] == ["b", "c", "a"] and sel.order[-1] == "d"  # 4.0, 5.0, 10.0, inf
    assert sel.blocks == ["b", "c"] and sel.measured is None


def test_keeps_adding_until_measured_target_is_met():
    sel = select_blocks(R, SAVING, latency_reduction=0.15, measure=additive)
    # prediction 0.15 with b+c, measured 0.135 < 0.15, so a is added and measured 0.225
    assert sel.blocks == ["b", "c", "a"]
    assert [h["blocks"] for h in sel.history] == [["b", "c"], ["b", "c", "a"]]
    assert sel.measured == pytest.approx(0.225)


def test_unreachable_target_says_what_is_reachable():
    with pytest.raises(TargetError, match=r"dropping all 3 candidates .* measures 22\.5%.*at most 0\.22"):
        select_blocks(R, SAVING, latency_reduction=0.5, measure=additive)


def test_bad_requests():
    with pytest.raises(ConfigError):
        select_blocks(R, SAVING)
    with pytest.raises(TargetError, match="choose 1..4"):
        select_blocks(R, SAVING, num_blocks=7)
    with pytest.raises(ConfigError, match=r"fraction in \(0, 1\)"):
        select_blocks(R, SAVING, latency_reduction=22, measure=additive)


def test_earlier_drops_count_toward_the_target():
    # b was dropped by an earlier step (iterative pruning): c alone completes 0.135 measured of a 0.12 target.
    rest = {k: v for k, v in R.items() if k != "b"}
    sel = select_blocks(rest, SAVING, latency_reduction=0.12, measure=additive, dropped=["b"])
    assert sel.blocks == ["c"] and sel.history[-1]["blocks"] == ["b", "c"]
    assert sel.measured == pytest.approx(0.135)
    # Already met by the earlier drops: nothing more is chosen.
    assert select_blocks(rest, SAVING, latency_reduction=0.04, measure=additive, dropped=["b"]).blocks == []


class _Measured:
    def __init__(self, value: float, half: float) -> None:
        self.value, self.low, self.high = value, value - half, value + half


def test_a_lucky_point_estimate_does_not_decide():
    # b+c measures 0.16 for a 0.15 target, but its interval reaches down to 0.12: a is added, whose set clears it.
    intervals = {("b", "c"): _Measured(0.16, 0.04), ("b", "c", "a"): _Measured(0.24, 0.02)}
    sel = select_blocks(R, SAVING, latency_reduction=0.15, measure=lambda names: intervals[tuple(names)])
    assert sel.blocks == ["b", "c", "a"] and sel.confidence == "met with confidence"
    assert sel.measured_interval == pytest.approx([0.22, 0.26])
    assert [h["low"] for h in sel.history] == pytest.approx([0.12, 0.22])


def test_when_no_interval_clears_the_target_the_point_estimate_is_flagged():
    intervals = {("b", "c"): _Measured(0.16, 0.04), ("b", "c", "a"): _Measured(0.17, 0.06)}
    sel = select_blocks(R, SAVING, latency_reduction=0.15, measure=lambda names: intervals[tuple(names)])
    assert sel.confidence == "met by the point estimate only" and sel.blocks == ["b", "c"]  # the higher low end


def test_not_measurable_savings_rank_last_and_ties_follow_the_stated_rule():
    r = {"x": 0.2, "y": 0.2, "z": 0.1, "w": 0.05}
    saving = {"x": 0.05, "y": 0.05, "z": 0.025, "w": None}  # x, y, z all score 4.0; w is not measurable
    macs = {"x": 10.0, "y": 30.0, "z": 5.0, "w": 1.0}
    order = select_blocks(r, saving, num_blocks=1, macs=macs).order
    assert order == ["z", "y", "x", "w"]  # equal scores: lower R first (z), then more MACs (y before x)
