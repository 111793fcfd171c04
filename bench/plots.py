"""The report's figures, drawn with matplotlib's Agg backend from the benchmarks' JSON (one function per PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter, ScalarFormatter

BATCHES = (1, 8, 32)
COLORS = {"ours int8": "tab:green", "ours fp32": "tab:blue", "PyTorch fp32": "tab:red",
          "direct": "tab:blue", "gateway": "tab:orange", "embedder": "tab:blue", "loader": "tab:green",
          "float32": "tab:blue", "float16": "tab:green"}
MEMORY_COLORS = ("tab:purple", "tab:brown", "tab:gray", "tab:olive")


def _plain_log_x(ax: Any, ticks: Sequence[float] | None = None) -> None:
    """Log-scaled x axis labelled with plain numbers (at `ticks` when given)."""
    if ticks:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _engines(emb: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, measurements) of ours per precision (int8 first) and the PyTorch reference."""
    ours = sorted(emb.get("ours", {}).items(), key=lambda kv: kv[0] != "int8")
    out = [(f"ours {p}", m) for p, m in ours]
    if "torch_fp32" in emb:
        out.append(("PyTorch fp32", emb["torch_fp32"]))
    return out


def embedder_throughput(emb: dict[str, Any], path: Path) -> Path:
    """Images/s against batch size (left) and against concurrent single-image clients (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, m in _engines(emb):
        style = {"marker": "o", "color": COLORS.get(label), "label": label}
        left.plot(BATCHES, [m.get(f"jpeg_b{b}", np.nan) for b in BATCHES], **style)
        clients = m.get("jpeg_clients", {})
        if clients:
            xs = sorted(int(c) for c in clients)
            right.plot(xs, [clients[str(c)] for c in xs], **style)
    ticks = {left: list(BATCHES), right: [1, 2, 4, 8, 16]}
    for ax, xlabel, title in ((left, "images per request (batch)", "one client, batched requests"),
                              (right, "concurrent clients, one image per request", "concurrent clients")):
        ax.set_xscale("log", base=2)
        _plain_log_x(ax, ticks[ax])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images/s (JPEG bytes in, embeddings out)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def recall_latency(index_row: dict[str, Any], path: Path) -> Path:
    """Recall@10 against p50 search latency for each ef_search, and the exact scan."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sweep = index_row.get("ef_sweep", [])
    if sweep:
        xs, ys = [s["p50_ms"] for s in sweep], [s["recall_at_10"] for s in sweep]
        ax.plot(xs, ys, marker="o", color="tab:blue", label="HNSW (p50 latency)")
        for i, s in enumerate(sweep):
            ax.annotate(f"ef {s['ef_search']}", (s["p50_ms"], s["recall_at_10"]), textcoords="offset points",
                        xytext=(4, -12 if i % 2 == 0 else 6), fontsize=8)
        ax.set_ylim(min(min(ys), index_row["recall_at_10"]) - 0.02, 1.01)
    ax.plot([index_row["search_p50_ms"]], [index_row["recall_at_10"]], marker="s", color="tab:orange",
            linestyle="none", label=f"service default (ef {index_row.get('index_params', {}).get('ef_search', '?')})")
    ax.plot([index_row["exact_p50_ms"]], [index_row.get("exact_matches_numpy", 1.0)], marker="*", markersize=12,
            color="tab:red", linestyle="none", label="exact scan")
    ax.set_xscale("log")
    _plain_log_x(ax)
    ax.set_xlabel("search latency p50, ms (gRPC Search, k = 10, log scale)")
    ax.set_ylabel("recall@10")
    ax.set_title(f"recall against latency at {index_row['rows']:,} rows")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return _save(fig, path)


def per_second(points: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Items/s in each whole second from cumulative (seconds, items) points, linearly interpolated between
    points; the last, partial second counts as a whole one (no spike from dividing by a sliver)."""
    if not points:
        return np.array([]), np.array([])
    t = np.array([0.0] + [p[0] for p in points])
    done = np.array([0.0] + [p[1] for p in points])
    edges = np.arange(0, np.ceil(t[-1]) + 1)
    return edges[:-1], np.diff(np.interp(edges, t, done))


def loader_timeline(loader: dict[str, Any], path: Path) -> Path:
    """Images/s per second over the benchmark: the embedder alone and the loader end to end, round by round."""
    fig, ax = plt.subplots(figsize=(11, 4))
    seen = set()
    for seg in loader.get("timeline", []):
        xs, ys = per_second(seg["points"])
        if not len(xs):
            continue
        mode = seg["mode"]
        label = {"embedder": "embedder alone", "loader": "loader end to end"}[mode] if mode not in seen else None
        seen.add(mode)
        # The repeated last value gives the final second its width in a "post" step plot.
        ax.step(np.append(xs, xs[-1] + 1) + seg["start_s"], np.append(ys, ys[-1]), where="post", color=COLORS[mode],
                label=label)
    for key, mode in (("embedder_images_per_s", "embedder"), ("loader_images_per_s", "loader")):
        if key in loader:
            ax.axhline(loader[key], color=COLORS[mode], linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds since the first round started")
    ax.set_ylabel("images/s (per second)")
    ax.set_title(f"{loader.get('images', '?')} images in {loader.get('rounds', '?')} alternating rounds "
                 "(dashed: mean rate)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _cdf(ax: Any, samples: list[float], label: str, color: str | None = None) -> None:
    xs = np.sort(np.asarray(samples))
    ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{label} (n={len(xs)})", color=color)


def search_latency(gateway: dict[str, Any], index_samples: list[float], load: dict[str, Any] | None,
                   path: Path) -> Path:
    """CDFs of search latency: gateway against direct at 1 and 16 clients, and under the load run."""
    samples = gateway.get("samples_ms", {})
    panels = [c for c in ("1", "16") if f"direct/{c}" in samples or f"gateway/{c}" in samples]
    extra = bool(load and load.get("samples_ms"))
    fig, axes = plt.subplots(1, len(panels) + extra, figsize=(5.2 * (len(panels) + extra), 4), squeeze=False)
    for ax, clients in zip(axes[0], panels, strict=False):
        for name in ("direct", "gateway"):
            if f"{name}/{clients}" in samples:
                what = "gateway /api/search" if name == "gateway" else "direct embed + search"
                _cdf(ax, samples[f"{name}/{clients}"], what, COLORS[name])
        if clients == "1" and index_samples:
            _cdf(ax, index_samples, "index Search alone", "tab:gray")
        ax.set_title(f"{clients} client{'s' if clients != '1' else ''}")
    if extra and load:
        _cdf(axes[0][-1], load["samples_ms"], "gateway /api/search", COLORS["gateway"])
        axes[0][-1].set_title(f"load run: {load.get('clients', '?')} clients")
    for ax in axes[0]:
        ax.set_xscale("log")
        _plain_log_x(ax)
        ax.set_xlabel("latency, ms (log scale)")
        ax.set_ylabel("fraction of requests ≤ x")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def text_latency(emb: dict[str, Any], path: Path) -> Path:
    """CDFs of one short text query's embedding latency, ours against PyTorch."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, m in _engines(emb):
        s = m.get("text_samples_ms")
        if s:
            _cdf(ax, s, f"{label}: p50 {np.percentile(s, 50):.1f} ms, p99 {np.percentile(s, 99):.1f} ms",
                 COLORS.get(label))
    ax.set_xscale("log")
    _plain_log_x(ax)
    ax.set_xlabel("latency of one short text query, ms (log scale)")
    ax.set_ylabel("fraction of queries ≤ x")
    ax.set_title("text embedding latency (EmbedTexts over gRPC; PyTorch: the model call)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def load_timeline(load: dict[str, Any], path: Path) -> Path:
    """Requests/s per second of the load run, with the processes' resident memory."""
    fig, ax = plt.subplots(figsize=(11, 4))
    rps = load.get("timeline_requests_per_s", [])
    ax.step(np.arange(len(rps) + 1), [*rps, rps[-1]] if rps else [0], where="post", color="tab:orange",
            label="requests/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests/s (per second)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    mem = load.get("memory", [])
    if mem:
        right = ax.twinx()
        for name, color in zip(sorted(mem[0].keys() - {"t"}), MEMORY_COLORS, strict=False):
            right.plot([m["t"] for m in mem], [m[name] for m in mem], linestyle=":", color=color,
                       label=f"{name} RSS")
        right.set_ylabel("resident memory, MB")
        right.set_ylim(bottom=0)
        right.legend(loc="lower right", fontsize=8)
    ax.legend(loc="lower left")
    ax.set_title(f"{load.get('clients', '?')} search clients through the gateway")
    return _save(fig, path)


def growth_curve(points: list[dict[str, Any]], path: Path) -> Path:
    """Search latency (left) and recall@10 (right) against rows, one line per vector type, with the goals."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for vtype in sorted({p.get("vector_type", "float32") for p in points}):
        mine = sorted((p for p in points if p.get("vector_type", "float32") == vtype), key=lambda p: p["rows"])
        rows, color = [p["rows"] for p in mine], COLORS.get(vtype)
        left.plot(rows, [p["search_p50_ms"] for p in mine], marker="o", color=color, label=f"{vtype} p50")
        left.plot(rows, [p.get("search_p99_ms", np.nan) for p in mine], marker=".", linestyle=":", color=color,
                  label=f"{vtype} p99")
        right.plot(rows, [p["recall_at_10"] for p in mine], marker="o", color=color, label=vtype)
    left.axhline(10, color="tab:red", linestyle="--", linewidth=0.8, label="goal at 1M: p50 ≤ 10 ms")
    right.axhline(0.98, color="tab:red", linestyle="--", linewidth=0.8, label="goal: ≥ 0.98")
    rows_label = FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k")
    for ax, ylabel in ((left, "search latency, ms (gRPC Search, k = 10, log scale)"),
                       (right, "recall@10 against numpy's exact")):
        ax.set_xscale("log")
        ax.set_xticks(sorted({p["rows"] for p in points}))
        ax.xaxis.set_major_formatter(rows_label)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rows in the collection (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    left.set_yscale("log")
    plain = FuncFormatter(lambda y, _: f"{y:g}")
    left.yaxis.set_major_formatter(plain)
    left.yaxis.set_minor_formatter(plain)
    left.set_title("latency as the collection grows (default settings)")
    right.set_title("recall as the collection grows (the keeper's target on)")
    return _save(fig, path)
