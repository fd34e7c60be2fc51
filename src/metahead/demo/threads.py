"""How many torch threads the demo (and the app) use: the request, $OMP_NUM_THREADS, or the cores idle now."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [float(v) for v in fields[:8]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def idle_cores(interval: float = 0.5) -> float | None:
    """How many cores sat idle over the next `interval` seconds (None where it cannot be measured)."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(interval)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    busy_fraction = (after[0] - before[0]) / (after[1] - before[1])
    return (os.cpu_count() or 1) * (1.0 - busy_fraction)


def choose_threads(requested: int = 0) -> int:
    """torch threads for the demo: `requested`, else $OMP_NUM_THREADS, else the cores idle right now
    (at least 1). On a CPU shared with other jobs, more threads than free cores is many times slower
    (docs/training.md, "CPU threads")."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    free = idle_cores()
    if free is None:
        return cores
    return max(1, min(cores, int(free + 0.3)))
