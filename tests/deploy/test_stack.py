"""The container images really run: build them, start the stack, use it through the gateway, crash parts of it.

Selected only with `-m deploy` (make test-deploy): it needs a Docker engine and takes minutes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import images
from tests.deploy.engine import Docker, EngineUnavailable, engine
from tests.deploy.stack import Ports, Stack

httpx = pytest.importorskip("httpx")
Image = pytest.importorskip("PIL.Image")

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(7200)]
UPLOADS = 6
LOADED = 8
START_TIMEOUT_S = 300.0


class Clock:
    """Named durations of the run, printed at the end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.laps: list[tuple[str, float]] = []
        self._last = self.started

    def lap(self, name: str) -> None:
        """Record the time since the previous lap under `name`."""
        now = time.monotonic()
        self.laps.append((name, now - self._last))
        self._last = now

    def report(self) -> str:
        """One line per lap and the total."""
        lines = [f"  {name:<38} {seconds:7.1f} s" for name, seconds in self.laps]
        lines.append(f"  {'total':<38} {time.monotonic() - self.started:7.1f} s")
        return "test-deploy durations:\n" + "\n".join(lines)


def write_images(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` small PNGs of distinct colors in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        color = ((seed * 37 + i * 53) % 256, (seed * 11 + i * 97) % 256, (i * 151) % 256)
        path = folder / f"img-{seed}-{i}.png"
        Image.new("RGB", (64 + i, 48 + i), color).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """A running engine (started here if needed)."""
    try:
        with engine() as running:
            yield running
    except EngineUnavailable as err:
        pytest.skip(str(err))


def count(client: httpx.Client) -> int:
    """Images in the collection, as the gateway reports them."""
    reply = client.get("/api/stats", timeout=30)
    reply.raise_for_status()
    return int(reply.json()["count"])


def wait_answering(client: httpx.Client, timeout_s: float) -> None:
    """Until a search goes through the gateway to both services again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/api/search", params={"q": "a photo"}, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the gateway did not answer searches within {timeout_s:.0f} s")
        time.sleep(1)


def test_stack_runs_and_survives_crashes(docker: Docker, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """Build, start, upload and load, search, SIGKILL index and Postgres, nothing lost, tear down."""
    clock = Clock()
    base = images.base_image(docker)
    clock.lap(f"base image ({base})")
    for name in images.IMAGES:
        images.build(docker, name, base)
        clock.lap(f"build semsearch/{name}")

    token = secrets.token_hex(16)
    stack = Stack(docker, Ports(), tiny_bundle_dir, tmp_path / "load", token)
    stack.remove()
    try:
        stack.start()
        stack.wait_healthy(["postgres", "index", "embedder", "gateway"], START_TIMEOUT_S)
        clock.lap("start the stack until healthy")

        url = f"http://127.0.0.1:{stack.ports.gateway}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            files = [("files", (p.name, p.read_bytes(), "image/png"))
                     for p in write_images(tmp_path / "upload", UPLOADS, seed=1)]
            reply = client.post("/api/images", files=files, data={"label": "uploaded"}, timeout=120)
            assert reply.status_code == 201, reply.text
            ids = [item["id"] for item in reply.json()["results"] if item["outcome"] == "created"]
            assert len(ids) == UPLOADS, reply.text
            write_images(tmp_path / "load" / "loaded", LOADED, seed=2)
            print(stack.load(tmp_path / "load")[-500:])
            total = count(client)
            assert total == UPLOADS + LOADED
            hits = client.get("/api/search", params={"q": "a photo", "k": 50}, timeout=30).json()["hits"]
            assert len(hits) == total
            clock.lap("upload, load and search")

            for name in ("index", "postgres"):
                before = stack.crash(name)
                stack.wait_healthy([name, "index"], START_TIMEOUT_S, restarts={name: before + 1})
                wait_answering(client, START_TIMEOUT_S)
                assert count(client) == total, f"rows lost when {name} was killed"
                for image_id in ids:
                    original = client.get(f"/images/{image_id}", timeout=30)
                    assert original.status_code == 200, (name, image_id, original.status_code)
                clock.lap(f"SIGKILL {name}: restarted, nothing lost")
    except BaseException:
        print(stack.logs(["postgres", "index", "embedder", "gateway"]))
        raise
    finally:
        stack.remove()
        clock.lap("tear down")
        print(clock.report())
