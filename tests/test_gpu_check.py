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
    from bench import skeleton

    # The way a GPU machine without torch gets its bundle: a skeleton carried there, regrown.
    skel = skeleton.strip(tiny_bundle_dir, tmp_path / "skeleton")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--bundle", str(skel),
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


def test_without_torch_or_a_bundle_it_says_to_pass_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench import gpu_check

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(RuntimeError, match=r"needs torch.*pass --bundle DIR"):
        gpu_check.obtain_bundles(tmp_path, "vit-b-32", None, timeout_s=10)


def test_a_step_past_its_limit_becomes_a_failed_row_and_the_run_goes_on() -> None:
    import time

    from bench import gpu_check

    with pytest.raises(gpu_check.StepTimeout), gpu_check.time_limit(0.2):
        time.sleep(5)

    def stuck(out: dict) -> None:
        out["b1 img/s"] = 5.0
        with gpu_check.time_limit(0.2):
            time.sleep(5)

    row = gpu_check.run_row("stuck", stuck, limit_s=60, deadline=time.monotonic() + 60)
    assert row["status"] == "FAILED: over its 0.2 s limit" and row["seconds"] < 2
    assert row["b1 img/s"] == 5.0  # what was measured before the limit stays
    late = gpu_check.run_row("late", lambda out: None, limit_s=60, deadline=time.monotonic() + 1)
    assert late["status"] == "FAILED: skipped, the run's time budget is spent"


def test_a_skeleton_is_small_and_grows_into_a_bundle_of_the_same_shape(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    import numpy as np

    from bench import skeleton
    from embedder_service.model import ClipModel
    from embedder_service.models import bundle

    skel = skeleton.strip(tiny_bundle_dir, tmp_path / "skeleton")
    weights = sum((skel / name).stat().st_size for name in skeleton.GRAPHS)
    assert weights < sum((tiny_bundle_dir / name).stat().st_size for name in skeleton.GRAPHS) / 10
    with pytest.raises(bundle.BundleError):
        bundle.load(skel)  # a skeleton is never mistaken for a bundle
    grown = skeleton.grow(skel, tmp_path / "grown")
    original = bundle.load(tiny_bundle_dir)
    assert (grown.dim, grown.image_size, grown.semantic) == (original.dim, original.image_size, False)
    assert grown.version != original.version and "regrown" in grown.source
    model = ClipModel(bundle.load(grown.path), "cpu")
    vectors = model.embed_pixels(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    assert vectors.shape == (2, original.dim) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
