"""Start services as child processes, wait for health, restart the ones that crash, stop them all."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from semsearch_common import channels

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this (child) process when its parent dies."""
    # Linux: the child gets SIGTERM if the launcher itself dies (even by SIGKILL): no orphans.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port already (a bind test, as the services' own bind will do)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # the service itself reports a bad host
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        # As the servers do: a port whose last connections linger in TIME_WAIT is not taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return True
    return False


def grpc_ready(addr: str, service: str = "") -> Callable[[], bool]:
    """A probe: True when the gRPC health service at addr reports SERVING."""
    def probe() -> bool:
        with channels.channel(addr) as chan:
            return channels.is_serving(chan, service)
    return probe


def http_ready(url: str) -> Callable[[], bool]:
    """A probe: True when url answers 200."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                status: int = response.status
                return status == 200
        except OSError:
            return False
    return probe


@dataclass
class Service:
    """One supervised process: how to start it and how to know it is ready."""

    name: str
    module: str
    env: dict[str, str]
    ready: Callable[[], bool]
    process: subprocess.Popen[str] | None = None
    restarts: deque[float] = field(default_factory=lambda: deque(maxlen=5))
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def start(self) -> None:
        """Spawn the process; its output is echoed with a name prefix and kept for crash reports."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env={**os.environ, **self.env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=die_with_parent)
        assert self.process.stdout is not None  # stdout=PIPE
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True,
                         name=f"log-{self.name}").start()

    def running(self) -> subprocess.Popen[str]:
        """The process start() spawned last."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process

    def _pump(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.tail.append(line.rstrip())
            print(f"[{self.name}] {line}", end="", file=sys.stderr, flush=True)


class Supervisor:
    """Runs services in order, keeps them up, and stops them in reverse order."""

    def __init__(self, services: list[Service], grace_s: float = 10.0) -> None:
        self.services = services
        self.grace_s = grace_s
        self.stopping = threading.Event()

    def start_all(self, timeout_s: float = 180.0) -> None:
        """Start each service and wait until it reports ready before the next one."""
        for service in self.services:
            service.start()
            self._wait_ready(service, timeout_s)
            log.info("%s is ready", service.name)

    def _wait_ready(self, service: Service, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not service.ready():
            if self.stopping.is_set():
                raise InterruptedError("stopped while starting")
            if service.running().poll() is not None:
                raise RuntimeError(f"{service.name} exited with {_how(service.running().returncode)} while "
                                   f"starting:\n  " + "\n  ".join(list(service.tail)[-8:]))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service.name} was not ready within {timeout_s:.0f} s")
            time.sleep(0.2)

    def watch(self, poll_s: float = 0.5) -> None:
        """Until stop(): restart any service that exits, giving up after 5 crashes in a minute."""
        while not self.stopping.wait(poll_s):
            for service in self.services:
                code = service.running().poll()
                if code is None or self.stopping.is_set():
                    continue
                now = time.monotonic()
                service.restarts.append(now)
                reason = "; ".join(list(service.tail)[-3:]) or "no output"
                log.error("%s exited with %s (last output: %s)", service.name, _how(code), reason)
                if len(service.restarts) == service.restarts.maxlen and now - service.restarts[0] < 60:
                    raise RuntimeError(f"{service.name} crashed 5 times within a minute; giving up")
                log.warning("restarting %s", service.name)
                service.start()

    def stop(self) -> None:
        """SIGTERM each process, newest first; SIGKILL what outlives the grace period."""
        self.stopping.set()
        for service in reversed(self.services):
            process = service.process
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", service.name, self.grace_s)
                process.kill()
                process.wait()
            log.info("%s stopped (%s)", service.name, _how(process.returncode))


def _how(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
