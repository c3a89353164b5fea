"""How many CPUs this process may use (the harness's thread default; the launcher's share)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cpus() -> int:
    """CPUs this process may use: its CPU affinity, bounded by a cgroup v2 CPU quota
    (a container's CPU limit), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - no affinity API on this platform
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)
