"""Where a prediction's time goes (``geoseg predict --profile``): per-stage timers that each task fills and
returns with its result, summed in the parent (no globals, so threads, processes and dask.distributed
workers all report).

Stages: ``load`` (loading the predictor: once per process, then a cache hit), ``read`` (reading tiles),
``normalise`` (radiometry, normalisation, batch assembly), ``wait`` (a task waiting for the model while
another task's forward runs: a process runs one forward at a time), ``forward`` (the model, test-time
augmentations included), ``blend`` (tile weights, pieces, blending, classes and percentages), ``write``
(writing blocks), ``cog`` (building the COGs, in the parent).  Task stages are summed over tasks, so with
several workers they add up to more than the wall time.

A disabled :class:`Timer` hands out one shared no-op context: profiling costs nothing when off.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

STAGES = ("load", "read", "normalise", "wait", "forward", "blend", "write", "cog")
_OFF = contextlib.nullcontext()


class _Stage:
    __slots__ = ("_timer", "_name", "_t0")

    def __init__(self, timer: Timer, name: str):
        self._timer, self._name, self._t0 = timer, name, 0.0

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        s = self._timer.seconds
        s[self._name] = s.get(self._name, 0.0) + time.perf_counter() - self._t0


class Timer:
    """Seconds per stage; ``with timer.stage("read"): ...``.  Picklable (a plain dict inside)."""

    __slots__ = ("enabled", "seconds")

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.seconds: dict[str, float] = {}

    def stage(self, name: str) -> Any:
        return _Stage(self, name) if self.enabled else _OFF

    def add(self, other: Mapping[str, float] | None) -> None:
        for k, v in (other or {}).items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def result(self) -> dict[str, float] | None:
        """The seconds per stage, or None when disabled (what a task returns)."""
        return dict(self.seconds) if self.enabled else None


def summary(stages: Mapping[str, float], graph_wall: float, tasks: int) -> dict:
    """The ``run.json`` ``profile`` record: seconds per stage (every stage, in order) and the graph's wall time."""
    return {"stages_s": {k: round(float(stages.get(k, 0.0)), 4) for k in STAGES},
            "graph_wall_s": round(graph_wall, 4), "tasks": tasks,
            "note": "stages are summed over tasks (concurrent tasks overlap); cog is in the parent"}


def format_profile(profile: Mapping) -> str:
    """The profile as a few lines for stderr."""
    stages = profile["stages_s"]
    total = sum(v for k, v in stages.items() if k != "cog") or 1.0
    lines = [f"profile: {profile['tasks']} tasks, graph wall {profile['graph_wall_s']:.2f} s; "
             "seconds summed over tasks (concurrent tasks overlap)"]
    for k in STAGES:
        share = "" if k == "cog" else f"{100 * stages[k] / total:6.1f} %"
        lines.append(f"  {k:<10}{stages[k]:>10.2f} s {share}" + ("  (in the parent, after the graph)"
                                                               if k == "cog" else ""))
    return "\n".join(lines)
