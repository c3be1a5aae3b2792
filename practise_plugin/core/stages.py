"""Wall-clock and CPU seconds per named stage of a run: where the time of a compression went.

Why it exists: users run this on real models on CPU boxes and need to know which stage (scoring, the
latency table, recovery, export) costs what, and how it grows; every ``practise compress`` report carries
these numbers, and ``benchmarks/scale.py`` fits their growth.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Stages:
    """Accumulates ``{stage: {"wall_s", "cpu_s", "calls"}}``; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            entry = self.seconds.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0})
            entry["wall_s"] += time.perf_counter() - wall
            entry["cpu_s"] += time.process_time() - cpu
            entry["calls"] += 1

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"wall_s": round(v["wall_s"], 3), "cpu_s": round(v["cpu_s"], 3), "calls": int(v["calls"])}
                for k, v in self.seconds.items()}
