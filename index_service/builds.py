"""The session settings of an index build, and pgvector's word when its graph outgrew them."""

from __future__ import annotations

import logging

from psycopg2.extensions import connection, cursor

from index_service import pgtune, sizes
from index_service.catalog import Coll
from index_service.config import Config

log = logging.getLogger(__name__)

# pgvector's NOTICE when the graph no longer fits in maintenance_work_mem (the build then runs ~3x slower).
SPILL_NOTICE = "no longer fits into maintenance_work_mem"


def prepare(cur: cursor, c: Coll, config: Config) -> str:
    """Set build memory (sized from the collection unless configured) and parallel workers; returns the memory."""
    memory = config.maintenance_work_mem
    if memory.lower() == "auto":
        memory = pgtune.build_memory(sizes.estimate_rows(cur, c), c.dim, config.hnsw.m)
    cur.execute("SELECT set_config('maintenance_work_mem', %s, false)", (memory,))
    # A session may ask for at most max_worker_processes; the server's own cap applies on top.
    cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(config.build_workers),))
    return memory


def report_spill(conn: connection, c: Coll, memory: str) -> bool:
    """Log pgvector's notice that the graph spilled out of memory during the build; True if it did."""
    spilled = [n.strip() for n in conn.notices if SPILL_NOTICE in n]
    del conn.notices[:]
    if spilled:
        log.warning("building %s: %s (maintenance_work_mem %s); the build runs several times slower, raise "
                    "INDEX_MAINTENANCE_WORK_MEM", c.index, spilled[0].removeprefix("NOTICE:").strip(), memory)
    return bool(spilled)
