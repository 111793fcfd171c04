"""The service as a process: embedded Postgres, health, SIGTERM, bad configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common import channels
from tests.support.net import free_port


@pytest.mark.db  # the process starts its embedded Postgres
def test_process_serves_on_embedded_postgres_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INDEX_"))}
    env.update(INDEX_DATA_DIR=str(tmp_path / "data"), INDEX_PORT=str(port), INDEX_HEALTH_INTERVAL_S="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "index_service"], env=env)
    try:
        channels.wait_serving(f"127.0.0.1:{port}", 60, alive=lambda: proc.poll() is None)
        assert (tmp_path / "data" / "postgres" / "pgdata" / "postmaster.pid").exists()
        _second_instance_is_refused(port, env, tmp_path)
        with channels.channel(f"127.0.0.1:{port}") as chan:  # still the first instance's, and it still answers
            assert index_pb2_grpc.IndexStub(chan).Stats(index_pb2.StatsRequest()).count == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not (tmp_path / "data" / "postgres" / "pgdata" / "postmaster.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_configuration_names_the_variable() -> None:
    env = dict(os.environ, INDEX_HNSW_M="lots")
    res = subprocess.run([sys.executable, "-m", "index_service"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and "INDEX_HNSW_M" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def _second_instance_is_refused(port: int, env: dict[str, str], tmp_path: Path) -> None:
    """A second instance on the same port exits within 5 s with one line naming it, touching no database."""
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "index_service"], capture_output=True, text=True, timeout=30,
                            env=dict(env, INDEX_DATA_DIR=str(tmp_path / "second")))
    assert time.monotonic() - started < 5.0
    assert second.returncode != 0
    lines = [line for line in second.stderr.splitlines() if line.startswith("index_service:")]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], second.stderr
    assert not (tmp_path / "second" / "postgres").exists()
