"""bench.report --from-results: small synthetic benchmark JSON in, report.md and its PNGs out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # matplotlib draws every plot of the report

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("matplotlib")


def engine(scale: float, clients: bool = True) -> dict:
    """Synthetic embedder measurements, `scale` times a base rate."""
    out = {f"jpeg_b{b}": scale * r for b, r in ((1, 10.0), (8, 15.0), (32, 16.0))}
    out.update(text_p50_ms=20 / scale, text_p99_ms=30 / scale, text_samples_ms=[20 / scale + i % 7 for i in range(80)])
    if clients:
        out["jpeg_clients"] = {str(c): scale * 14.0 for c in (1, 2, 4, 8, 16)}
    return out


def synthetic(results: Path) -> None:
    """One JSON per benchmark, in the shapes the benchmarks write."""
    int8 = {**engine(4.0), "predecoded_b32": 66.0, "large_b8": 20.0, "jpeg_8_clients": 56.0}
    fp32 = {**engine(1.3), "predecoded_b32": 22.0, "large_b8": 9.0, "jpeg_8_clients": 19.0}
    files = {
        "embedder": {"machine": "test box", "ours": {"fp32": fp32, "int8": int8}, "torch_fp32": engine(1.0),
                     "ratios": {"int8": {"vs_torch": 4.0, "jpeg_vs_predecoded": 0.97, "8_clients_vs_b32": 0.875},
                                "fp32": {"vs_torch": 1.3, "jpeg_vs_predecoded": 0.95, "8_clients_vs_b32": 0.91}}},
        "index": {"machine": "test box", "results": [{
            "rows": 3000, "vector_type": "float32", "upsert_empty_rows_per_s": 1200.0, "index_build_s": 1.0,
            "search_p50_ms": 2.0, "search_p99_ms": 5.0, "k100_p50_ms": 4.0, "k100_p99_ms": 9.0, "filtered_p50_ms": 3.0,
            "filtered_p99_ms": 7.0, "exact_p50_ms": 60.0, "recall_at_10": 0.995, "recall_estimate": 0.99,
            "search_breadth": 100, "exact_matches_numpy": 1.0, "backend": "pgvector 0.8",
            "upsert_indexed_rows_per_s": 1100.0, "table_bytes_per_row": 19000.0, "index_bytes_per_row": 3000.0,
            "ram_bytes_per_row": 3000.0, "postgres_pss_bytes": 250e6, "stats_p50_ms": 3.0, "stats_p99_ms": 6.0,
            "serving_with_sweep_due_s": 2.5,
            "index_params": {"m": "16", "ef_search": "100"}, "search_samples_ms": [2.0 + i / 50 for i in range(100)],
            "ef_sweep": [{"ef_search": ef, "p50_ms": 1 + ef / 100, "p99_ms": 3 + ef / 50, "mean_ms": 1.5,
                          "recall_at_10": min(1.0, 0.8 + ef / 500)} for ef in (10, 20, 40, 100, 200)]},
            {"rows": 300000, "vector_type": "float16", "upsert_empty_rows_per_s": 1900.0, "search_p50_ms": 4.0,
             "recall_at_10": 0.975, "upsert_indexed_rows_per_s": 800.0, "insert_indexed_raw_rows_per_s": 900.0,
             "stats_p50_ms": 8.0,
             "serving_with_sweep_due_s": 2.0, "index_bytes_per_row": 1600.0}]},
        "loader": {"machine": "test box", "images": 200, "rounds": 2, "precision": "int8",
                   "embedder_images_per_s": 50.0, "loader_images_per_s": 45.0, "ratio": 0.9,
                   "projected_caltech256_min": 11.3,
                   "timeline": [{"round": r, "mode": m, "start_s": 5.0 * (2 * r + i),
                                 "points": [[t / 2, 25 * t] for t in range(1, 9)]}
                                for r in range(2) for i, m in enumerate(("embedder", "loader"))]},
        "gateway": {"machine": "test box", "rows": 3000, "precision": "fp32", "k": 24, "results": [
            {"path": "direct embed+search", "clients": 1, "p50_ms": 10.0, "p99_ms": 20.0, "req_per_s": 90.0},
            {"path": "gateway /api/search", "clients": 1, "p50_ms": 12.0, "p99_ms": 25.0, "req_per_s": 80.0,
             "overhead_p50": "+20.0%"}],
            "samples_ms": {"direct/1": [10.0 + i % 5 for i in range(50)],
                           "gateway/1": [12.0 + i % 5 for i in range(50)],
                           "direct/16": [80.0 + i for i in range(50)], "gateway/16": [85.0 + i for i in range(50)]}},
        "search_load": {"machine": "test box", "clients": 8, "seconds": 5, "rows": 3000, "requests": 300, "errors": 0,
                        "requests_per_s": 60.0, "p50_ms": 100.0, "p99_ms": 300.0,
                        "timeline_requests_per_s": [55, 60, 62, 61, 59],
                        "memory": [{"t": float(t), "gateway": 70.0, "index": 150.0} for t in range(1, 6)],
                        "memory_growth": {"gateway": {"first_mb": 70.0, "last_mb": 70.0, "growth": 0.0},
                                          "index": {"first_mb": 150.0, "last_mb": 180.0, "growth": 0.2}},
                        "samples_ms": [100.0 + i for i in range(100)]},
        "system_load": {"machine": "test box", "clients": 32, "seconds": 60.0, "model": "tiny random (tests)",
                        "search": {"p50_ms": 140.0, "p99_ms": 360.0, "requests": 12822, "req_per_s": 213.4,
                                   "errors": 2},
                        "rss": {"gateway": {"first_10s_mb": 73.4, "last_10s_mb": 73.9, "growth": 0.0077}},
                        "mixed": {"clients": 8, "load_images_per_s": 121.0,
                                  "idle": {"p50_ms": 31.8, "p99_ms": 193.1, "req_per_s": 185.3, "errors": 0},
                                  "during_load": {"p50_ms": 76.8, "p99_ms": 286.6, "req_per_s": 87.4, "errors": 0}}},
    }
    results.mkdir()
    for name, data in files.items():
        (results / f"{name}.json").write_text(json.dumps(data))


def test_report_from_synthetic_results(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "out"
    synthetic(results)
    # The committed long run, with bench.growth's keys (no Stats p99, no SERVING, no exact search).
    (out / "report").mkdir(parents=True)
    (out / "report" / "index-1m.json").write_text(json.dumps({"machine": "test box", "results": [{
        "rows": 1_000_000, "vector_type": "float32", "upsert_empty_rows_per_s": 1500.0, "index_build_s": 700.0,
        "upsert_indexed_rows_per_s": 1200.0, "recall_at_10": 0.985, "recall_estimate": 0.98, "search_breadth": 338,
        "search_p50_ms": 8.5, "search_p99_ms": 20.0, "k100_p50_ms": 15.0, "k100_p99_ms": 40.0,
        "filtered_p50_ms": 30.0, "stats_p50_ms": 12.0, "table_bytes_per_row": 19000.0,
        "index_bytes_per_row": 2900.0}]}))
    subprocess.run([sys.executable, "-m", "bench.report", "--from-results", "--results", str(results),
                    "--out", str(out)], cwd=REPO, check=True, timeout=60, capture_output=True)
    md = (out / "report.md").read_text()
    pngs = {"embedder_throughput", "text_latency", "recall_latency", "index_growth", "loader_timeline",
            "search_latency", "load_timeline_search_load"}
    for name in pngs:
        png = out / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(report/{name}.png)" in md, name
    assert "Machine: **" in md and "## Goals" in md
    assert "| embedder | int8 ≥ 3.0× PyTorch fp32 images/s | 4.00× | met |" in md
    assert "| gateway | gateway p50 ≤ direct + 15 % (1 client) | +20.0% | **not met** |" in md
    assert "| index | bulk upsert ≥ 1,500 rows/s (3,000 rows, float32) | 1,200 rows/s | **not met** |" in md
    assert ("| index | recall@10 ≥ 0.98 at every size (default settings) | 0.975 (worst: 300,000 float16) | "
            "**not met** |") in md
    assert "| index | search p50 ≤ 10 ms at 1,000,000 rows (k = 10) | 8.50 ms (worst: 1,000,000 float32) | met |" in md
    assert ("| index | build after bulk load ≤ 10 min at 1,000,000 rows | 700 s (worst: 1,000,000 float32) | "
            "**not met** |") in md
    assert ("| index | upsert into an indexed collection ≥ 1,000 rows/s | 800 rows/s (worst: 300,000 float16; "
            "pgvector's own INSERTs there 900 rows/s) | **not met** |") in md
    assert "| 1,900 / 800 (900) |" in md and "| 1,200 / 1,100 (—) |" in md  # empty / indexed (pgvector alone)
    assert "| index | SERVING ≤ 3 s with the sweep due at ≥ 300,000 rows | 2.0 s (worst: 300,000 float16) | met |" in md
    # The long run's row, with "—" where bench.growth had no such figure.
    assert "| long run | 1,000,000 | float32 | 0.985 | 0.980 / 338 | 8.50 / 20.00 |" in md
    assert "| 12.00 / — | — |" in md
    assert "| load | search_load.json: index memory growth < 10 % (first vs last window) | +20.0% | **not met** |" in md
    assert "| load | system_load.json: zero errors, 32 clients | 2 | **not met** |" in md
    assert "| load | system_load.json: gateway memory growth < 10 % (first vs last window) | +0.8% | met |" in md
    assert "| while a loader runs | 76.80 | 286.60 | 87.40 | 0 |" in md
    assert "| 10 | 0.820 |" in md  # the ef sweep table


def test_report_marks_missing_benchmarks(tmp_path: Path) -> None:
    from bench import report

    results = tmp_path / "results"
    results.mkdir()
    md = report.build(results, tmp_path / "out").read_text()
    assert md.count("Not measured: no results JSON.") == 7
    assert list((tmp_path / "out" / "report").iterdir()) == []
