"""One report of how fast the system is: runs every benchmark, then writes bench/report.md and its plots.

`python -m bench.report [--quick] [--only embedder,index,...] [--from-results]` runs bench.embedder,
bench.index (the growth curve, with an ef sweep), bench.loader, bench.gateway and a load run (tests/system's load JSON
when one is in bench/results, else bench.search_load), each as its own process, noting the machine's
load average around each; then reads their JSON from bench/results and writes bench/report.md with
tables, the goals met or not, and PNG plots in bench/report/. `--from-results` only rebuilds the report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import plots
from bench.common import machine, table
from bench.filters import report_section as filters_report
from bench.index_report import Goal, index_section

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# name -> (module, arguments for --quick, arguments for the full run)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "embedder": ("bench.embedder", ["--quick"], []),
    "index": ("bench.index", ["--sizes", "3000", "--queries", "100", "--exact-queries", "5",
                              "--indexed-rows", "256", "--ef-sweep", "10,40,100"], ["--ef-sweep", "10,20,40,100,200"]),
    "loader": ("bench.loader", ["--images", "256", "--rounds", "2"], []),
    "gateway": ("bench.gateway", ["--rows", "3000", "--requests", "40", "--requests-16", "8", "--rounds", "1"], []),
    "load": ("bench.search_load", ["--rows", "3000", "--clients", "8", "--seconds", "10"], []),
    "duplicates": ("bench.duplicates", ["--rows", "3000", "--planted", "100", "--exact-sample", "10"], []),
    "filters": ("bench.filters", ["--rows", "3000", "--queries", "40"], []),
}
OWN_LOAD = "search_load"
RUN_META = "report_run"


def external_load(results: Path) -> Path | None:
    """A load-test JSON written by tests/system (any results file named *load* that is not ours)."""
    found = [p for p in sorted(results.glob("*load*.json")) if p.stem not in (OWN_LOAD, "loader")]
    return found[0] if found else None


def normalize_load(data: dict[str, Any]) -> dict[str, Any]:
    """tests/system's load JSON ({"search": {...}, "rss": {...}, "mixed": {...}}) in bench.search_load's shape."""
    if "search" not in data:
        return data
    out = {k: v for k, v in data.items() if k not in ("search", "rss")}
    search = data["search"]
    out.update({k: search[k] for k in ("requests", "errors", "p50_ms", "p99_ms") if k in search})
    if "req_per_s" in search:
        out["requests_per_s"] = search["req_per_s"]
    out["memory_growth"] = {name: {"growth": r["growth"]} for name, r in data.get("rss", {}).items() if "growth" in r}
    return out


def run_benchmarks(names: list[str], quick: bool, results: Path) -> None:
    """Run each benchmark as its own process; record its time, exit status and the load around it."""
    meta_path = results / f"{RUN_META}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({"quick": quick, "started": datetime.datetime.now().isoformat(timespec="seconds")})
    for name in names:
        module, quick_args, full_args = BENCHES[name]
        if name == "load" and (found := external_load(results)):
            print(f"== load: reusing {found.name} from tests/system", flush=True)
            meta.setdefault("benches", {})[name] = {"reused": found.name}
            continue
        cmd = [sys.executable, "-m", module, *(quick_args if quick else full_args)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        load_before, started = os.getloadavg()[0], time.perf_counter()
        rc = subprocess.run(cmd, cwd=REPO, check=False).returncode
        meta.setdefault("benches", {})[name] = {
            "command": " ".join(cmd[2:]), "rc": rc, "seconds": round(time.perf_counter() - started, 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
        if rc:
            print(f"!! {name} exited with {rc}; the report marks it", flush=True)
    meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def read(results: Path, stem: str) -> dict[str, Any] | None:
    """bench/results/<stem>.json, or None when absent or unreadable."""
    try:
        data: dict[str, Any] = json.loads((results / f"{stem}.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def embedder_section(emb: dict[str, Any], plot: Callable[..., str]) -> tuple[str, list[Goal]]:
    """Throughput table, concurrency table, plots and the embedder goals."""
    rows = []
    for label, m in plots._engines(emb):
        rows.append({"engine": label, **{f"batch {b}": m.get(f"jpeg_b{b}", "") for b in plots.BATCHES},
                     **{f"{c} client{'s' if c != '1' else ''}": v
                        for c, v in sorted(m.get("jpeg_clients", {}).items(), key=lambda kv: int(kv[0]))},
                     "text p50 ms": m.get("text_p50_ms", ""), "text p99 ms": m.get("text_p99_ms", "")})
    columns = list(dict.fromkeys(c for r in rows for c in r))
    text = ["## Embedder", "", "Images/s from JPEG bytes over gRPC (ours) and in PyTorch/transformers with its own "
            "image processor (the reference), same random ViT-B/32 weights; clients send one image per request.",
            "", table(rows, columns), "", plot("embedder_throughput.png", plots.embedder_throughput, emb),
            plot("text_latency.png", plots.text_latency, emb)]
    goals: list[Goal] = []
    ratios, torch = emb.get("ratios", {}), emb.get("torch_fp32")
    for p, need in (("int8", 3.0), ("fp32", 1.3)):
        if p in ratios and torch:
            v = ratios[p]["vs_torch"]
            goals.append(("embedder", f"{p} ≥ {need}× PyTorch fp32 images/s", f"{v:.2f}×", v >= need))
    for p, r in ratios.items():
        goals.append(("embedder", f"{p}: Caltech JPEGs ≥ 85 % of pre-decoded", f"{r['jpeg_vs_predecoded']:.0%}",
                      r["jpeg_vs_predecoded"] >= 0.85))
        goals.append(("embedder", f"{p}: 8 single-image clients ≥ 80 % of batch 32", f"{r['8_clients_vs_b32']:.0%}",
                      r["8_clients_vs_b32"] >= 0.80))
    if "int8" in emb.get("ours", {}):
        v = emb["ours"]["int8"]["text_p50_ms"]
        goals.append(("embedder", "short text query p50 ≤ 15 ms (int8)", f"{v:.1f} ms", v <= 15))
    h2h = emb.get("head_to_head")
    if h2h:
        def cell(r: dict[str, float]) -> str:
            return f"{r['median']:.2f}× ({r['min']:.2f}–{r['max']:.2f})"

        rows = [{"ratio": pair, **{f"{c} client{'s' if c != '1' else ''}": cell(r) for c, r in by.items()}}
                for pair, by in h2h["ratios"].items()]
        peer = h2h["ratios"].get("ours int8 / immich")
        if peer:  # issue 14: where a single search waits, and under concurrency
            for clients, need in (("1", 2.5), ("4", 3.5), ("8", 3.5)):
                v = peer[clients]["median"]
                goals.append(("embedder", f"int8 ≥ {need}× immich images/s, {clients} single-image client(s)",
                              f"{v:.2f}×", v >= need))
        text += ["", f"Single-image requests, engines interleaved over {h2h['rounds']} rounds: median of the "
                 "per-round ratios, min–max in brackets.", "", table(rows, list(rows[0]))]
    return "\n".join(text), goals


def loader_section(ld: dict[str, Any], plot: Callable[..., str]) -> tuple[str, list[Goal]]:
    """Loader rates, the timeline plot and the loader goals."""
    rows = [{"what": "embedder alone (stream, batch 32)", "images/s": ld["embedder_images_per_s"],
             "CPU ms/image": ld.get("cpu_ms_per_image_embedder_alone", "")},
            {"what": "loader end to end", "images/s": ld["loader_images_per_s"],
             "CPU ms/image": ld.get("cpu_ms_per_image_loader_all_processes", "")}]
    text = ["## Loader", "", f"{ld.get('images', '?')} Caltech-size JPEGs, {ld.get('precision', '')} ViT-B/32, "
            f"{ld.get('rounds', '?')} alternating rounds.", "", table(rows, ["what", "images/s", "CPU ms/image"])]
    if ld.get("timeline"):
        text += ["", plot("loader_timeline.png", plots.loader_timeline, ld)]
    goals: list[Goal] = [
        ("loader", "loader ≥ 0.85 of the embedder's images/s", f"{ld['ratio']:.3f}", ld["ratio"] >= 0.85),
        ("loader", "Caltech-256 (30,607 images) ≤ 15 min", f"{ld['projected_caltech256_min']:.1f} min",
         ld["projected_caltech256_min"] <= 15)]
    return "\n".join(text), goals


def gateway_section(gw: dict[str, Any], idx: dict[str, Any] | None, load: dict[str, Any] | None,
                    plot: Callable[..., str]) -> tuple[str, list[Goal]]:
    """Gateway against direct, the latency CDFs and the overhead goal."""
    rows = [{"path": r["path"], "clients": r["clients"], "p50 ms": r["p50_ms"], "p99 ms": r["p99_ms"],
             "requests/s": r["req_per_s"], "p50 overhead": r.get("overhead_p50", "")} for r in gw["results"]]
    text = ["## Gateway", "", f"Text search at {gw.get('rows', 0):,} rows, {gw.get('precision', '')} model, k = "
            f"{gw.get('k', '?')}.", "", table(rows, list(rows[0]))]
    index_samples = max(idx["results"], key=lambda x: x["rows"]).get("search_samples_ms", []) if idx else []
    if gw.get("samples_ms"):
        text += ["", plot("search_latency.png", plots.search_latency, gw, index_samples, load)]
    goals: list[Goal] = []
    g1 = next((r for r in gw["results"] if r["clients"] == 1 and r["path"].startswith("gateway")), None)
    d1 = next((r for r in gw["results"] if r["clients"] == 1 and r["path"].startswith("direct")), None)
    if g1 and d1:
        over = g1["p50_ms"] / d1["p50_ms"] - 1
        goals.append(("gateway", "gateway p50 ≤ direct + 15 % (1 client)", f"{over:+.1%}", over <= 0.15))
    return "\n".join(text), goals


def load_section(load: dict[str, Any], source: str, plot: Callable[..., str]) -> tuple[str, list[Goal]]:
    """The load run's numbers, its timeline and the zero-error and memory goals."""
    keys = ["clients", "seconds", "rows", "requests", "errors", "requests_per_s", "p50_ms", "p99_ms"]
    row = {k: load[k] for k in keys if k in load}
    model = load.get("model") or load.get("precision", "")
    text = [f"### From `{source}`{f' (model: {model})' if model else ''}", "",
            table([row], list(row)) if row else "(no summary fields)"]
    mixed = load.get("mixed", {})
    if "idle" in mixed and "during_load" in mixed:
        rows = [{"search": what, **{k: mixed[key].get(k, "") for k in ("p50_ms", "p99_ms", "req_per_s", "errors")}}
                for what, key in (("idle", "idle"), ("while a loader runs", "during_load"))]
        text += ["", f"Mixed: {mixed.get('clients', '?')} search clients, idle and while a loader runs "
                 f"({mixed.get('load_images_per_s', 0):.0f} images/s):", "", table(rows, list(rows[0]))]
    if load.get("timeline_requests_per_s"):
        text += ["", plot(f"load_timeline_{Path(source).stem}.png", plots.load_timeline, load)]
    goals: list[Goal] = []
    if "errors" in load:
        goals.append(("load", f"{source}: zero errors, {load.get('clients', '?')} clients", str(load["errors"]),
                      load["errors"] == 0))
    for name, g in load.get("memory_growth", {}).items():
        goals.append(("load", f"{source}: {name} memory growth < 10 % (first vs last window)", f"{g['growth']:+.1%}",
                      g["growth"] < 0.10))
    return "\n".join(text), goals


def load_sections(loads: list[tuple[str, dict[str, Any]]], plot: Callable[..., str]) -> tuple[str, list[Goal]]:
    """One subsection per load result (tests/system's and ours), with their goals."""
    parts, goals = ["## Load"], []
    for source, data in loads:
        text, found = load_section(data, source, plot)
        parts.append(text)
        goals += found
    return "\n\n".join(parts), goals


def duplicates_section(dup: dict[str, Any]) -> tuple[str, list[Goal]]:
    """The near-duplicate scan against the exact answers, and its recall goal."""
    rows = [{"what": "FindDuplicates over the whole collection (HNSW)", "seconds": f"{dup['scan_s']:.1f}",
             "ms per image": f"{dup['scan_ms_per_image']:.2f}"},
            {"what": "Postgres exact scan (sampled, projected)", "seconds": f"{dup['pg_exact_scan_projected_s']:.1f}",
             "ms per image": f"{dup['pg_exact_ms_per_image']:.2f}"},
            {"what": "numpy all pairs in memory (ground truth)", "seconds": f"{dup['numpy_all_pairs_s']:.1f}",
             "ms per image": f"{dup['numpy_all_pairs_s'] * 1000 / dup['rows']:.2f}"}]
    text = ["## Near-duplicates", "", f"{dup['rows']:,} clustered 512-d rows with {dup['planted_pairs']:,} planted "
            f"near-copies, max_distance {dup['max_distance']}, pages of {dup['limit']}: planted-pair recall "
            f"{dup['planted_recall']:.3f}, {dup['groups_reported']} groups reported of {dup['groups_exact']} exact "
            f"({dup['groups_identical_to_exact']:.3f} identical).", "", table(rows, list(rows[0]))]
    big = dup["rows"] >= 30_000
    goals: list[Goal] = [("duplicates", "planted-pair recall ≥ 0.95 at 30,000 rows",
                          f"{dup['planted_recall']:.3f} at {dup['rows']:,}", big and dup["planted_recall"] >= 0.95)]
    return "\n".join(text), goals


def build(results: Path, out: Path) -> Path:
    """Write out/report.md and out/report/*.png from the JSON in results (and the committed long run of
    bench.index, out/report/index-1m.json); returns the report's path."""
    figures = out / "report"
    figures.mkdir(parents=True, exist_ok=True)

    def plot(name: str, fn: Callable[..., Path], *data: Any) -> str:
        try:
            fn(*data, figures / name)
        except (KeyError, ValueError, TypeError) as err:  # a partial JSON must not sink the whole report
            return f"(plot {name} not drawn: {type(err).__name__}: {err})"
        return f"![{name[:-4].replace('_', ' ')}](report/{name})"

    emb, idx, ld, gw = (read(results, s) for s in ("embedder", "index", "loader", "gateway"))
    long_run = read(figures, "index-1m")
    ext = external_load(results)
    loads = [(f"{stem}.json", normalize_load(data)) for stem in ([ext.stem] if ext else []) + [OWN_LOAD]
             if (data := read(results, stem)) is not None]
    load = next((d for _, d in loads if d.get("samples_ms")), None)
    meta = read(results, RUN_META) or {}
    sections: list[str] = []
    goals: list[Goal] = []
    # None: that benchmark wrote no results.
    makers: list[tuple[str, Callable[[], tuple[str, list[Goal]]] | None]] = [
        ("embedder", None if emb is None else partial(embedder_section, emb, plot)),
        ("index", None if idx is None and long_run is None else partial(index_section, idx, long_run, plot)),
        ("loader", None if ld is None else partial(loader_section, ld, plot)),
        ("gateway", None if gw is None else partial(gateway_section, gw, idx, load, plot)),
        ("load", partial(load_sections, loads, plot) if loads else None),
        ("near-duplicates", None if (dup := read(results, "duplicates")) is None else partial(duplicates_section, dup)),
        ("filters", None if (flt := read(results, "filters")) is None else lambda: (filters_report(flt), []))]
    for name, make in makers:
        if make is None:
            sections.append(f"## {name.capitalize()}\n\nNot measured: no results JSON.")
            continue
        text, found = make()
        sections.append(text)
        goals += found
    quick = "; **quick run** (small sizes, short timings: the goals are set for the full run)" \
        if meta.get("quick") else ""
    recorded = sorted({d["machine"] for d in (emb, idx, ld, gw, *(x for _, x in loads)) if d and "machine" in d})
    header = ["# Benchmark report", "",
              f"Machine: **{machine()}** (as each benchmark recorded it: {'; '.join(recorded)}).",
              f"Date: {meta.get('finished') or datetime.date.today().isoformat()}"
              f"{quick}.", ""]
    if meta.get("benches"):
        runs = [{"benchmark": n, "command": b.get("command", f"reused {b.get('reused', '')}"), "exit": b.get("rc", ""),
                 "seconds": b.get("seconds", ""), "load avg before → after":
                 f"{b['load_before']} → {b['load_after']}" if "load_before" in b else ""}
                for n, b in meta["benches"].items()]
        header += ["Runs (the 1-minute load average shows how busy the machine was):", "",
                   table(runs, list(runs[0])), ""]
    verdict = {True: "met", False: "**not met**", None: "not measured"}
    goal_rows = [{"area": a, "goal": g, "measured": m, "": verdict[ok]} for a, g, m, ok in goals]
    header += ["## Goals", "", table(goal_rows, ["area", "goal", "measured", ""]) if goal_rows else "No results.", ""]
    path = out / "report.md"
    path.write_text("\n".join(header) + "\n" + "\n\n".join(sections) + "\n")
    return path


def main() -> None:
    """Run the selected benchmarks (unless --from-results) and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and short timings (a smoke run)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--from-results", action="store_true", help="rebuild the report from existing JSON only")
    parser.add_argument("--results", type=Path, default=BENCH / "results",
                        help="where to read the JSON from (with --from-results; the benchmarks write bench/results)")
    parser.add_argument("--out", type=Path, default=BENCH, help="where report.md and report/ go")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if not args.from_results and args.results.resolve() != (BENCH / "results").resolve():
        parser.error("--results needs --from-results: the benchmarks always write bench/results")
    if not args.from_results:
        run_benchmarks(names, args.quick, args.results)
    print(f"wrote {build(args.results, args.out)}")


if __name__ == "__main__":
    main()
