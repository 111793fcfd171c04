"""Execution-provider choice: CUDA is offered only when it can really load, and a start says why not."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from embedder_service import model
from embedder_service.model import CPU, CUDA, ClipModel, ProviderError, candidate_providers, cuda_blocker
from embedder_service.models import bundle
from embedder_service.tests.test_process import free_port, wait_serving

NO_GPU = not Path("/dev/nvidia0").exists()
MISSING = "libcudart.so.13: cannot open shared object file: No such file or directory"


def test_a_known_blocker_keeps_auto_on_the_cpu_and_fails_explicit_cuda() -> None:
    assert candidate_providers("auto", [CUDA, CPU], blocker=None) == [CUDA, CPU]
    assert candidate_providers("auto", [CUDA, CPU], blocker="libcudart.so.13 not found") == [CPU]
    assert candidate_providers("cpu", [CUDA, CPU], blocker=None) == [CPU]
    with pytest.raises(ProviderError, match=r"CUDA cannot run here: libcudart\.so\.13 not found"):
        candidate_providers("cuda", [CUDA, CPU], blocker="libcudart.so.13 not found")


def test_a_cpu_only_build_is_its_own_reason() -> None:
    assert "no CUDA provider" in (cuda_blocker([CPU]) or "")


class FakeDriver:
    """libcuda's three entry points the probe calls, with chosen answers."""

    def __init__(self, version: int = 13000, init: int = 0, count: int = 1) -> None:
        self.version, self.init, self.count = version, init, count

    def cuDriverGetVersion(self, out: object) -> int:
        ctypes.cast(out, ctypes.POINTER(ctypes.c_int))[0] = self.version
        return 0

    def cuInit(self, flags: int) -> int:
        return self.init

    def cuDeviceGetCount(self, out: object) -> int:
        ctypes.cast(out, ctypes.POINTER(ctypes.c_int))[0] = self.count
        return 0


def fake_capi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An onnxruntime-gpu provider folder, whatever build is installed here."""
    for name in ("libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(model, "_capi_dir", lambda: tmp_path)
    monkeypatch.setattr(model.sys, "platform", "linux")
    monkeypatch.setattr(model, "_preload_pip_cuda", lambda: None)


def fake_loader(monkeypatch: pytest.MonkeyPatch, missing: str | None = None, driver: FakeDriver | None = None) -> None:
    """Replace dlopen: `missing` names the library whose loading fails; libcuda.so.1 is `driver`."""
    def cdll(name: str, mode: int = 0) -> object:
        if missing and (name.endswith("libonnxruntime_providers_cuda.so") or name == missing):
            raise OSError(f"{missing}: cannot open shared object file: No such file or directory")
        if name == "libcuda.so.1":
            if driver is None:
                raise OSError(MISSING.replace("libcudart.so.13", name))
            return driver
        return object()

    monkeypatch.setattr(model.ctypes, "CDLL", cdll)
    monkeypatch.setattr(model.ort, "cuda_version", "13.0", raising=False)


@pytest.mark.parametrize(("missing", "driver", "reason"), [
    ("libcudart.so.13", None, "libcudart.so.13 not found"),
    ("libcublasLt.so.13", FakeDriver(), "libcublasLt.so.13 not found"),
    (None, None, "libcuda.so.1 not found (no NVIDIA driver)"),
    (None, FakeDriver(version=12040), "the NVIDIA driver supports CUDA 12.4, this onnxruntime-gpu needs CUDA 13"),
    (None, FakeDriver(init=100), "no CUDA-capable GPU is visible"),
    (None, FakeDriver(count=0), "no CUDA-capable GPU is visible"),
    (None, FakeDriver(init=999), "the NVIDIA driver does not start (cuInit error 999)"),
    (None, FakeDriver(), None),
])
def test_the_probe_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str | None,
                                         driver: FakeDriver | None, reason: str | None) -> None:
    fake_capi(monkeypatch, tmp_path)
    fake_loader(monkeypatch, missing, driver)
    assert cuda_blocker([CUDA, CPU]) == reason


def test_an_unexpected_load_error_is_reported_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def cdll(name: str, mode: int = 0) -> object:
        raise OSError(f"{name}: undefined symbol: Provider_GetHost")

    fake_capi(monkeypatch, tmp_path)
    monkeypatch.setattr(model.ctypes, "CDLL", cdll)
    assert "does not load" in cuda_blocker([CUDA, CPU]) and "Provider_GetHost" in cuda_blocker([CUDA, CPU])


def test_an_unknown_package_layout_is_left_to_the_session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model, "_capi_dir", lambda: tmp_path)  # no provider library where we look
    monkeypatch.setattr(model.sys, "platform", "linux")
    assert cuda_blocker([CUDA, CPU]) is None


@pytest.mark.skipif(not NO_GPU, reason="a GPU machine: CUDA may well load here")
def test_the_real_probe_finds_a_reason_on_a_machine_without_a_gpu() -> None:
    assert cuda_blocker(ort.get_available_providers())


def test_auto_logs_one_reason_and_explicit_cuda_fails_with_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tiny_bundle_dir: Path) -> None:
    monkeypatch.setattr(model, "cuda_blocker", lambda available: "libcudart.so.13 not found")
    with caplog.at_level(logging.INFO, logger="embedder_service.model"):
        clip = ClipModel(bundle.load(tiny_bundle_dir), "auto")
    assert clip.providers == [CPU]
    assert [r.getMessage() for r in caplog.records if "CUDA" in r.getMessage()] == \
        ["CUDA not used: libcudart.so.13 not found"]
    monkeypatch.setattr(model.ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.raises(ProviderError, match=r"CUDA cannot run here: libcudart\.so\.13 not found"):
        ClipModel(bundle.load(tiny_bundle_dir), "cuda")


@pytest.mark.skipif(not NO_GPU, reason="a GPU machine: the start there may rightly use CUDA")
def test_a_cpu_only_start_prints_one_reason_and_no_loader_error(tiny_bundle_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "embedder_service"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EMBEDDER_MODEL_DIR": str(tiny_bundle_dir), "EMBEDDER_PORT": str(port),
                                 "EMBEDDER_METRICS_PORT": "0", "EMBEDDER_PROVIDER": "auto"})
    try:
        wait_serving(port)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Failed to load library" not in err and "Failed to create CUDAExecutionProvider" not in err, err
    reasons = [line for line in err.splitlines() if "CUDA not used: " in line]
    assert len(reasons) == 1, err
    assert "running on the CPU" not in err, err  # the session did not have to fall back


def test_pip_installed_cuda_libraries_are_preloaded_quietly(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def preload(directory: str | None = None) -> None:
        calls.append(directory)
        print("Failed to load libcublasLt.so.13: not there")

    monkeypatch.setattr(model.ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: object() if name == "nvidia" else None)
    model._preload_pip_cuda()
    assert calls == [""] and capsys.readouterr().out == ""
    monkeypatch.setattr(model.importlib.util, "find_spec", lambda name: None)
    model._preload_pip_cuda()
    assert calls == [""]  # no nvidia wheels: nothing to preload


@pytest.mark.parametrize(("version", "spin_us", "allowed", "duration"), [
    ("1.31.1", 0, "0", None),
    ("1.31.1", 75, "1", "75"),
    ("1.23.2", 75, "0", None),  # too old to bound a spin: its threads sleep instead of spinning without limit
])
def test_threads_spin_for_a_bounded_time_or_sleep(monkeypatch: pytest.MonkeyPatch, tiny_bundle_dir: Path,
                                                  version: str, spin_us: int, allowed: str,
                                                  duration: str | None) -> None:
    monkeypatch.setattr(model.ort, "__version__", version)
    clip = model.ClipModel(bundle.load(tiny_bundle_dir), provider="cpu", threads=2, spin_us=spin_us)
    for session in (clip._image, clip._text):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allowed
        if duration is None:
            with pytest.raises(RuntimeError):  # never set
                options.get_session_config_entry("session.intra_op.spin_duration_us")
        else:
            assert options.get_session_config_entry("session.intra_op.spin_duration_us") == duration
