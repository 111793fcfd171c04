"""The service as a process: embedded Postgres, health, SIGTERM, bad configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from index_service.pg import _free_port


def test_process_serves_on_embedded_postgres_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INDEX_"))}
    env.update(INDEX_DATA_DIR=str(tmp_path / "data"), INDEX_PORT=str(port), INDEX_HEALTH_INTERVAL_S="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "index_service"], env=env)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        channel.close()
        assert (tmp_path / "data" / "postgres" / "pgdata" / "postmaster.pid").exists()
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
