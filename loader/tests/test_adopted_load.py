"""Loading a folder the original prototype had loaded: its adopted rows are made whole, so nothing is stored twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg2

from index_service.pg import EmbeddedPostgres
from loader.__main__ import EXIT_OK
from loader.tests.conftest import start_index, stop_index
from loader.tests.test_load import load, services
from tests.support.pg import create_database
from tests.support.trees import encoded


def test_a_second_load_of_the_prototypes_folder_adds_nothing(tmp_path: Path, embedder: str,
                                                               pg: EmbeddedPostgres) -> None:
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    files = [root / "cats" / "a.jpg", root / "cats" / "b.png", root / "c.jpg"]
    for seed, path in enumerate(files):
        path.write_bytes(encoded(seed, 80, 60, "PNG" if path.suffix == ".png" else "JPEG"))
    dsn = create_database(pg)
    rng = np.random.default_rng(5)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE image_table (v REAL[], location VARCHAR, id SERIAL PRIMARY KEY)")
        for path in files:
            v = rng.standard_normal(512)
            cur.execute("INSERT INTO image_table (v, location) VALUES (%s, %s)", ((v / np.linalg.norm(v)).tolist(),
                                                                                   str(path)))
    index = start_index(pg, tmp_path / "index-data", dsn=dsn)
    try:
        assert index.deps.adopter is not None and index.deps.adopter.done.wait(60)
        code, summary, _ = load(tmp_path, "dir", str(root), *services(embedder, index))
        assert code == EXIT_OK and summary["loaded"] == 0 and summary["already_present"] == len(files)
        assert index.count() == len(files)
    finally:
        stop_index(index)
