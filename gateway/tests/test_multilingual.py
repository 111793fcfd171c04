"""End to end with a multilingual model: a tiny M-CLIP bundle behind the real services answers Chinese and German."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from embedder_service.model import ClipModel
from embedder_service.tests import images
from gateway.tests.test_api import upload
from index_service.pg import EmbeddedPostgres
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc
from tests.support.stack import Stack, build_stack

pytest.importorskip("torch", reason="building an M-CLIP bundle needs the torch extra")
pytest.importorskip("transformers", reason="building an M-CLIP bundle needs the torch extra")

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-bundles"
QUERIES = ["一只海滩上的狗", "ein Hund am Strand"]


@pytest.fixture(scope="module")
def mclip_stack(embedded_pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack serving the tiny random M-CLIP bundle (XLM-R tokenizer), built once per code version."""
    from embedder_service.models import bundle, family_export

    model = ClipModel(bundle.load(family_export.cached_family_bundle(CACHE, "mclip")), "cpu")
    s, close = build_stack(model, embedded_pg, tmp_path_factory.mktemp("mclip-index"))
    yield s
    close()


@pytest.fixture(scope="module")
def client(mclip_stack: Stack) -> httpx.Client:
    """A gateway in front of the M-CLIP stack, with a few pictures stored."""
    c = mclip_stack.gateway().client
    assert upload(c, *(images.jpeg(seed=1500 + i) for i in range(3)), label="beach").status_code == 201
    return c


@pytest.mark.parametrize("query", QUERIES)
def test_a_query_in_another_language_finds_pictures(client: httpx.Client, mclip_stack: Stack, query: str) -> None:
    r = client.get("/api/search", params={"q": query, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["hits"]) == 3 and body["truncated"] is False
    stats = client.get("/api/stats").json()
    assert stats["model_name"] == "random-mclip-tiny" and stats["collection_models"] == [stats["model_id"]]
    with grpc.insecure_channel(f"127.0.0.1:{mclip_stack.embedder.port}") as channel:
        reply = embedder_pb2_grpc.EmbedderStub(channel).EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=[query]),
                                                                     timeout=10)
    counted = reply.results[0]
    # More than <s> and </s>: the XLM-R tokenizer split the words, and nothing was cut.
    assert 2 < counted.token_count <= 77 and not counted.truncated
