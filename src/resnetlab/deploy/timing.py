"""Timing a runtime call: every call's time after a warm-up, for medians and percentiles (bench, the backend
probe). Our own loop, not torch.utils.benchmark's Timer.blocked_autorange: p50/p90/p99 need every call's time,
and blocked_autorange gives only the means of blocks of calls."""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["call_times"]


def call_times(run: Callable[[Any], Any], x: Any, seconds: float, min_calls: int = 3, warm_s: float = 0.0
               ) -> list[float]:
    """Seconds of each call of ``run(x)`` for at least ``min_calls`` calls and ``seconds``, after one warm-up call
    (first-call graph compilation, allocator growth, caches) and ``warm_s`` more seconds of them."""
    run(x)
    t_end = time.perf_counter() + warm_s
    while time.perf_counter() < t_end:
        run(x)
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return times
