"""`python -m embedder_service` as a real process: start-up, metrics, SIGTERM, bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from embedder_service.server import SERVICE
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc
from semsearch_common import channels
from tests.support.net import free_port


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "embedder_service"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_serving(port: int, timeout: float = 60) -> None:
    channels.wait_serving(f"127.0.0.1:{port}", timeout, service=SERVICE)


def test_serves_exposes_metrics_and_stops_cleanly_on_sigterm(tiny_bundle_dir: Path) -> None:
    port, metrics_port = free_port(), free_port()
    proc = start({"EMBEDDER_MODEL_DIR": str(tiny_bundle_dir), "EMBEDDER_PORT": str(port),
                  "EMBEDDER_METRICS_PORT": str(metrics_port), "EMBEDDER_PROVIDER": "cpu"})
    try:
        wait_serving(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = embedder_pb2_grpc.EmbedderStub(channel).EmbedTexts(
                embedder_pb2.EmbedTextsRequest(texts=["a cat"]), timeout=10)
            assert len(reply.results[0].embedding) == 512
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'embedder_requests_total{code="OK",method="EmbedTexts"} 1.0' in body
        assert "embedder_batch_size_bucket" in body
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "shutting down" in out and "random weights" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_instance_on_a_taken_port_exits_at_once_naming_the_port(tiny_bundle_dir: Path) -> None:
    port = free_port()
    env = {"EMBEDDER_MODEL_DIR": str(tiny_bundle_dir), "EMBEDDER_PORT": str(port), "EMBEDDER_PROVIDER": "cpu"}
    first = start(env)
    try:
        wait_serving(port)
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "embedder_service"], capture_output=True, text=True,
                                env={**os.environ, **env}, timeout=30)
        took = time.monotonic() - started
        # gRPC's core logs its own line about the failed bind before ours.
        ours = [line for line in second.stderr.splitlines() if line.startswith("embedder:")]
        assert second.returncode != 0 and len(ours) == 1 and f"127.0.0.1:{port}" in ours[0], second.stderr
        assert took < 5, f"took {took:.1f} s"
        assert first.poll() is None  # the first one is untouched
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow  # two interpreters that load onnxruntime
def test_missing_model_dir_and_bad_values_stop_with_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "embedder_service"], capture_output=True, text=True,
                          env={**os.environ, "EMBEDDER_MODEL_DIR": ""}, timeout=60)
    assert proc.returncode == 2 and "EMBEDDER_MODEL_DIR" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "embedder_service"], capture_output=True, text=True,
                          env={**os.environ, "EMBEDDER_MODEL_DIR": "/x", "EMBEDDER_PORT": "abc"}, timeout=60)
    assert proc.returncode == 2 and "EMBEDDER_PORT" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_explicit_cuda_fails_at_start_where_cuda_cannot_run(tiny_bundle_dir: Path) -> None:
    if Path("/dev/nvidia0").exists():
        return  # a GPU machine: the CUDA path is checked by the benchmark there
    proc = subprocess.run([sys.executable, "-m", "embedder_service"], capture_output=True, text=True,
                          env={**os.environ, "EMBEDDER_MODEL_DIR": str(tiny_bundle_dir),
                               "EMBEDDER_PROVIDER": "cuda", "EMBEDDER_PORT": str(free_port())}, timeout=120)
    assert proc.returncode == 1
    assert "CUDA" in proc.stderr and "cannot load the model" in proc.stderr


def test_an_inconsistent_bundle_stops_start_up_with_one_line(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "b"))
    manifest = json.loads((bundle / "model.json").read_text())
    manifest["dim"] = 768  # the graphs give 512
    (bundle / "model.json").write_text(json.dumps(manifest))
    proc = subprocess.run([sys.executable, "-m", "embedder_service"], capture_output=True, text=True,
                          env={**os.environ, "EMBEDDER_MODEL_DIR": str(bundle), "EMBEDDER_PROVIDER": "cpu",
                               "EMBEDDER_PORT": str(free_port()), "EMBEDDER_METRICS_PORT": "0"}, timeout=120)
    errors = [line for line in proc.stderr.strip().splitlines() if "cannot load the model" in line]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "image.onnx: output image_embeds has width 512, model.json field dim says 768" in errors[0]
