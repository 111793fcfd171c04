"""Under `python -m deploy`, a kill -9 of the index's embedded postmaster heals within 10 s (issue 15)."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.launcher import children, cmdline, start_launcher
from tests.support.net import free_ports


def _postmaster(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _search_status(http: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/search?q=a+dog", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@pytest.mark.slow
def test_killed_postmaster_under_the_launcher_serves_again_within_10_s(tiny_bundle_dir: Path,
                                                                       tmp_path_factory) -> None:
    data = tmp_path_factory.mktemp("pgkill", numbered=True)
    http, embedder, index = free_ports(3)
    proc = start_launcher(tiny_bundle_dir, data, (http, embedder, index), clean_env=True)
    pid_file = data / "index" / "postgres" / "pgdata" / "postmaster.pid"
    try:
        assert _search_status(http) == 200
        index_pid = next(pid for pid in children(proc.pid) if "index_service" in cmdline(pid))
        old = _postmaster(pid_file)
        assert old is not None

        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < 10:
            if _postmaster(pid_file) not in (None, old) and _search_status(http) == 200:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"/api/search did not answer 200 on a new postmaster within 10 s "
                        f"(last status {_search_status(http)})")
        # Healed in place: the index process is the same one, and the launcher still supervises it.
        assert index_pid in children(proc.pid) and proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not pid_file.exists(), "the restarted Postgres was not shut down cleanly"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
