"""The binary COPY forms of vectors equal what Postgres itself sends for the same values."""

from __future__ import annotations

import numpy as np
import psycopg2

from index_service.dialects import Lantern, PgVector


def test_binary_vector_forms_match_postgres_send_functions(pg_dsn: str) -> None:
    vec = np.random.default_rng(5).standard_normal(512).astype(np.float32)
    vec /= np.linalg.norm(vec)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute("SELECT array_send(%s::real[]), vector_send(%s::vector)",
                    (Lantern().literal(vec), PgVector().literal(vec)))
        real_array, vector = cur.fetchone()
    assert bytes(real_array) == Lantern().binary(vec)
    assert bytes(vector) == PgVector().binary(vec)


def test_binary_halfvec_form_matches_postgres(pg_dsn: str) -> None:
    vec = np.random.default_rng(6).standard_normal(384).astype(np.float32)
    vec /= np.linalg.norm(vec)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute("SELECT halfvec_send(%s::halfvec)", (PgVector().literal(vec),))
        (half,) = cur.fetchone()
    assert bytes(half) == PgVector().binary(vec, half=True)
