"""The README's run command (`python -m deploy`) with the tiny model: healthy, serves, stops cleanly, and a
second launcher on the same ports leaves it alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.launcher import children, cmdline, start_launcher
from tests.support.net import free_ports


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def second_launcher(*ports: int, model: str = "random") -> tuple[int, float, list[str]]:
    """Run `python -m deploy` on these (gateway, embedder, index) ports; (status, seconds, stderr lines)."""
    http, embedder, index = ports
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "deploy", "--model", model, "--cache", "/nonexistent/cache",
             "--port", str(http), "--embedder-port", str(embedder), "--index-port", str(index)],
            capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the launcher started although a port was taken")
    return done.returncode, time.monotonic() - started, [line for line in done.stderr.splitlines() if line]


def test_a_taken_port_stops_the_launcher_before_it_starts_anything() -> None:
    http, embedder, index = free_ports(3)
    with socket.create_server(("127.0.0.1", index)) as holder:
        code, took, err = second_launcher(http, embedder, index)
        assert code != 0 and took < 5, (code, took, err)
        assert len(err) == 1 and f"port {index} " in err[0] and "taken" in err[0], err
        holder.settimeout(0.1)
        with pytest.raises(TimeoutError):
            holder.accept()  # the launcher never connected to, nor took over, the port it found taken
    code, _, err = second_launcher(http, http, index)
    assert code != 0 and len(err) == 1 and str(http) in err[0], err


@pytest.mark.slow
def test_run_command_reaches_healthy_serves_a_search_and_stops_cleanly(tiny_bundle_dir: Path,
                                                                        tmp_path_factory) -> None:
    data = tmp_path_factory.mktemp("run", numbered=True)
    http, embedder, index = free_ports(3)
    proc = start_launcher(tiny_bundle_dir, data, (http, embedder, index))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/search?q=a+dog+on+a+beach", timeout=30) as r:
            body = json.load(r)
        assert r.status == 200 and body["hits"] == [] and "embed_ms" in body["timings"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/stats", timeout=10) as r:
            assert json.load(r)["semantic"] is False
        services = children(proc.pid)
        postgres = data / "index" / "postgres" / "pgdata" / "postmaster.pid"
        assert len(services) == 3 and postgres.exists()

        # A second launcher on the same ports exits at once and leaves the first one alone.
        code, took, err = second_launcher(http, embedder, index, model=str(tiny_bundle_dir))
        assert code != 0 and took < 5 and len(err) == 1 and "taken" in err[0], (code, took, err)
        assert children(proc.pid) == services
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/search?q=a+dog", timeout=30) as r:
            assert r.status == 200

        # A crashed service is restarted and the system answers again.
        embedder_pid = next(pid for pid in services if "embedder_service" in cmdline(pid))
        os.kill(embedder_pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/search?q=a+cat", timeout=10) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the system did not answer again after the embedder was killed")
        services = children(proc.pid)
        assert len(services) == 3 and embedder_pid not in services
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in services)
        assert not postgres.exists(), "Postgres was not shut down cleanly"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
