"""The README's run command (`python -m deploy`) as a test starts it, and what its process tree looks like."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def start_launcher(bundle: Path, data: Path, ports: tuple[int, int, int], clean_env: bool = False,
                   timeout_s: float = 180) -> subprocess.Popen[str]:
    """`python -m deploy` on (gateway, embedder, index) ports, returned once it prints that it is ready.

    clean_env drops PG… and INDEX_… variables so the services run on their defaults.
    """
    http, embedder, index = ports
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "INDEX_"))} if clean_env else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy", "--model", str(bundle), "--data-dir", str(data),
         "--port", str(http), "--embedder-port", str(embedder), "--index-port", str(index)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    for line in proc.stdout:
        if "semsearch is ready" in line:
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the launcher was not ready in time")
    pytest.fail(f"the launcher exited with {proc.wait()} before it was ready")


def children(pid: int) -> list[int]:
    """The direct child processes of pid."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cmdline(pid: int) -> str:
    """A process's command line, spaces between the arguments."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
