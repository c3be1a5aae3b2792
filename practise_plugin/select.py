"""Choose which blocks to drop: lowest recoverability per unit of latency saved, until the target is met.

Why it exists: the paper ranks blocks by s(B) = R(B) / latency_saving(B) and picks k by hand. Users
think in latency budgets, so we add blocks in score order until the *predicted* saving (sum of the
single-block savings) reaches the target, then *measure* the combined drop and keep adding until the
measured saving meets it too. The result says what was reached, and an unreachable target fails with
what is reachable instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from .errors import ConfigError, TargetError


@dataclass
class Selection:
    """The chosen blocks and how the target was met."""

    blocks: list[str]
    order: list[str]  # all candidates, best (lowest score) first
    scores: dict[str, float]  # s(B) = R(B) / saving(B)
    predicted: float  # sum of single-block savings of the chosen set
    measured: float | None  # measured saving of the chosen set (None when selected by count)
    target: float | None
    history: list[dict] = field(default_factory=list)  # each measured attempt

    def to_dict(self) -> dict:
        return asdict(self)


def rank_blocks(recoverability: dict[str, float], saving: dict[str, float]) -> tuple[list[str], dict[str, float]]:
    """Candidates by ascending s(B) = R(B) / saving(B); blocks that save nothing rank last."""
    scores = {}
    for name, r in recoverability.items():
        s = saving.get(name, 0.0)
        scores[name] = r / s if s > 0 else math.inf
    order = sorted(scores, key=lambda n: (scores[n], recoverability[n], n))
    return order, scores


def select_blocks(
    recoverability: dict[str, float],
    saving: dict[str, float],
    *,
    latency_reduction: float | None = None,
    num_blocks: int | None = None,
    measure: Callable[[list[str]], float] | None = None,
    dropped: Sequence[str] = (),
) -> Selection:
    """Pick blocks for a latency target (fraction, e.g. 0.22) or a fixed count ``num_blocks``.

    ``saving[name]`` is the fraction of latency saved by dropping that block alone; ``measure(names)``
    returns the measured fraction for a set (required with a latency target). ``dropped`` names blocks
    removed by earlier steps of iterative pruning: they count toward the latency target and are part of
    every measured set (and of ``predicted``/``measured``), but they are not candidates and are not returned.
    """
    if (latency_reduction is None) == (num_blocks is None):
        raise ConfigError("give exactly one of latency_reduction (e.g. 0.22) or num_blocks (e.g. 3)")
    order, scores = rank_blocks(recoverability, saving)
    if num_blocks is not None:
        if not 1 <= num_blocks <= len(order):
            raise TargetError(f"num_blocks={num_blocks} but the model has {len(order)} drop candidates; choose 1..{len(order)}")
        chosen = order[:num_blocks]
        return Selection(chosen, order, scores, sum(saving.get(n, 0.0) for n in chosen), None, None)
    if not 0 < latency_reduction < 1:
        raise ConfigError(f"latency_reduction must be a fraction in (0, 1), e.g. 0.22; got {latency_reduction}")
    if measure is None:
        raise ConfigError("a latency target needs a measure(names) -> saved fraction function")
    useful = [n for n in order if saving.get(n, 0.0) > 0]
    base = list(dropped)
    history: list[dict] = []
    attempts: list[list[str]] = [[]] if base else []  # with earlier drops, first check whether they already meet the target
    attempts += [useful[: i + 1] for i in range(len(useful))]
    for chosen in attempts:
        predicted = sum(saving.get(n, 0.0) for n in base + chosen)
        if predicted < latency_reduction and len(chosen) < len(useful):
            continue
        measured = measure(base + chosen)
        history.append({"blocks": base + chosen, "predicted": predicted, "measured": measured})
        if measured >= latency_reduction:
            return Selection(list(chosen), order, scores, predicted, measured, latency_reduction, history)
    reach = max(history[-1]["measured"] if history else 0.0, 0.0)
    earlier = f" (with the {len(base)} dropped before)" if base else ""
    raise TargetError(
        f"latency reduction {latency_reduction:.1%} is not reachable by dropping blocks: dropping all "
        f"{len(useful)} candidates that save time{earlier} measures {reach:.1%}. Ask for at most "
        f"{math.floor(reach * 100) / 100:.2f}, or combine with channel pruning (Torch-Pruning) for more."
    )
