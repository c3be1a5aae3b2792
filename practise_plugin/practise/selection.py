"""Choose which blocks to drop: lowest recoverability per unit of latency saved, until the target is met.

Why it exists: the paper ranks blocks by s(B) = R(B) / latency_saving(B) and picks k by hand. Users
think in latency budgets, so we add blocks in score order until the *predicted* saving (sum of the
single-block savings) reaches the target, then *measure* the combined drop and keep adding until the
measurement meets it with confidence (its interval's low end). The result says what was reached and how
surely, and an unreachable target fails with what is reachable instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ..core.errors import ConfigError, TargetError


class _Interval(Protocol):
    value: float
    low: float
    high: float


Measured = float | _Interval


def _interval(m: Measured) -> tuple[float, float, float]:
    """(value, low, high) of a measurement; an exact number (MACs) is its own interval."""
    if isinstance(m, (int, float)):
        return float(m), float(m), float(m)
    return float(m.value), float(m.low), float(m.high)


@dataclass
class Selection:
    """The chosen blocks and how the target was met.

    ``measured`` is the point estimate of the chosen set's saving and ``measured_interval`` its confidence
    interval; ``confidence`` says whether the target is met with confidence (the whole interval is at or
    above it) or only by the point estimate (when no set's interval clears it)."""

    blocks: list[str]
    order: list[str]  # all candidates, best (lowest score) first
    scores: dict[str, float]  # s(B) = R(B) / saving(B); inf: the block's saving is not measurable
    predicted: float  # sum of single-block savings of the chosen set
    measured: float | None  # measured saving of the chosen set (None when selected by count)
    target: float | None
    history: list[dict] = field(default_factory=list)  # each measured attempt
    measured_interval: list[float] | None = None
    confidence: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def rank_blocks(recoverability: dict[str, float], saving: dict[str, float | None],
                macs: dict[str, float] | None = None) -> tuple[list[str], dict[str, float]]:
    """Candidates by ascending s(B) = R(B) / saving(B); blocks whose saving is not measurable (None or
    <= 0) rank last. The tie rule: equal scores order by lower R, then more MACs removed, then name
    (savings come rounded to the latency table's resolution, so differences inside the measurement's
    interval tie and this rule decides)."""
    macs = macs or {}
    scores = {}
    for name, r in recoverability.items():
        s = saving.get(name)
        scores[name] = r / s if s is not None and s > 0 else math.inf
    order = sorted(scores, key=lambda n: (scores[n], recoverability[n], -float(macs.get(n, 0.0)), n))
    return order, scores


def select_blocks(
    recoverability: dict[str, float],
    saving: dict[str, float | None],
    *,
    latency_reduction: float | None = None,
    num_blocks: int | None = None,
    measure: Callable[[list[str]], Measured] | None = None,
    dropped: Sequence[str] = (),
    macs: dict[str, float] | None = None,
) -> Selection:
    """Pick blocks for a latency target (fraction, e.g. 0.22) or a fixed count ``num_blocks``.

    ``saving[name]`` is the fraction of latency saved by dropping that block alone (None: not measurable);
    ``measure(names)`` returns the measured fraction for a set, as a number or as an object with ``value``,
    ``low`` and ``high`` (required with a latency target). A set is accepted when the *low* end of its
    interval meets the target, so a lucky measurement does not decide. ``dropped`` names blocks removed
    by earlier steps of iterative pruning: they count toward the target and are part of every measured set
    (and of ``predicted``/``measured``), but they are not candidates and are not returned.
    """
    if (latency_reduction is None) == (num_blocks is None):
        raise ConfigError("give exactly one of latency_reduction (e.g. 0.22) or num_blocks (e.g. 3)")
    order, scores = rank_blocks(recoverability, saving, macs)
    if num_blocks is not None:
        if not 1 <= num_blocks <= len(order):
            raise TargetError(f"num_blocks={num_blocks} but the model has {len(order)} drop candidates; choose 1..{len(order)}")
        chosen = order[:num_blocks]
        return Selection(chosen, order, scores, sum(saving.get(n) or 0.0 for n in chosen), None, None)
    if not 0 < latency_reduction < 1:
        raise ConfigError(f"latency_reduction must be a fraction in (0, 1), e.g. 0.22; got {latency_reduction}")
    if measure is None:
        raise ConfigError("a latency target needs a measure(names) -> saved fraction function")
    useful = [n for n in order if (saving.get(n) or 0.0) > 0]
    base = list(dropped)
    history: list[dict] = []
    attempts: list[list[str]] = [[]] if base else []  # with earlier drops, first check whether they already meet the target
    attempts += [useful[: i + 1] for i in range(len(useful))]
    for chosen in attempts:
        predicted = sum(saving.get(n) or 0.0 for n in base + chosen)
        if predicted < latency_reduction and len(chosen) < len(useful):
            continue
        value, low, high = _interval(measure(base + chosen))
        history.append({"blocks": base + chosen, "predicted": predicted, "measured": value, "low": low, "high": high,
                        "chosen": list(chosen)})
        if low >= latency_reduction:
            return Selection(list(chosen), order, scores, predicted, value, latency_reduction, _plain(history),
                             [low, high], "met with confidence")
    by_point = [h for h in history if h["measured"] >= latency_reduction]
    if by_point:  # no interval clears the target: the set whose interval comes closest, flagged as such
        best = max(by_point, key=lambda h: (h["low"], -len(h["blocks"])))
        return Selection(best["chosen"], order, scores, best["predicted"], best["measured"], latency_reduction,
                         _plain(history), [best["low"], best["high"]], "met by the point estimate only")
    reach = max([h["measured"] for h in history] + [0.0])
    earlier = f" (with the {len(base)} dropped before)" if base else ""
    raise TargetError(
        f"latency reduction {latency_reduction:.1%} is not reachable by dropping blocks: dropping all "
        f"{len(useful)} candidates that save time{earlier} measures {reach:.1%}. Ask for at most "
        f"{math.floor(reach * 100) / 100:.2f}, or combine with channel pruning (Torch-Pruning) for more."
    )


def _plain(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "chosen"} for h in history]
