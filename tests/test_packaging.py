"""Packaging: per-service extras over a shared core, and the requirement files exported from uv.lock."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
SERVICES = ["embedder", "index", "gateway", "loader"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# One entry of an exported file: `name==version[ ; marker] \` and its `--hash=sha256:…` lines.
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+(?: ; ([^\\\n]+))? \\\n"
                   r"((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.MULTILINE)


def entries(name: str) -> dict[str, str]:
    """Entries of a requirements/ file: name -> marker ("" for none); every entry must carry hashes."""
    text = (REQUIREMENTS / name).read_text()
    matches = list(ENTRY.finditer(text))
    pinned = re.findall(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", text, re.MULTILINE)
    assert len(pinned) == len(matches), f"{name}: an entry without hashes"
    # A name pinned twice (numpy per Python version) keeps its last marker; the tests look at single ones.
    return {m.group(1): (m.group(2) or "").strip() for m in matches}


def test_extras_per_service() -> None:
    """One extra per service, `all` of them, and the kept export/openclip/dev extras."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(SERVICES + ["all", "export", "openclip", "dev"]) <= set(extras)
    assert extras["all"] == [f"semsearch[{','.join(SERVICES)}]"]
    core = {re.split(r"[=<>;\s]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    assert {"grpcio", "grpcio-health-checking", "grpcio-status", "protobuf", "prometheus-client"} <= core
    for service in SERVICES:
        names = {re.split(r"[=<>;\s]", d)[0] for d in extras[service]}
        assert not names & core, f"{service} repeats a core dependency"
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "semsearch_common*" in include


def test_onnxruntime_markers_survive() -> None:
    """`make install` gets one ONNX Runtime per platform; the CPU image onnxruntime, the CUDA image neither."""
    dev = entries("dev.txt")
    assert dev["onnxruntime-gpu"] == "platform_machine == 'x86_64' and sys_platform == 'linux'"
    assert dev["onnxruntime"] == "platform_machine != 'x86_64' or sys_platform != 'linux'"
    cpu = entries("embedder.txt")
    assert cpu["onnxruntime"] == "" and "onnxruntime-gpu" not in cpu
    gpu = entries("embedder-gpu.txt")
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" not in gpu


@pytest.mark.parametrize("name", ["dev.txt", "embedder.txt", "embedder-gpu.txt", "index.txt", "gateway.txt",
                                  "loader.txt"])
def test_requirement_files_are_hashed_and_torch_free(name: str) -> None:
    """Every pin carries hashes (pip --require-hashes); torch stays out (make install takes the local CPU build)."""
    found = entries(name)
    assert found and "torch" not in found
    for core in ("grpcio", "grpcio-status", "protobuf", "prometheus-client"):
        assert core in found, f"{name} lacks {core}"


def test_make_install_uses_the_lock() -> None:
    """make install: the hash-checked dev export, torch==2.13.0 beside it, the project without dependencies."""
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements/dev.txt" in makefile
    assert "pip install -q torch==2.13.0" in makefile
    assert "pip install -q --no-deps -e ." in makefile


def test_exports_match_the_lock() -> None:
    """uv.lock satisfies pyproject.toml and requirements/*.txt are its current export (needs uv and PyPI)."""
    if not (Path(sys.executable).parent / "uv").is_file() and shutil.which("uv") is None:
        pytest.skip("uv is not installed")
    result = subprocess.run([sys.executable, str(REQUIREMENTS / "export.py"), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
