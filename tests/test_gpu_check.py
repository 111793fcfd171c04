"""bench/gpu_check.sh --dry-run: the GPU check runs end to end on the CPU and prints its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_dry_run_measures_the_cpu_rows_and_marks_the_gpu_rows_skipped(tiny_bundle_dir: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--bundle", str(tiny_bundle_dir),
         "--work", str(tmp_path / "work"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| row | provider | b1 img/s | b32 img/s | b256 img/s | text p50 ms |" in proc.stdout
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["CUDA fp32"]["status"].startswith("skipped") and rows["CUDA fp16"]["status"].startswith("skipped")
    for name in ("CPU fp32 (baseline)", "CPU fp16 (dry run)"):
        assert "status" not in rows[name], rows[name]
        assert rows[name]["provider"] == "CPUExecutionProvider"
        assert all(rows[name][f"b{b} img/s"] > 0 for b in (1, 32, 256)) and rows[name]["text p50 ms"] > 0
    assert rows["CPU fp16 (dry run)"]["min cosine vs fp32"] >= 0.999
