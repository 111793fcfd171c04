"""Where thumbnails live: in the database (`thumbnail bytea`, TOAST) or in the media store (<sha256>.thumb).

`python -m bench.thumbnails [--rows 20000]` starts one embedded Postgres (durable: fsync and synchronous
commit on) and writes the same rows into two databases of it, each with its own media-store folder:
"database" holds each ~14 KB JPEG thumbnail in the column, as before issue 14; "media store" writes it
as a file in the same durable batch as the original (MediaStore.put_paths), the column NULL. Batches
alternate between the two so the shared machine's noise hits both alike. Then per placement: database
size per row, `pg_dump -Fc` time and size, the files' disk use, thumbnail read latency (a SELECT of the
bytea by id against a row lookup plus the file), and GetImage(THUMBNAIL) through the real service,
one service per placement. Last, the background mover moves the "database" placement's thumbnails out
and `VACUUM FULL` shows the space it gives back. Writes bench/results/thumbnails.json.

The writes use one COPY per batch for both placements (the service's upsert minus its locks and
checks), so the write rates compare the placements, not the whole upsert path. Reads are warm (the
page cache holds both at this size); originals are small stand-ins, so media-store sizes are thumbnails.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg2

from bench.common import RESULTS, free_port, machine, percentiles, table
from bench.index_data import start_service
from index_service import thumbnails
from index_service.config import Config
from index_service.media import MediaStore
from index_service.pg import EmbeddedPostgres, bin_dir
from index_service.repository import COPY_HEADER, Repository
from index_service.thumbnail_mover import ThumbnailMover
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from tests.support.photos import photo_jpeg

PLACES = ("database", "media store")
COLUMNS = "id, sha256, label, source, file_name, width, height, content_type, size_bytes, model_id, v"
_INT2, _INT4, _INT8 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")


@dataclasses.dataclass
class Place:
    """One placement: its database, media store and what was measured of it."""

    name: str
    dsn: str
    media: MediaStore
    repo: Repository
    table: str
    write_s: float = 0.0
    empty_bytes: int = 0
    out: dict[str, Any] = dataclasses.field(default_factory=dict)


def open_place(pg: EmbeddedPostgres, root: Path, name: str) -> Place:
    """A fresh database migrated by the service's own code, and an empty media store."""
    db = "bench_" + name.replace(" ", "_")
    conn = psycopg2.connect(pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db}")
        cur.execute(f"CREATE DATABASE {db}")
    conn.close()
    folder = root / db
    config = Config(dsn=pg.dsn(db), data_dir=folder, defer_index=True, target_recall=0.0)
    media = MediaStore(config.media_dir)
    repo = Repository(config, pg.dsn(db), media)
    repo.open()
    table_name = repo.collection("", 10).table
    place = Place(name, pg.dsn(db), media, repo, table_name)
    place.empty_bytes = scalar(place, "SELECT pg_database_size(current_database())")
    return place


def scalar(place: Place, sql: str, params: tuple[Any, ...] = ()) -> int:
    conn = psycopg2.connect(place.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


Row = tuple[str, bytes, bytes, np.ndarray]  # sha256, original, thumbnail, vector


def rows_of(start: int, n: int, pool: list[bytes], rng: np.random.Generator) -> list[Row]:
    """Rows start..start+n; each thumbnail a pooled JPEG made distinct by a tail."""
    out = []
    for i in range(start, start + n):
        original = f"bench-original-{i}-".encode() * 40
        thumb = pool[i % len(pool)] + i.to_bytes(8, "big")  # bytes after the JPEG's end: still a JPEG
        vec = rng.standard_normal(512).astype(np.float32)
        out.append((hashlib.sha256(original).hexdigest(), original, thumb, vec / np.linalg.norm(vec)))
    return out


def write(place: Place, conn: Any, start: int, rows: list[Row]) -> None:
    """One durable batch: files first (thumbnails too in the media store), then the rows in one COPY."""
    in_db = place.name == "database"
    started = time.perf_counter()
    files = [(place.media.path_for(sha), orig) for sha, orig, _, _ in rows]
    if not in_db:
        files += [(thumbnails.path(place.media, sha), thumb) for sha, _, thumb, _ in rows]
    place.media.put_paths(files)
    out = [COPY_HEADER]
    for n, (sha, orig, thumb, vec) in enumerate(rows):
        fields = [_INT8.pack(start + n + 1), sha.encode(), b"bench", b"bench", f"{start + n}.jpg".encode(),
                  _INT4.pack(640), _INT4.pack(480), b"image/jpeg", _INT8.pack(len(orig)), b"bench@1",
                  place.repo.dialect.binary(vec)] + ([thumb] if in_db else [])
        out.append(_INT2.pack(len(fields)))
        out += [b for f in fields for b in (_INT4.pack(len(f)), f)]
    out.append(_INT2.pack(-1))
    with conn.cursor() as cur:
        columns = COLUMNS + (", thumbnail" if in_db else "")
        cur.copy_expert(f"COPY {place.table} ({columns}) FROM STDIN WITH (FORMAT binary)", io.BytesIO(b"".join(out)))
    conn.commit()
    place.write_s += time.perf_counter() - started


def sizes(place: Place, rows: int, root: Path) -> None:
    """Database size per row, pg_dump -Fc time and size, the thumbnails' disk use."""
    conn = psycopg2.connect(place.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CHECKPOINT")
        cur.execute("SELECT pg_database_size(current_database()), pg_total_relation_size(%s), "
                    "pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = to_regclass(%s)",
                    (place.table, place.table))
        db, table_bytes, toast = cur.fetchone()  # type: ignore[misc]
    conn.close()
    dump = root / f"{place.table}-{place.name.replace(' ', '_')}.dump"
    started = time.perf_counter()
    subprocess.run([str(bin_dir() / "pg_dump"), "-Fc", "-f", str(dump), "-d", place.dsn], check=True)
    dump_s = time.perf_counter() - started
    thumbs = list(place.media.root.rglob("*.thumb"))
    apparent = sum(p.stat().st_size for p in thumbs)
    allocated = sum(p.stat().st_blocks * 512 for p in thumbs)
    copy = root / "copy"
    started = time.perf_counter()
    shutil.copytree(place.media.root, copy)  # the media store's half of a backup
    copy_s = time.perf_counter() - started
    shutil.rmtree(copy)
    place.out.update(
        database_bytes=db, database_bytes_per_row=(db - place.empty_bytes) / rows, table_bytes=table_bytes,
        toast_bytes=toast, dump_bytes=dump.stat().st_size, dump_s=dump_s, thumbnail_files=len(thumbs),
        thumbnail_file_bytes=apparent, thumbnail_disk_bytes=allocated, media_copy_s=copy_s,
        write_rows_per_s=rows / place.write_s)
    dump.unlink()


def direct_reads(places: list[Place], rows: int, n: int) -> None:
    """Latency of one thumbnail by id: the bytea by SELECT, or the sha256 by SELECT and then the file."""
    conns = {p.name: psycopg2.connect(p.dsn) for p in places}
    for c in conns.values():
        c.autocommit = True
    samples: dict[str, list[float]] = {"database": [], "media store": [], "file alone": []}
    for image_id in random.Random(1).choices(range(1, rows + 1), k=n):
        for p in places:
            with conns[p.name].cursor() as cur:
                started = time.perf_counter()
                if p.name == "database":
                    cur.execute(f"SELECT thumbnail FROM {p.table} WHERE id = %s", (image_id,))
                    data = bytes(cur.fetchone()[0])  # type: ignore[index]
                else:
                    cur.execute(f"SELECT sha256 FROM {p.table} WHERE id = %s", (image_id,))
                    target = thumbnails.path(p.media, cur.fetchone()[0])  # type: ignore[index]
                    mid = time.perf_counter()
                    data = target.read_bytes()
                    samples["file alone"].append(time.perf_counter() - mid)
                samples[p.name].append(time.perf_counter() - started)
            assert data.startswith(b"\xff\xd8\xff")
    for c in conns.values():
        c.close()
    for p in places:
        p.out["direct_read"] = percentiles(samples[p.name])
    places[1].out["file_read_alone"] = percentiles(samples["file alone"])


def service_reads(places: list[Place], rows: int, n: int) -> None:
    """GetImage(THUMBNAIL) through the real service, one per placement (its mover off), calls alternating."""
    procs, stubs = [], {}
    try:
        for p in places:
            port = free_port()
            procs.append(start_service(p.media.root.parent, port, INDEX_DSN=p.dsn, INDEX_MOVE_THUMBNAILS="false",
                                       INDEX_DEFER_INDEX="true", INDEX_TARGET_RECALL="0"))
            stubs[p.name] = index_pb2_grpc.IndexStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        samples: dict[str, list[float]] = {p.name: [] for p in places}
        for image_id in random.Random(2).choices(range(1, rows + 1), k=n):
            for p in places:
                request = index_pb2.GetImageRequest(id=image_id, variant=index_pb2.IMAGE_VARIANT_THUMBNAIL)
                started = time.perf_counter()
                data = b"".join(c.data for c in stubs[p.name].GetImage(request, timeout=10))
                samples[p.name].append(time.perf_counter() - started)
                assert data.startswith(b"\xff\xd8\xff")
        for p in places:
            p.out["service_read"] = percentiles(samples[p.name])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


def move(place: Place) -> dict[str, Any]:
    """The mover over the database placement, then what VACUUM FULL gives back to the operating system."""
    started = time.perf_counter()
    moved = ThumbnailMover(place.repo.config, place.repo, place.media).run()
    seconds = time.perf_counter() - started
    after_move = scalar(place, "SELECT pg_database_size(current_database())")
    conn = psycopg2.connect(place.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"VACUUM FULL {place.table}")
    conn.close()
    return {"moved": moved, "move_s": seconds, "rows_per_s": moved / seconds, "database_bytes_after_move": after_move,
            "database_bytes_after_vacuum_full": scalar(place, "SELECT pg_database_size(current_database())")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--reads", type=int, default=1000, help="thumbnail reads per placement and way")
    parser.add_argument("--out", type=Path, default=RESULTS / "thumbnails.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-thumbnails-"))
    os.chmod(root, 0o755)  # the embedded Postgres runs as its own user
    pool = [photo_jpeg(256, 192, quality=85, seed=s) for s in range(64)]  # the loader's default thumbnail size
    pg = EmbeddedPostgres(root / "pg")
    try:
        pg.start()
        places = [open_place(pg, root, name) for name in PLACES]
        conns = {p.name: psycopg2.connect(p.dsn) for p in places}
        rng = np.random.default_rng(0)
        for start in range(0, args.rows, args.batch):
            batch = rows_of(start, min(args.batch, args.rows - start), pool, rng)
            for p in places if (start // args.batch) % 2 == 0 else places[::-1]:
                write(p, conns[p.name], start, batch)
        for c in conns.values():
            c.close()
        for p in places:
            sizes(p, args.rows, root)
        direct_reads(places, args.rows, args.reads)
        service_reads(places, args.rows, args.reads)
        moved = move(places[0])
        report(places, args, moved)
        for p in places:
            p.repo.close()
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def report(places: list[Place], args: argparse.Namespace, moved: dict[str, Any]) -> None:
    d, m = places[0].out, places[1].out
    mb = 1024 * 1024
    lines = []
    for p in places:
        o = p.out
        lines.append({
            "placement": p.name, "db MB": o["database_bytes"] / mb, "db KB/row": o["database_bytes_per_row"] / 1024,
            "dump MB": o["dump_bytes"] / mb, "dump s": o["dump_s"],
            "thumb files MB (du)": o["thumbnail_disk_bytes"] / mb,
            "media copy s": o["media_copy_s"], "write rows/s": o["write_rows_per_s"],
            "read p50/p99 ms": f"{o['direct_read']['p50_ms']:.2f} / {o['direct_read']['p99_ms']:.2f}",
            "GetImage p50/p99 ms": f"{o['service_read']['p50_ms']:.2f} / {o['service_read']['p99_ms']:.2f}"})
    print(table(lines, list(lines[0])))
    ratios = {"database_bytes": m["database_bytes"] / d["database_bytes"],
              "dump_bytes": m["dump_bytes"] / d["dump_bytes"],
              "dump_s": m["dump_s"] / d["dump_s"], "write_rows_per_s": m["write_rows_per_s"] / d["write_rows_per_s"],
              "direct_read_p50": m["direct_read"]["p50_ms"] / d["direct_read"]["p50_ms"],
              "service_read_p50": m["service_read"]["p50_ms"] / d["service_read"]["p50_ms"],
              "backup_s": (m["dump_s"] + m["media_copy_s"]) / (d["dump_s"] + d["media_copy_s"])}
    print("media store / database: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(f"mover: {moved['moved']} rows in {moved['move_s']:.1f} s ({moved['rows_per_s']:.0f} rows/s); database "
          f"{moved['database_bytes_after_move'] / mb:.0f} MB after it, "
          f"{moved['database_bytes_after_vacuum_full'] / mb:.0f} MB after VACUUM FULL")
    result = {"machine": machine(), "load_average": os.getloadavg(), "rows": args.rows, "batch": args.batch,
              "reads": args.reads, "placements": {p.name: p.out for p in places}, "ratios_media_over_database": ratios,
              "mover": moved}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
