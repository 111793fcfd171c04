"""A second `loader sync` of an unchanged folder against the first load of the same files, in the same run.

`python -m bench.sync [--files 10000] [--preset tiny]`: writes a tree of small generated JPEGs (100 per
folder), starts the embedder (a random bundle) and the index (embedded Postgres) as processes, then runs
`python -m loader sync DIR` three times as the user would: the first load (every file read, hashed,
embedded and stored with its file record), then two passes over the unchanged folder, which must read
and hash nothing (size and mtime match the index's records). The figures are the wall time of each
command (process start included) and of the pass itself (the summary's elapsed_s), and the ratio of the
second sync to the first load. Writes bench/results/sync.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import free_port, machine, table, write
from bench.embedder import CACHE
from bench.loader import serve
from embedder_service.models import export

REPO = Path(__file__).resolve().parent.parent


def make_tree(root: Path, files: int) -> None:
    """`files` distinct 32x32 JPEGs, 100 per folder."""
    rng = np.random.default_rng(0)
    for i in range(files):
        folder = root / f"f{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(buf, "JPEG", quality=80)
        (folder / f"{i:05d}.jpg").write_bytes(buf.getvalue())


def run_sync(root: Path, e_addr: str, i_addr: str) -> tuple[float, dict[str, Any]]:
    """One `python -m loader sync` command: its wall seconds and its JSON summary."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "loader", "sync", str(root), "--embedder", e_addr, "--index", i_addr,
                          "--json", "-q"], cwd=REPO, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"loader sync exited {out.returncode}: {out.stderr[-2000:]}")
    return seconds, json.loads(out.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The first load and two unchanged passes; returns the rows and the ratio."""
    bundle_dir = export.cached_random_bundle(CACHE, preset=args.preset)
    root = work / "photos"
    make_tree(root, args.files)
    e_port, i_port = free_port(), free_port()
    procs = [serve("embedder_service", {"EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(e_port),
                                        "EMBEDDER_PROVIDER": "cpu"}, e_port, work / "embedder.log"),
             serve("index_service", {"INDEX_DATA_DIR": str(work / "index"), "INDEX_PORT": str(i_port),
                                     "INDEX_LOG_LEVEL": "WARNING"}, i_port, work / "index.log")]
    e_addr, i_addr = f"127.0.0.1:{e_port}", f"127.0.0.1:{i_port}"
    rows: list[dict[str, Any]] = []
    try:
        for run in ("first load", "second sync (unchanged)", "third sync (unchanged)"):
            seconds, summary = run_sync(root, e_addr, i_addr)
            rows.append({"run": run, "files": args.files, "command_s": seconds, "pass_s": summary["elapsed_s"],
                         "files_per_s": args.files / seconds, "added": summary["added"],
                         "unchanged": summary["unchanged"]})
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    first, second = rows[0], rows[1]
    assert first["added"] == args.files and second["unchanged"] == args.files == rows[2]["unchanged"], rows
    return {"machine": machine(), "preset": args.preset, "files": args.files, "rows": rows,
            "ratio_second_to_first": second["command_s"] / first["command_s"],
            "ratio_pass_second_to_first": second["pass_s"] / first["pass_s"]}


def main() -> None:
    """Run, print the table and the ratios, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--preset", default="tiny", help="random bundle preset (tiny, vit-b-32, …)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result["rows"], ["run", "files", "command_s", "pass_s", "files_per_s", "added", "unchanged"]))
    print(f"\nsecond sync / first load: {result['ratio_second_to_first']:.3f} of the command's wall time, "
          f"{result['ratio_pass_second_to_first']:.3f} of the pass itself")
    print(f"wrote {write('sync', result)}")


if __name__ == "__main__":
    main()
