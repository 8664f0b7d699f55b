"""How many CPUs this process may use: its affinity mask, capped by a container's CPU limit (cgroup v2 or v1).

Thread counts follow it (``Settings.preprocess_threads``, ``Settings.inference_threads``): a pod limited to 2
CPUs on a 64-core node would otherwise start 64 threads and be throttled.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# cgroup v2's CPU limit ("QUOTA PERIOD" or "max PERIOD"); cgroup v1 keeps quota and period in two files.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def cgroup_cpu_limit() -> int | None:
    """The container's CPU limit, rounded up to whole CPUs, or None when there is none (or no cgroup to read)."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (CGROUP_V1_CPU / "cpu.cfs_quota_us").read_text().strip()
            period = (CGROUP_V1_CPU / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def affinity_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a container CPU limit."""
    cpus, limit = affinity_cpus(), cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus
