"""The report's index section: the growth curve (bench/results/index.json and the committed long run) and its goals.

The long run (`python -m bench.index --sizes 1000000 --out bench/report/index-1m.json`) is committed
beside the report's figures; its points join the curve's table and plot. A figure a JSON lacks (an
older bench's keys) shows as "—".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bench import plots
from bench.common import table

Goal = tuple[str, str, str, bool | None]  # area, goal, measured, met (None: not measured)
LONG_RUN = 1_000_000


def cell(x: dict[str, Any], key: str, spec: str = "{:,.2f}") -> str:
    """x[key] formatted, or "—" when missing or not a number."""
    v = x.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return spec.format(v)


def pair(x: dict[str, Any], a: str, b: str, spec: str = "{:,.2f}") -> str:
    """Two figures as "a / b" (p50 / p99)."""
    return f"{cell(x, a, spec)} / {cell(x, b, spec)}"


def empty_rate(x: dict[str, Any]) -> float | None:
    """Upsert rows/s into the empty collection (older bench.index JSON named it upsert_rows_per_s)."""
    v = x.get("upsert_empty_rows_per_s", x.get("upsert_rows_per_s"))
    return None if v is None else float(v)


def curve_row(x: dict[str, Any], run: str) -> dict[str, str]:
    """One table row per point of the curve."""
    pss = x.get("postgres_pss_bytes")
    # ram_bytes_per_row is the index's size per row (older JSON lacks the key, not the figure).
    ram = {"ram": x.get("ram_bytes_per_row", x.get("index_bytes_per_row")), "pss": None if pss is None else pss / 1e6}
    return {
        "run": run, "rows": f"{x['rows']:,}", "type": x.get("vector_type", "float32"),
        "recall@10": cell(x, "recall_at_10", "{:.3f}"), "estimate / breadth":
            f"{cell(x, 'recall_estimate', '{:.3f}')} / {cell(x, 'search_breadth', '{}')}",
        "p50 / p99 ms (k 10)": pair(x, "search_p50_ms", "search_p99_ms"),
        "p50 / p99 ms (k 100)": pair(x, "k100_p50_ms", "k100_p99_ms"),
        "filtered p50 / p99 ms": pair(x, "filtered_p50_ms", "filtered_p99_ms"),
        "filtered recall@10 labels / tag": pair(x, "filtered_recall_at_10", "tag_filtered_recall_at_10", "{:.3f}"),
        "exact p50 ms": cell(x, "exact_p50_ms", "{:,.0f}"), "build s": cell(x, "index_build_s", "{:,.1f}")
        if x.get("index_deferred_by_service", True) else "—",  # below INDEX_BULK_MIN_ROWS nothing is deferred
        "upsert rows/s empty / indexed (pgvector alone)": f"{cell({'v': empty_rate(x)}, 'v', '{:,.0f}')} / "
            f"{cell(x, 'upsert_indexed_rows_per_s', '{:,.0f}')} "
            f"({cell(x, 'insert_indexed_raw_rows_per_s', '{:,.0f}')})",
        "into the graph rows/s": cell(x, "merge_rows_per_s", "{:,.0f}"),
        "p50 / p99 ms, rows waiting": pair(x, "search_waiting_p50_ms", "search_waiting_p99_ms"),
        "disk B/row table / index": pair(x, "table_bytes_per_row", "index_bytes_per_row", "{:,.0f}"),
        "RAM B/row (Postgres PSS MB)": f"{cell(ram, 'ram', '{:,.0f}')} ({cell(ram, 'pss', '{:,.0f}')})",
        "Stats p50 / p99 ms": pair(x, "stats_p50_ms", "stats_p99_ms"),
        "SERVING s": cell(x, "serving_with_sweep_due_s", "{:.1f}")}


def goals(points: list[dict[str, Any]], curve: list[dict[str, Any]]) -> list[Goal]:
    """Issue 14's index goals over every point (curve and long run), and the earlier ones at the smallest point."""
    out: list[Goal] = []

    def worst(key: str, need: float, what: str, spec: str, among: list[dict[str, Any]], low: bool = True,
              beside: tuple[str, str] | None = None) -> None:
        """The goal against its worst point; `beside`: (key, words) of a reference figure of that point."""
        have = [p for p in among if p.get(key) is not None]
        if not have:
            out.append(("index", what, "not measured", None))
            return
        p = (min if low else max)(have, key=lambda q: q[key])
        ok = p[key] >= need if low else p[key] <= need
        also = f"; {beside[1]} {spec.format(p[beside[0]])}" if beside and p.get(beside[0]) is not None else ""
        out.append(("index", what, f"{spec.format(p[key])} (worst: {p['rows']:,} {p.get('vector_type', 'float32')}"
                    f"{also})", ok))

    big = [p for p in points if p["rows"] >= LONG_RUN]
    large = [p for p in points if p["rows"] >= 300_000]
    worst("recall_at_10", 0.98, "recall@10 ≥ 0.98 at every size (default settings)", "{:.3f}", points)
    worst("search_p50_ms", 10, "search p50 ≤ 10 ms at 1,000,000 rows (k = 10)", "{:.2f} ms", big, low=False)
    worst("index_build_s", 600, "build after bulk load ≤ 10 min at 1,000,000 rows", "{:,.0f} s", big, low=False)
    worst("upsert_indexed_rows_per_s", 1000, "upsert into an indexed collection ≥ 1,000 rows/s", "{:,.0f} rows/s",
          points, beside=("insert_indexed_raw_rows_per_s", "pgvector's own INSERTs there"))
    worst("stats_p50_ms", 20, "Stats p50 ≤ 20 ms at ≥ 300,000 rows", "{:.1f} ms", large, low=False)
    worst("serving_with_sweep_due_s", 3, "SERVING ≤ 3 s with the sweep due at ≥ 300,000 rows", "{:.1f} s", large,
          low=False)
    floats = sorted((p for p in curve if p.get("vector_type", "float32") == "float32"), key=lambda p: p["rows"])
    if floats:  # the goals of the first index issue, set at 30,000 rows
        r = floats[0]
        at = f" ({r['rows']:,} rows, float32)"
        rate = empty_rate(r)
        out.append(("index", "bulk upsert ≥ 1,500 rows/s" + at, "—" if rate is None else f"{rate:,.0f} rows/s",
                    None if rate is None else rate >= 1500))
        p50 = r["search_p50_ms"]
        out.append(("index", "search p50 ≤ 3 ms (k = 10)" + at, f"{p50:.2f} ms", p50 <= 3))
        if r.get("exact_p50_ms"):
            ratio = r["exact_p50_ms"] / r["search_p50_ms"]
            out.append(("index", "exact scan ≥ 20× ANN p50" + at, f"{ratio:.0f}×", ratio >= 20))
        out.append(("index", "recall@10 ≥ 0.99" + at, f"{r['recall_at_10']:.3f}", r["recall_at_10"] >= 0.99))
    return out


def index_section(idx: dict[str, Any] | None, long_run: dict[str, Any] | None,
                  plot: Callable[..., str]) -> tuple[str, list[Goal]]:
    """The curve's table and plot, the ef sweep where one ran, and the goals."""
    curve = list(idx["results"]) if idx else []
    longs = list(long_run["results"]) if long_run else []
    points = curve + longs
    def order(x: dict[str, Any]) -> tuple[int, bool]:
        return x["rows"], x.get("vector_type", "float32") != "float32"

    rows = [curve_row(x, "standard") for x in sorted(curve, key=order)]
    rows += [curve_row(x, "long run") for x in sorted(longs, key=order)]
    described: dict[str, Any] = max((x for x in points if x.get("backend")), key=order, default={})
    params = ", ".join(f"{k} {v}" for k, v in described.get("index_params", {}).items() if not k.startswith("built."))
    setup = ", ".join(s for s in (described.get("backend", ""), params) if s)
    machines = sorted({d["machine"] for d in (idx, long_run) if d and "machine" in d})
    text = ["## Index", "", "Growth curve over gRPC with the service's default settings (recall target on)"
            f"{'; ' + setup if setup else ''}; measured on {'; '.join(machines) or '?'}. "
            "Standard run: `python -m bench.index` (bench/results/index.json); long run: "
            "`bench/report/index-1m.json`"
            f"{'' if long_run else ' (not present)'}. Columns: bench/README.md.", "", table(rows, list(rows[0])), "",
            plot("index_growth.png", plots.growth_curve, points)]
    swept = [x for x in points if x.get("ef_sweep")]
    if swept:
        r = max(swept, key=lambda x: (x["rows"], x.get("vector_type") == "float32"))
        sweep = [{"ef_search": s["ef_search"], "recall@10": f"{s['recall_at_10']:.3f}", "p50 ms": s["p50_ms"],
                  "p99 ms": s["p99_ms"]} for s in r["ef_sweep"]]
        sweep.append({"ef_search": "exact scan", "recall@10": cell(r, "exact_matches_numpy", "{:.3f}"),
                      "p50 ms": r.get("exact_p50_ms", "—"), "p99 ms": ""})
        text += ["", f"ef sweep at {r['rows']:,} rows ({r.get('vector_type', 'float32')}): "
                 f"{r.get('ef_sweep_method', '')}; recall against numpy's exact top 10.", "",
                 table(sweep, list(sweep[0])), "", plot("recall_latency.png", plots.recall_latency, r)]
    return "\n".join(text), goals(points, curve)
