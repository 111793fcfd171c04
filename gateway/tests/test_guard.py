"""Tokens, start-up refusals, model mismatch and backends that go away and come back."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedder_service.tests import images
from gateway.config import ConfigError, GatewayConfig
from gateway.tests.test_api import upload
from index_service.server import Deps
from index_service.server import serve as serve_index
from protos.semsearch.v1 import index_pb2
from tests.support.stack import TOKEN, Stack


def test_write_endpoints_need_the_token(stack: Stack) -> None:
    gw = stack.gateway(token=TOKEN)
    data = images.jpeg(seed=601)
    no_token = upload(gw.client, data)
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    assert upload(gw.client, data, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert upload(gw.client, data, headers={"Authorization": TOKEN}).status_code == 401  # scheme missing
    ok = upload(gw.client, data, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 201
    image_id = ok.json()["results"][0]["id"]
    # Reading and searching stay open.
    assert gw.client.get(f"/api/images/{image_id}").status_code == 200
    assert gw.client.get("/api/search", params={"q": "cat"}).status_code == 200
    assert gw.client.get("/api/stats").json()["write_token_required"] is True
    assert gw.client.delete(f"/api/images/{image_id}").status_code == 401
    assert gw.client.get(f"/api/images/{image_id}").status_code == 200
    deleted = gw.client.delete(f"/api/images/{image_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert deleted.status_code == 200


def test_refuses_to_start_open_on_a_public_address() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_TOKEN"):
        GatewayConfig.from_env({"GATEWAY_HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match="GATEWAY_TOKEN"):
        GatewayConfig.from_env({"GATEWAY_HOST": "my-host.example"})
    assert GatewayConfig.from_env({"GATEWAY_HOST": "0.0.0.0", "GATEWAY_TOKEN": "s3cret"}).token == "s3cret"
    assert GatewayConfig.from_env({"GATEWAY_HOST": "::", "GATEWAY_ALLOW_OPEN_WRITES": "yes"}).allow_open_writes
    assert GatewayConfig.from_env({"GATEWAY_HOST": "::1"}).host == "::1"
    assert "s3cret" not in repr(GatewayConfig(token="s3cret"))


def test_main_refuses_a_public_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.run([sys.executable, "-m", "gateway"], env={**env, "GATEWAY_HOST": "0.0.0.0"},
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2 and "GATEWAY_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("env", "name"), [
    ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
    ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT"),
    ({"GATEWAY_MAX_FILES": "0"}, "GATEWAY_MAX_FILES"),
    ({"GATEWAY_SEARCH_DEADLINE_S": "soon"}, "GATEWAY_SEARCH_DEADLINE_S"),
    ({"GATEWAY_ALLOW_OPEN_WRITES": "maybe"}, "GATEWAY_ALLOW_OPEN_WRITES"),
    ({"GATEWAY_MAX_DEPTH": "5000"}, "GATEWAY_MAX_DEPTH"),
    ({"GATEWAY_MAX_FILE_MB": "0"}, "GATEWAY_MAX_FILE_MB"),
    ({"GATEWAY_DEFAULT_K": "300"}, "GATEWAY_DEFAULT_K"),
    ({"GATEWAY_LOG_LEVEL": "LOUD"}, "GATEWAY_LOG_LEVEL"),
    ({"GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        GatewayConfig.from_env(env)


def test_blank_settings_keep_their_defaults() -> None:
    config = GatewayConfig.from_env({"GATEWAY_PORT": " ", "GATEWAY_MAX_K": "", "GATEWAY_LOG_FORMAT": ""})
    assert (config.port, config.max_k, config.log_format) == (8080, 200, "text")
    assert GatewayConfig.from_env({"GATEWAY_LOG_FORMAT": "JSON", "GATEWAY_LOG_LEVEL": "debug"}).log_format == "json"


def test_a_taken_port_stops_start_up_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "gateway"], env={**env, "GATEWAY_PORT": str(port)},
                              capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode != 0 and time.monotonic() - started < 5
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0], proc.stderr


def test_model_mismatch_is_409(private_stack: Stack) -> None:
    rng = np.random.default_rng(7)
    vec = rng.standard_normal(512).astype(np.float32)
    vec /= np.linalg.norm(vec)
    original = b"an image made by another model"
    private_stack.index.stub.Upsert(index_pb2.UpsertRequest(items=[index_pb2.UpsertItem(
        sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
        embedding=vec.tolist(), model_id="other-model@1")]), timeout=10)
    gw = private_stack.gateway()
    r = gw.client.get("/api/search", params={"q": "a cat"})
    assert r.status_code == 409 and "other-model@1" in r.json()["message"]
    assert gw.client.post("/api/search/image", files={"file": ("a.jpg", images.jpeg(seed=1))}).status_code == 409
    added = upload(gw.client, images.jpeg(seed=701))
    assert added.status_code == 409 and added.json()["results"][0]["status"] == 409


def wait_for(client: httpx.Client, path: str, status: int, within_s: float) -> float:
    """Seconds until `path` answers `status`; fails after within_s."""
    started = time.monotonic()
    while True:
        r = client.get(path)
        if r.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, f"{path} still {r.status_code}: {r.text}"
        time.sleep(0.1)


def test_embedder_stopped_and_restarted(private_stack: Stack) -> None:
    gw = private_stack.gateway(search_deadline_s=3.0, retry_after_s=2)
    search = "/api/search?q=a+lighthouse"
    assert gw.client.get(search).status_code == 200
    private_stack.embedder.stop()
    started = time.monotonic()
    r = gw.client.get(search)
    assert r.status_code == 503 and time.monotonic() - started < 3.0
    assert r.headers["retry-after"] == "2" and "unavailable" in r.json()["message"]
    ready = gw.client.get("/readyz")
    assert ready.status_code == 503 and ready.json() == {"ready": False, "embedder": False, "index": True}
    assert gw.client.get("/healthz").status_code == 200  # the process itself is fine
    assert gw.client.get("/").status_code == 200  # and so is the page
    private_stack.embedder.restart()
    assert wait_for(gw.client, search, 200, within_s=5.0) < 5.0
    assert gw.client.get("/readyz").status_code == 200


def test_index_stopped_and_restarted(private_stack: Stack) -> None:
    gw = private_stack.gateway(search_deadline_s=3.0)
    index = private_stack.index
    image_id = upload(gw.client, images.jpeg(seed=801)).json()["results"][0]["id"]
    assert gw.client.get(f"/images/{image_id}/thumb").status_code == 200
    index.server.stop(0)
    index.deps.close()
    for path in ("/api/search?q=boats", f"/images/{image_id}/thumb", "/api/stats", "/api/labels"):
        started = time.monotonic()
        r = gw.client.get(path)
        assert r.status_code == 503 and "retry-after" in r.headers, path
        assert time.monotonic() - started < 3.0
    config = dataclasses.replace(index.config, port=private_stack.index_port)
    index.deps = Deps.build(config, config.dsn or "")
    index.server = serve_index(config, index.deps)
    index.wait_serving()
    assert wait_for(gw.client, f"/images/{image_id}/thumb", 200, within_s=5.0) < 5.0
    assert gw.client.get("/api/search", params={"q": "boats"}).json()["hits"][0]["id"] == image_id
