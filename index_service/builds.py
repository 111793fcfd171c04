"""The session settings of an index build, and pgvector's word when its graph outgrew them."""

from __future__ import annotations

import logging
from dataclasses import replace

from psycopg2.extensions import connection, cursor

from index_service import pgtune, sizes
from index_service.catalog import Coll
from index_service.config import Config, HnswParams

log = logging.getLogger(__name__)

# pgvector's NOTICE when the graph no longer fits in maintenance_work_mem (the build then runs ~3x slower).
SPILL_NOTICE = "no longer fits into maintenance_work_mem"
# From this many rows a build takes a wider ef_construction: a better graph needs a narrower search beam for
# the same recall, but the build pays for it. Measured through the service on the 2-core Intel Xeon with
# bench.index's clustered vectors (2026-12-02, the recall keeper choosing the beam; JSON in bench/report):
#   at 1,000,000 rows, ef_construction   96                112              128
#   build after the bulk load            393 s             489 s            602 s (goal: 600)
#   the keeper's beam, search p50        ef 1000, 14.5 ms  ef 197, 5.2 ms   ef 197, 5.8 ms
#   recall@10 against numpy              0.990             0.985            0.998
# With 96 some points are hard to reach at any beam: the keeper measured 0.984 at ef 1000 and could not
# narrow. 64 held at most 0.94 at 1,000,000 rows; at 300,000 it reached 0.98 only from ef_search 200 (the
# keeper settled at 419: 19 ms a search); at 100,000 rows 64 holds 0.99 at ef_search 100.
LARGE_ROWS = 200_000
EF_CONSTRUCTION = (64, 112)  # below LARGE_ROWS, from it


def params(rows: int, configured: HnswParams) -> HnswParams:
    """The build's HNSW parameters: a configured ef_construction as it is, else one chosen from the size."""
    if configured.ef_construction:
        return configured
    chosen = EF_CONSTRUCTION[rows >= LARGE_ROWS]
    return replace(configured, ef_construction=max(chosen, 2 * configured.m))  # pgvector wants >= 2m


def prepare(cur: cursor, c: Coll, config: Config) -> tuple[str, HnswParams]:
    """Set build memory (sized from the collection unless configured) and parallel workers; returns the
    memory and the build's parameters."""
    rows = sizes.estimate_rows(cur, c)
    memory = config.maintenance_work_mem
    if memory.lower() == "auto":
        memory = pgtune.build_memory(rows, c.dim, config.hnsw.m)
    cur.execute("SELECT set_config('maintenance_work_mem', %s, false)", (memory,))
    # A session may ask for at most max_worker_processes; the server's own cap applies on top.
    cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(config.build_workers),))
    return memory, params(rows, config.hnsw)


def report_spill(conn: connection, c: Coll, memory: str) -> bool:
    """Log pgvector's notice that the graph spilled out of memory during the build; True if it did."""
    spilled = [n.strip() for n in conn.notices if SPILL_NOTICE in n]
    del conn.notices[:]
    if spilled:
        log.warning("building %s: %s (maintenance_work_mem %s); the build runs several times slower, raise "
                    "INDEX_MAINTENANCE_WORK_MEM", c.index, spilled[0].removeprefix("NOTICE:").strip(), memory)
    return bool(spilled)
