"""Postgres settings sized from the machine: the embedded server's configuration and index-build memory.

Untuned, the embedded server ran with shared_buffers 128 MB and max_wal_size 1 GB ("checkpoints are
occurring too frequently" fourteen times during a 300,000-row load), and HNSW builds outgrew the fixed
1 GB of maintenance_work_mem at about 380,000 rows, then ran about 3x slower (issue 14).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

MB = 1024 * 1024
GB = 1024 * MB
SETTING_NAME = re.compile(r"^[a-z][a-z0-9_.]*\Z")
# Values pass through pg_ctl's shell command line: letters, digits and unit or path punctuation only.
SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.:/+\-]+\Z")
# pgvector's HNSW graph in memory, measured: 1 GB held about 380,000 512-d vectors with m=16 (~2.8 KB
# each); per element that is the vector (4 bytes a dimension) and its neighbour lists (~64 B per m).
GRAPH_BYTES_PER_DIM = 4
GRAPH_BYTES_PER_M = 64
GRAPH_OVERHEAD = 256
HEADROOM = 1.25


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when smaller."""
    total = int(psutil.virtual_memory().total)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            return int(text)
    return total


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_workers(cpus: int | None = None) -> int:
    """Parallel workers of an index build besides its leader: one per further CPU, at most 7."""
    return max(0, min((cpus or cpu_count()) - 1, 7))


def server_settings(memory: int | None = None, cpus: int | None = None) -> dict[str, str]:
    """The embedded server's settings for a machine (it shares it with the other services)."""
    memory = memory or machine_memory()
    cpus = cpus or cpu_count()
    mb = memory // MB
    workers = build_workers(cpus)
    return {
        # The usual quarter of memory for the buffer cache, at least the default and at most 16 GB.
        "shared_buffers": f"{min(max(mb // 4, 128), 16 * 1024)}MB",
        # A planner hint only: the share of memory the OS page cache may hold of the table.
        "effective_cache_size": f"{max(mb // 2, 256)}MB",
        # Sorts and hash tables of one query step; filters and exact fallbacks sort k-sized results.
        "work_mem": f"{min(max(mb // 256, 4), 64)}MB",
        # Bulk loads write gigabytes of WAL (vectors and thumbnails): checkpoint by time, not by size.
        "max_wal_size": f"{min(max(mb // 4, 2048), 16 * 1024)}MB",
        "min_wal_size": "512MB",
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "wal_compression": "on",
        "max_worker_processes": str(max(8, workers + 4)),
        "max_parallel_workers": str(max(2, workers)),
        "max_parallel_maintenance_workers": str(workers),
    }


def embedded_settings(tune: bool, overrides: dict[str, str], memory: int | None = None,
                      cpus: int | None = None) -> dict[str, str]:
    """The embedded server's settings: tuned from the machine (unless `tune` is off), then the overrides."""
    out = server_settings(memory, cpus) if tune else {}
    out.update(overrides)
    return out


def parse_settings(text: str) -> dict[str, str]:
    """`key=value,key=value` (INDEX_PG_SETTINGS); raises ValueError naming a bad entry."""
    out: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = entry.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not SETTING_NAME.match(key):
            raise ValueError(f"{entry!r} is not key=value with a Postgres setting name")
        if not SETTING_VALUE.match(value):
            raise ValueError(f"the value of {key} may hold only letters, digits and . _ : / + -")
        out[key] = value
    return out


def graph_bytes(rows: int, dim: int, m: int) -> int:
    """Memory an HNSW build needs to hold its whole graph (pgvector), with some headroom."""
    per_row = GRAPH_BYTES_PER_DIM * dim + GRAPH_BYTES_PER_M * m + GRAPH_OVERHEAD
    return int(rows * per_row * HEADROOM)


def build_memory(rows: int, dim: int, m: int, memory: int | None = None) -> str:
    """maintenance_work_mem for building one collection's index: its graph, within a quarter of memory."""
    cap = max((memory or machine_memory()) // 4, 64 * MB)
    wanted = max(graph_bytes(rows, dim, m), 64 * MB)
    return f"{min(wanted, cap) // MB}MB"
