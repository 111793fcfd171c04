"""Loader end to end against the embedder's own throughput, on Caltech-sized JPEGs, in the same run.

`python -m bench.loader [--images 2000] [--precision int8]`: writes a generated tree of JPEGs
(about 300x250, varied, as in Caltech-256), starts the embedder (random ViT-B/32 bundle) and the index
(embedded Postgres) as processes, then measures
  1. the embedder alone: the images streamed through StreamEmbedImages (batch 32, thumbnails on),
     the ceiling for any loader;
  2. `python -m loader dir` end to end into the index: read, hash, Exists, embed, Upsert.
The images are split into rounds, each measured both ways in alternating order (on fresh images), so
that the background load of a shared machine hits both alike. Besides wall time it counts CPU
seconds per image of every process involved (embedder; plus loader, index and Postgres), which
other jobs on the machine do not disturb. The ratio of the rates is the number that matters; the
projection to Caltech-256's 30,607 images uses the loader's rate. Both modes also record their
progress over time (the embedder: each streamed response; the loader: its plain progress lines, every
half second), for the report's timeline. Writes bench/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil

from bench.common import free_port, machine, table, write
from bench.embedder import CACHE, caltech_like
from embedder_service.models import export
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc
from semsearch_common import channels

REPO = Path(__file__).resolve().parent.parent
CALTECH_IMAGES = 30_607
PROTOTYPE_S = 3600.0  # the Django prototype: about an hour, on a GPU machine
PROGRESS_LINE = re.compile(r"^(\d+)/(\d+) files")


def serve(module: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start `python -m module` and wait until its health check says SERVING."""
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env={**os.environ, **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        channels.wait_serving(f"127.0.0.1:{port}", 180, alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError) as err:
        proc.kill()
        raise RuntimeError(f"{module}: {err}; see {log}") from None
    return proc


def write_trees(root: Path, count: int, rounds: int) -> list[tuple[Path, list[bytes]]]:
    """count JPEGs split into `rounds` trees of 20 category folders each; returns (tree, bytes) pairs."""
    datas = caltech_like(count)
    trees = []
    for r in range(rounds):
        tree, part = root / f"round{r}", datas[r::rounds]
        for i, data in enumerate(part):
            folder = tree / f"{i % 20 + 1:03d}.category{i % 20 + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:05d}.jpg").write_bytes(data)
        trees.append((tree, part))
    return trees


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these live processes and their children."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def children_cpu_s() -> float:
    """CPU seconds of the exited children of this process (the loader runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def embedder_rate(addr: str, datas: list[bytes], batch: int, thumbnail: int,
                  marks: list[list[float]] | None = None) -> float:
    """Seconds the embedder alone takes for all images through one stream, as fast as it drains them;
    appends [seconds since start, images done] per response to marks."""
    def requests() -> Iterator[embedder_pb2.EmbedImagesRequest]:
        for n, start in enumerate(range(0, len(datas), batch)):
            images = [embedder_pb2.ImageInput(data=d, key=str(k)) for k, d in enumerate(datas[start:start + batch])]
            yield embedder_pb2.EmbedImagesRequest(images=images, thumbnail_size=thumbnail, request_id=str(n))

    with grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 256 << 20)]) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        started = time.perf_counter()
        done = 0
        for response in stub.StreamEmbedImages(requests(), timeout=3600):
            done += len(response.results)
            if marks is not None:
                marks.append([round(time.perf_counter() - started, 3), done])
        elapsed = time.perf_counter() - started
    assert done == len(datas)
    return elapsed


def loader_run(tree: Path, embedder: str, index: str, report: Path, batch: int, in_flight: int,
               marks: list[list[float]] | None = None) -> dict[str, Any]:
    """Run the loader CLI end to end; returns its summary plus the wall time of the process, and appends
    [seconds since start, files done] per progress line to marks."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "loader", "dir", str(tree), "--embedder", embedder, "--index", index,
                             "--batch-size", str(batch), "--in-flight", str(in_flight), "--report", str(report),
                             "--progress", "lines", "--progress-interval", "0.5"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        match = PROGRESS_LINE.match(line)
        if match and marks is not None:
            marks.append([round(time.perf_counter() - started, 3), int(match.group(1))])
    proc.wait()
    wall = time.perf_counter() - started
    summary: dict[str, Any] = json.loads(report.read_text().splitlines()[-1])["summary"]
    summary["wall_s"] = wall
    if marks is not None:
        marks.append([round(wall, 3), summary["loaded"] + summary["already_present"]])
    return summary


def postmaster_pid(data_dir: Path) -> int:
    """The embedded Postgres of the index service."""
    return int((data_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0])


def measure(args: argparse.Namespace, work: Path, bundle_dir: Path) -> dict[str, Any]:
    """Start the services and alternate embedder-alone and loader rounds on fresh images."""
    trees = write_trees(work / "images", args.images, args.rounds)
    e_port, i_port = free_port(), free_port()
    procs = [serve("embedder_service", {"EMBEDDER_MODEL_DIR": str(bundle_dir), "EMBEDDER_PORT": str(e_port),
                                        "EMBEDDER_PROVIDER": "cpu"}, e_port, work / "embedder.log")]
    try:
        index_env = {k: "" for k in os.environ if k.startswith("PG")}
        index_env.update(INDEX_DATA_DIR=str(work / "index"), INDEX_PORT=str(i_port), INDEX_LOG_LEVEL="WARNING")
        procs.append(serve("index_service", index_env, i_port, work / "index.log"))
        embedder, index = f"127.0.0.1:{e_port}", f"127.0.0.1:{i_port}"
        parts = {"embedder": [procs[0].pid], "index": [procs[1].pid], "postgres": [postmaster_pid(work / "index")]}
        services = [pid for pids in parts.values() for pid in pids]
        embedder_rate(embedder, trees[0][1][:64], args.batch, 256)  # warm-up
        t: dict[str, Any] = {"embedder_s": 0.0, "loader_s": 0.0, "embedder_cpu_s": 0.0, "loader_cpu_s": 0.0,
                             "loaded": 0}
        # Where the CPU of the loader rounds goes, per process (the loader itself: its exited process).
        split = dict.fromkeys([*parts, "loader"], 0.0)
        timeline: list[dict[str, Any]] = []
        bench_start = time.perf_counter()
        for r, (tree, datas) in enumerate(trees):
            # Alternate which goes first, so drift in the machine's background load hits both alike.
            for mode in (("embedder", "loader") if r % 2 == 0 else ("loader", "embedder")):
                cpu0, child0 = cpu_s(services), children_cpu_s()
                each0 = {name: cpu_s(pids) for name, pids in parts.items()}
                marks: list[list[float]] = []
                timeline.append({"round": r, "mode": mode, "start_s": round(time.perf_counter() - bench_start, 3),
                                 "points": marks})
                if mode == "embedder":
                    t["embedder_s"] += embedder_rate(embedder, datas, args.batch, 256, marks)
                else:
                    summary = loader_run(tree, embedder, index, work / f"report{r}.jsonl", args.batch, args.in_flight,
                                         marks)
                    t["loader_s"] += summary["elapsed_s"]
                    t["loaded"] += summary["loaded"] + summary["already_present"]
                t[f"{mode}_cpu_s"] += cpu_s(services) - cpu0 + children_cpu_s() - child0
                if mode == "loader":
                    for name, pids in parts.items():
                        split[name] += cpu_s(pids) - each0[name]
                    split["loader"] += children_cpu_s() - child0
            print(f"round {r + 1}/{args.rounds}: embedder {t['embedder_s']:.1f} s, loader {t['loader_s']:.1f} s "
                  "(cumulative)", flush=True)
        t["loader_cpu_ms_per_image_by_process"] = {k: 1000 * v / args.images for k, v in split.items()}
        t["timeline"] = timeline
        return t
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    """Build the data, start the services, measure both, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="JPEGs to generate (default: 2000)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the images are split into")
    parser.add_argument("--precision", default="int8", help="random ViT-B/32 bundle precision (default: int8)")
    parser.add_argument("--batch", type=int, default=32, help="images per request, both runs (default: 32)")
    parser.add_argument("--in-flight", type=int, default=4, help="loader batches per stage (default: 4)")
    args = parser.parse_args()

    bundle_dir = export.cached_random_bundle(CACHE, "vit-b-32", args.precision)
    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        t = measure(args, work, bundle_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert t["loaded"] == args.images, t
    alone, loader = args.images / t["embedder_s"], args.images / t["loader_s"]
    cpu_alone, cpu_loader = t["embedder_cpu_s"] / args.images, t["loader_cpu_s"] / args.images
    result = {
        "machine": machine(), "note": "shared machine: other test runs add noise to wall times; CPU per image "
        "is not affected by them", "images": args.images, "rounds": args.rounds, "precision": args.precision,
        "batch": args.batch, "in_flight": args.in_flight, **t,
        "embedder_images_per_s": alone, "loader_images_per_s": loader, "ratio": loader / alone,
        "cpu_ms_per_image_embedder_alone": cpu_alone * 1000, "cpu_ms_per_image_loader_all_processes": cpu_loader * 1000,
        "cpu_ratio": cpu_alone / cpu_loader,
        "projected_caltech256_min": CALTECH_IMAGES / loader / 60, "prototype_caltech256_min": PROTOTYPE_S / 60,
    }
    rows = [
        {"what": "embedder alone (StreamEmbedImages, thumbnails on)", "images/s": alone,
         "CPU ms/image": cpu_alone * 1000},
        {"what": "loader end to end (read, hash, Exists, embed, Upsert)", "images/s": loader,
         "CPU ms/image": cpu_loader * 1000},
    ]
    print(f"\n{machine()}; {args.images} Caltech-sized JPEGs in {args.rounds} alternating rounds; "
          f"random ViT-B/32 {args.precision}\n")
    print(table(rows, ["what", "images/s", "CPU ms/image"]))
    print(f"\nratio loader / embedder: {result['ratio']:.3f} (goal >= 0.85); by CPU per image: "
          f"{result['cpu_ratio']:.3f}")
    print("CPU ms per image in the loader rounds, by process: " + ", ".join(
        f"{k} {v:.1f}" for k, v in t["loader_cpu_ms_per_image_by_process"].items()))
    print(f"projected Caltech-256 ({CALTECH_IMAGES:,} images): {result['projected_caltech256_min']:.1f} min "
          f"(goal <= 15; the prototype: about 60 on a GPU)")
    print(f"\nwrote {write('loader', result)}")

if __name__ == "__main__":
    main()
