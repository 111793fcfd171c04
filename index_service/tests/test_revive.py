"""The embedded Postgres restarted in place when its postmaster dies, and outage warnings rate-limited."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
import psycopg2
import pytest
from grpc_health.v1 import health_pb2

from index_service import monitor as monitor_module
from index_service.monitor import DbMonitor
from index_service.pg import EmbeddedPostgres
from index_service.server import Deps
from protos.semsearch.v1 import index_pb2
from semsearch_common.logs import Throttled
from tests.support.index import item, make_config, start_server, unit
from tests.support.net import free_port
from tests.support.pg import FAST_SETTINGS, create_database

pytestmark = pytest.mark.db  # each test runs a Postgres of its own


def test_killed_postmaster_is_restarted_and_serving_within_10_s(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", settings=FAST_SETTINGS)
    pg.start()
    dsn = create_database(pg)
    # The default check period: the bound must hold without a fast health interval.
    running = start_server(make_config(tmp_path / "data", dsn, health_interval_s=2.0), postgres=pg)
    try:
        rng = np.random.default_rng(40)
        vecs = [unit(rng) for _ in range(20)]
        items = [item(v, f"k{i}") for i, v in enumerate(vecs)]
        running.stub.Upsert(index_pb2.UpsertRequest(items=items), timeout=30)
        old = pg.postmaster_pid()
        assert old is not None
        # A backend busy computing notices its postmaster's death only when it next waits; left alone it
        # would keep the old shared memory and with it the new postmaster from starting.
        busy = psycopg2.connect(dsn)
        busy_pid = busy.get_backend_pid()
        threading.Thread(target=_spin, args=(busy,), daemon=True).start()
        time.sleep(0.3)
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        query = index_pb2.SearchRequest(vector=vecs[7].tolist(), k=1)
        hits = None
        while time.monotonic() - killed < 10:
            pid = pg.postmaster_pid()
            try:
                if pid not in (None, old) and running.health() == health_pb2.HealthCheckResponse.SERVING:
                    hits = running.stub.Search(query, timeout=2).hits
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        assert hits is not None, "the index did not serve again on a new postmaster within 10 s"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        stats = running.stub.Stats(index_pb2.StatsRequest(), timeout=5)
        assert stats.count == 20  # nothing lost
        assert f"port={pg.port} " in dsn  # restarted on the same port: the service's DSN stayed valid
        assert not psutil.pid_exists(busy_pid) or psutil.Process(busy_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        running.stop()
        pg.stop(mode="immediate")


def _spin(conn: psycopg2.extensions.connection) -> None:
    """A statement that runs for minutes without waiting on anything."""
    with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM generate_series(1, 10000000000)")


def test_outage_warnings_are_one_line_per_cause_per_interval(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    dead = f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres"  # nothing listens there
    config = make_config(tmp_path / "data", dead, health_interval_s=0.05, connect_timeout_s=1)
    checks: list[bool] = []
    deps = Deps.build(config, dead)
    monitor = DbMonitor(config, deps, checks.append)
    assert monitor.warnings.interval_s == monitor_module.WARN_INTERVAL_S == 10.0
    caplog.set_level(logging.WARNING, logger=monitor_module.log.name)
    monitor.start()
    try:
        stop = time.monotonic() + 1.5
        while time.monotonic() < stop:
            monitor.lost()  # what every failed request does
            time.sleep(0.01)
        lines = [r.getMessage() for r in caplog.records if "database not ready" in r.getMessage()]
        assert len(lines) == 1 and checks.count(False) >= 10, (lines, len(checks))
        # A shorter interval shows the count of what was held back.
        caplog.clear()
        monitor.warnings = Throttled(monitor_module.log, 0.5)
        time.sleep(1.3)
        lines = [r.getMessage() for r in caplog.records if "database not ready" in r.getMessage()]
        assert 2 <= len(lines) <= 4, lines
        assert any("more like it in the last" in line for line in lines[1:]), lines
        assert not any(checks[-5:])
    finally:
        monitor.stop()
        deps.close()


def test_an_external_database_is_never_restarted(tmp_path: Path) -> None:
    """Without an embedded cluster (deps.postgres None) the monitor only reconnects."""
    pg = EmbeddedPostgres(tmp_path / "pg", settings=FAST_SETTINGS)
    pg.start()
    dsn = create_database(pg)
    running = start_server(make_config(tmp_path / "data", dsn))
    try:
        pg.stop(mode="immediate")
        time.sleep(1.0)  # five health checks
        assert not pg.is_running()
        assert running.health() == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop()
        pg.stop(mode="immediate")
