"""Timing helpers: interleaved, warmed-up, median-of-repeats measurements.

Several contenders are timed in one loop (A, B, C, A, B, C, ...) so that load from other
processes on the machine hits all of them alike. A short pause separates calls so the
spinning worker threads of one framework (OpenMP, ONNX Runtime) do not eat into the next.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

PAUSE_S = 0.02


def interleaved(
    contenders: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 2, min_time_s: float = 0.0
) -> dict[str, dict[str, float]]:
    """Median (and min, max) wall time in seconds of each contender's call, timed round-robin.

    ``warmup`` untimed calls each first (compilation, allocator, caches). Timed rounds continue
    past ``repeats`` until each contender has ``min_time_s`` of timed calls, for fast calls.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    rounds = 0
    while rounds < repeats or any(sum(s) < min_time_s for s in samples.values()):
        for name, fn in contenders.items():
            time.sleep(PAUSE_S)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            samples[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        rounds += 1
        if rounds >= 50 * max(repeats, 1):
            break
    return {name: summarize(times, cpu[name]) for name, times in samples.items()}


def summarize(times: list[float], cpu_times: list[float] | None = None) -> dict[str, float]:
    """Wall-time median, min, max and count; with ``cpu_times`` also the median process CPU time
    (all threads), which other processes' load disturbs less than wall time."""
    return {
        "median_s": statistics.median(times),
        **({"cpu_median_s": statistics.median(cpu_times)} if cpu_times else {}),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
    }
