"""The small per-backend pieces of SQL: Lantern (REAL[], lantern_hnsw) and pgvector (vector, hnsw).

Everything else (schema, metadata, upserts, search assembly) is shared in repository.py. The Lantern
dialect follows the facts in ../shared/LANTERN.md; it cannot run here and is unit-tested on its SQL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from index_service.config import HnswParams

BACKENDS = ("lantern", "pgvector")


class DialectError(ValueError):
    """A parameter outside what the backend accepts."""


def _check(name: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise DialectError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _floats(vec: np.ndarray) -> str:
    # %.9g round-trips every float32 exactly; one %-format of the whole vector takes 0.17 ms at 512-d
    # against 0.27 for a format per element (a search's vector is formatted once per query).
    return (",".join(["%.9g"] * len(vec))) % tuple(vec.tolist())


@dataclass(frozen=True)
class Lantern:
    """Lantern: REAL[] column, `lantern_hnsw (v dist_cos_ops)`, ef fixed at build, init_k per query."""

    name: str = "lantern"
    extension: str = "lantern"
    method: str = "lantern_hnsw"
    # Every row goes into the graph: partial indexes are not among LANTERN.md's observed facts.
    graph_delta: bool = False
    opclass: str = "dist_cos_ops"

    def column_type(self, dim: int, half: bool = False) -> str:
        """Lantern indexes REAL[] (no float8[]); the index carries the dimension (and the quantization)."""
        return "REAL[]"

    def cast(self, half: bool = False) -> str:
        """The cast that turns a text parameter into the column's type."""
        return "::real[]"

    def literal(self, vec: np.ndarray) -> str:
        """The text form of a vector parameter."""
        return "{" + _floats(vec) + "}"

    def binary(self, vec: np.ndarray, half: bool = False) -> bytes:
        """The column value in COPY's binary format: a one-dimensional float4 array (element OID 700)."""
        cells = np.empty(len(vec), dtype=[("size", ">i4"), ("value", ">f4")])
        cells["size"], cells["value"] = 4, vec
        return struct.pack(">iiiii", 1, 0, 700, len(vec), 1) + cells.tobytes()

    def session_setup(self) -> list[str]:
        """Loads the library so its settings exist in the session (SET LOCAL needs them)."""
        return ["LOAD 'lantern'"]

    def index_ddl(self, table: str, index: str, dim: int, p: HnswParams, concurrently: bool,
                  half: bool = False) -> str:
        """CREATE INDEX with the options Lantern knows (`dim`, not `dims`; ef is the search breadth);
        half-size vectors are the index's `quant_bits=16` (the table keeps REAL[])."""
        _check("dim", dim, 1, 2000)
        _check("m", p.m, 2, 128)
        _check("ef_construction", p.ef_construction, 1, 400)
        _check("ef", p.ef, 1, 400)
        how = "CONCURRENTLY " if concurrently else ""
        return (
            f"CREATE INDEX {how}IF NOT EXISTS {index} ON {table} USING lantern_hnsw (v dist_cos_ops) "
            f"WITH (m={p.m}, ef_construction={p.ef_construction}, ef={p.ef}, dim={dim}"
            f"{', quant_bits=16' if half else ''})"
        )

    def search_settings(self, k: int, ef: int, filtered: bool) -> list[str]:
        """init_k >= k so the scan's first batch already holds k rows (lantern_hnsw.ef has no effect:
        the breadth is the index's own `ef`, changed by `widen`)."""
        init_k = min(max(k, 10), 1000)
        return [f"SET LOCAL lantern_hnsw.init_k = {init_k}"]

    def widen(self, index: str, ef: int) -> list[str]:
        """A wider search beam: Lantern reads `ef` from the index, so set it and rebuild without locking."""
        ef = min(_check("ef", ef, 1, 1000), 400)  # Lantern's ceiling
        return [f"ALTER INDEX {index} SET (ef = {ef})", f"REINDEX INDEX CONCURRENTLY {index}"]

    def adopt_column(self, table: str, dim: int) -> list[str]:
        """The prototype's REAL[] column is already Lantern's type."""
        return []

    def index_params(self, p: HnswParams) -> dict[str, str]:
        """The parameters as Stats reports them."""
        return {"m": str(p.m), "ef_construction": str(p.ef_construction), "ef": str(p.ef)}


@dataclass(frozen=True)
class PgVector:
    """pgvector: vector(dim) column, `hnsw (v vector_cosine_ops)`, ef_search and iterative scans."""

    name: str = "pgvector"
    extension: str = "vector"
    method: str = "hnsw"
    opclass: str = "vector_cosine_ops"
    # The graph leaves out rows marked unindexed, which searches scan exactly (migrations.unindexed_rows).
    graph_delta: bool = True

    def column_type(self, dim: int, half: bool = False) -> str:
        """A typed column: pgvector checks the dimension on insert; halfvec stores 2 bytes a value."""
        return f"{'halfvec' if half else 'vector'}({_check('dim', dim, 1, 4000 if half else 2000)})"

    def cast(self, half: bool = False) -> str:
        """The cast that turns a text parameter into the column's type."""
        return "::halfvec" if half else "::vector"

    def literal(self, vec: np.ndarray) -> str:
        """The text form of a vector parameter."""
        return "[" + _floats(vec) + "]"

    def binary(self, vec: np.ndarray, half: bool = False) -> bytes:
        """The column value in COPY's binary format (pgvector's vector_recv / halfvec_recv: dim, unused,
        then float4s or IEEE half floats, big-endian)."""
        return struct.pack(">hh", len(vec), 0) + vec.astype(">f2" if half else ">f4").tobytes()

    def session_setup(self) -> list[str]:
        """Nothing to load: hnsw.* settings exist once the extension is installed."""
        return []

    def index_ddl(self, table: str, index: str, dim: int, p: HnswParams, concurrently: bool,
                  half: bool = False) -> str:
        """CREATE INDEX … USING hnsw (v vector_cosine_ops), or halfvec_cosine_ops for half-size vectors."""
        _check("m", p.m, 2, 100)
        _check("ef_construction", p.ef_construction, max(4, 2 * p.m), 1000)
        how = "CONCURRENTLY " if concurrently else ""
        return (
            f"CREATE INDEX {how}IF NOT EXISTS {index} ON {table} USING hnsw (v {'halfvec' if half else 'vector'}"
            "_cosine_ops) "
            f"WITH (m={p.m}, ef_construction={p.ef_construction}) WHERE NOT unindexed"
        )

    def search_settings(self, k: int, ef: int, filtered: bool) -> list[str]:
        """ef_search >= k bounds the rows a scan returns; iterative scans keep filtered queries at k."""
        ef_search = min(max(ef, k), 1000)
        out = [f"SET LOCAL hnsw.ef_search = {ef_search}"]
        if filtered:
            out.append("SET LOCAL hnsw.iterative_scan = relaxed_order")
        return out

    def widen(self, index: str, ef: int) -> list[str]:
        """Nothing to rebuild: ef_search is a per-query setting."""
        return []

    def adopt_column(self, table: str, dim: int) -> list[str]:
        """Turns the prototype's REAL[] into vector(dim) in place."""
        d = _check("dim", dim, 1, 2000)
        return [f"ALTER TABLE {table} ALTER COLUMN v TYPE vector({d}) USING v::vector({d})"]

    def index_params(self, p: HnswParams) -> dict[str, str]:
        """The parameters as Stats reports them."""
        return {"m": str(p.m), "ef_construction": str(p.ef_construction), "ef_search": str(p.ef)}


Dialect = Lantern | PgVector


def dialect_for(name: str) -> Dialect:
    """The dialect of a backend name."""
    if name == "lantern":
        return Lantern()
    if name == "pgvector":
        return PgVector()
    raise DialectError(f"unknown backend {name!r}")


def choose_backend(wanted: str, recorded: str | None, available: set[str]) -> str:
    """The backend to use: the collection's if it has one, else `wanted`, `auto` preferring lantern."""
    if recorded:
        if wanted not in ("auto", recorded):
            raise DialectError(f"INDEX_BACKEND={wanted} but the collection was created with {recorded}")
        return recorded
    if wanted == "auto":
        return "lantern" if "lantern" in available else "pgvector"
    extension = dialect_for(wanted).extension
    if extension not in available:
        raise DialectError(f"INDEX_BACKEND={wanted} but the extension {extension!r} is not available")
    return wanted
