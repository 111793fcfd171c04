"""Hostile input against the whole stack in one process: a corpus of bad files through the gateway and straight
to the embedder, hostile metadata straight to the index, hostile queries and ids, labels that try injection.

Every answer must be a 4xx or a per-item error (never a 5xx or INTERNAL), the services must stay SERVING, and
the memory of the process holding all three services must stay bounded: MEMORY_BOUND over a warmed-up
baseline, at the sampled peak. A decoded pixel bomb (0.9 GP here) or a leak of the corpus would pass it.
"""

from __future__ import annotations

import gc
import hashlib
import http.client
import json
import math
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from index_service import domain
from index_service.media import MediaStore
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc, index_pb2
from tests.support.stack import Gateway, Stack
from tests.system.corpus import BadFile, corpus, good_jpeg
from tests.system.memory import RssSampler, media_files

MEMORY_BOUND = 300 * 1024 * 1024
INVALID, NOT_FOUND, EXHAUSTED, PRECONDITION = 3, 5, 8, 9  # grpc status numbers of per-item errors (google.rpc.Status)
CORPUS = corpus()
IDS = [b.name for b in CORPUS]
SERVING = health_pb2.HealthCheckResponse.SERVING


# --- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(hostile_stack: Stack) -> Gateway:
    """An open gateway in front of this folder's stack."""
    return hostile_stack.gateway()


@pytest.fixture(scope="module")
def api(gw: Gateway) -> httpx.Client:
    """An HTTP client of that gateway."""
    return gw.client


@pytest.fixture(scope="module")
def embedder(hostile_stack: Stack) -> Iterator[embedder_pb2_grpc.EmbedderStub]:
    """A client of the in-process embedder."""
    channel = grpc.insecure_channel(f"127.0.0.1:{hostile_stack.embedder.port}")
    yield embedder_pb2_grpc.EmbedderStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def model_id(embedder: embedder_pb2_grpc.EmbedderStub) -> str:
    """The embedder's model id (the index refuses others)."""
    return embedder.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=10).model_id


@pytest.fixture(scope="module")
def rss(api: httpx.Client, embedder: embedder_pb2_grpc.EmbedderStub) -> Iterator[RssSampler]:
    """RSS sampling from a warmed-up baseline: one good image through every path first."""
    data = good_jpeg(1)
    assert upload(api, data, "warm.jpg").status_code in (200, 201)
    assert image_search(api, data).status_code == 200
    embed(embedder, [("warm", data)])
    gc.collect()
    sampler = RssSampler()
    yield sampler
    sampler.stop()


def upload(api: httpx.Client, data: bytes, name: str, label: str = "hostile-corpus") -> httpx.Response:
    """POST one file to /api/images."""
    return api.post("/api/images", files=[("files", (name, data, "application/octet-stream"))],
                    data={"label": label} if label else {})


def image_search(api: httpx.Client, data: bytes, name: str = "q.jpg") -> httpx.Response:
    """POST one file to /api/search/image."""
    return api.post("/api/search/image", files={"file": (name, data, "application/octet-stream")}, params={"k": 3})


def embed(stub: embedder_pb2_grpc.EmbedderStub, items: list[tuple[str, bytes]],
          thumbnail_size: int = 64) -> embedder_pb2.EmbedImagesResponse:
    """One EmbedImages call."""
    request = embedder_pb2.EmbedImagesRequest(
        images=[embedder_pb2.ImageInput(key=k, data=d) for k, d in items], thumbnail_size=thumbnail_size)
    return stub.EmbedImages(request, timeout=60)


def assert_error_body(r: httpx.Response, statuses: frozenset[int] | set[int] | tuple[int, ...]) -> None:
    """A JSON error of one of `statuses`, never a 5xx."""
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    body = r.json()
    assert body["status"] == r.status_code and body["message"], body


# --- the corpus -------------------------------------------------------------------------------------------

def test_corpus_has_thirty_described_files_of_every_kind() -> None:
    assert len(CORPUS) >= 30 and len(set(IDS)) == len(IDS)
    for b in CORPUS:
        assert b.what and b.expect in ("ok", "error")
        assert (b.http and not b.size) if not b.ok else (b.size and not b.http), b.name
    errors = [b for b in CORPUS if not b.ok]
    assert len(errors) >= 30
    assert max(len(b.data) for b in errors) < 200_000, "bombs must be small files"


@pytest.mark.parametrize("bad", CORPUS, ids=IDS)
def test_gateway_upload(api: httpx.Client, rss: RssSampler, bad: BadFile) -> None:
    r = upload(api, bad.data, bad.name)
    if bad.ok:
        assert r.status_code in (200, 201), r.text
        result = r.json()["results"][0]
        assert result["outcome"] in ("created", "exists") and result["sha256"] == hashlib.sha256(bad.data).hexdigest()
        meta = api.get(f"/api/images/{result['id']}").json()
        assert (meta["width"], meta["height"]) == bad.size
        assert meta["content_type"].startswith("image/")
        original = api.get(f"/images/{result['id']}")
        # Polyglots come back byte-identical, typed as the image they are, with sniffing turned off.
        assert original.content == bad.data and original.headers["content-type"] == meta["content_type"]
        assert original.headers["x-content-type-options"] == "nosniff"
        thumb = api.get(f"/images/{result['id']}/thumb")
        assert thumb.status_code == 200 and thumb.content.startswith(b"\xff\xd8\xff")
    else:
        assert_error_body(r, bad.http)
        assert r.json()["results"][0]["outcome"] == "error"


@pytest.mark.parametrize("bad", CORPUS, ids=IDS)
def test_gateway_image_search(api: httpx.Client, rss: RssSampler, bad: BadFile) -> None:
    r = image_search(api, bad.data, bad.name)
    if bad.ok:
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["hits"], list)
    else:
        assert_error_body(r, bad.http)


def test_gateway_upload_of_the_whole_corpus_in_one_request(api: httpx.Client, rss: RssSampler) -> None:
    """One multipart request with every corpus file and fresh good images: each file gets its own outcome."""
    goods = [(f"good-{i}.jpg", good_jpeg(500 + i)) for i in range(3)]
    files = [(b.name, b.data) for b in CORPUS] + goods
    r = api.post("/api/images", files=[("files", (n, d, "application/octet-stream")) for n, d in files],
                 data={"label": "hostile-batch"})
    assert r.status_code == 201, r.text[:500]
    results = r.json()["results"]
    assert [x["file"] for x in results] == [n for n, _ in files]
    for b, x in zip(CORPUS, results, strict=False):
        if b.ok:
            assert x["outcome"] in ("created", "exists"), (b.name, x)
        else:
            assert x["outcome"] == "error" and x["status"] in b.http and x["message"], (b.name, x)
    assert [x["outcome"] for x in results[-3:]] == ["created"] * 3


@pytest.mark.parametrize("bad", CORPUS, ids=IDS)
def test_embedder_answers_each_file_alone(embedder: embedder_pb2_grpc.EmbedderStub, rss: RssSampler,
                                          bad: BadFile) -> None:
    result = embed(embedder, [(bad.name, bad.data)]).results[0]
    assert result.key == bad.name
    if bad.ok:
        assert not result.HasField("error"), result.error.message
        assert (result.width, result.height) == bad.size and result.content_type.startswith("image/")
        assert math.isclose(float(np.linalg.norm(result.embedding)), 1.0, abs_tol=1e-3)
        assert result.thumbnail.startswith(b"\xff\xd8\xff")
    else:
        assert result.error.code == INVALID and result.error.message, result
        assert not result.embedding and not result.thumbnail


def test_embedder_batch_mixing_the_corpus_with_good_images(embedder: embedder_pb2_grpc.EmbedderStub,
                                                           rss: RssSampler) -> None:
    """Good images interleaved with every bad one: the good ones get the same vectors as when sent alone."""
    goods = [(f"good-{i}", good_jpeg(700 + i)) for i in range(len(CORPUS))]
    alone = {k: list(embed(embedder, [(k, d)]).results[0].embedding) for k, d in goods[:3]}
    mixed = [item for pair in zip(goods, [(b.name, b.data) for b in CORPUS], strict=True) for item in pair]
    response = embed(embedder, mixed)
    assert [r.key for r in response.results] == [k for k, _ in mixed]
    expect = {**{k: True for k, _ in goods}, **{b.name: b.ok for b in CORPUS}}
    for r in response.results:
        assert r.HasField("error") != expect[r.key], (r.key, r.error.message)
        if r.key in alone:
            np.testing.assert_allclose(r.embedding, alone[r.key], atol=1e-5)


# --- hostile metadata straight to Index.Upsert -------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE images; --",
    "\" OR 1=1 --",
    "Robert'); DELETE FROM index_meta;--",
    "<img src=x onerror=\"window.__pwned=1\">",
    "</script><script>window.__pwned=1</script>",
    "\\.\n\\N\t\\\\ \\x41",  # COPY's end marker, NULL marker, tab and escapes
    "${jndi:ldap://127.0.0.1/a} {{7*7}} %s %n",
    "Ω 漢字 🙂 \u202eevil\u202c \ufeff",
]
# Labels are tags (issue 12): one with a control character (tab, newline…) is refused, the rest stored verbatim.
PLAIN = [s for s in INJECTIONS if not any(unicodedata.category(c) == "Cc" for c in s)]
INDEX_SUFFIX = " (index)"  # labels stored straight in the index differ from those uploaded through the gateway
TRAVERSALS = ["../../etc/passwd", "..\\..\\windows\\system32\\config\\sam", "/etc/shadow", "a/../../../../x.jpg"]


class Items:
    """Upsert items with unique originals, a valid vector and the collection's model unless told otherwise."""

    def __init__(self, model_id: str, dim: int, seed: int) -> None:
        self.model_id, self.dim = model_id, dim
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def vector(self) -> list[float]:
        """A random unit vector of the collection's dimension."""
        v = self.rng.standard_normal(self.dim).astype(np.float32)
        return (v / np.linalg.norm(v)).tolist()

    def __call__(self, **fields: object) -> index_pb2.UpsertItem:
        """An item; `fields` override the defaults."""
        self.n += 1
        original = b"\xff\xd8\xff" + f"hostile original {self.n} {self.rng.random()}".encode()
        base: dict[str, object] = dict(
            sha256=hashlib.sha256(original).hexdigest(), original=original, content_type="image/jpeg",
            thumbnail=b"\xff\xd8\xffthumb", width=10, height=10, label="hostile-meta", source="test",
            file_name=f"item-{self.n}.jpg", embedding=self.vector(), model_id=self.model_id)
        if "original" in fields and "sha256" not in fields:
            base["sha256"] = hashlib.sha256(fields["original"]).hexdigest()  # type: ignore[arg-type]
        base.update(fields)
        return index_pb2.UpsertItem(**base)  # type: ignore[arg-type]


def _bad_items(make: Items) -> list[tuple[str, index_pb2.UpsertItem, int]]:
    """(what, item, error code) for every hostile item that must fail alone."""
    dim, v = make.dim, make.vector()
    digest = make().sha256
    cases: list[tuple[str, dict[str, object], int]] = [
        ("NUL in label", {"label": "a\x00b"}, INVALID),
        ("NUL in file name", {"file_name": "x\x00.jpg"}, INVALID),
        ("NUL in source", {"source": "\x00"}, INVALID),
        ("NUL in content type", {"content_type": "image/jpeg\x00"}, INVALID),
        ("CRLF in content type", {"content_type": "image/jpeg\r\nSet-Cookie: a=b"}, INVALID),
        ("label of 1001 characters", {"label": "L" * 1001}, INVALID),
        ("label of 1 MB", {"label": "L" * 1_000_000}, INVALID),
        ("file name of 100k characters", {"file_name": "../" * 33_000 + "x"}, INVALID),
        ("width 2^32-1", {"width": 2**32 - 1}, INVALID),
        ("height 2^31", {"height": 2**31}, INVALID),
        ("NaN in vector", {"embedding": [math.nan] + v[1:]}, INVALID),
        ("+Inf in vector", {"embedding": [math.inf] + v[1:]}, INVALID),
        ("-Inf in vector", {"embedding": v[:-1] + [-math.inf]}, INVALID),
        ("zero vector", {"embedding": [0.0] * dim}, INVALID),
        ("unnormalized vector", {"embedding": [x * 2 for x in v]}, INVALID),
        ("empty vector", {"embedding": []}, INVALID),
        ("vector of dim - 1", {"embedding": v[:-1]}, PRECONDITION),
        ("vector of dim + 1", {"embedding": [*v, 0.0]}, PRECONDITION),
        ("sha256 empty", {"sha256": ""}, INVALID),
        ("sha256 upper case", {"sha256": digest.upper()}, INVALID),
        ("sha256 of 63 characters", {"sha256": digest[:63]}, INVALID),
        ("sha256 with a newline", {"sha256": digest + "\n"}, INVALID),
        ("sha256 path traversal", {"sha256": "../../../../../../etc/passwd"}, INVALID),
        ("sha256 SQL injection", {"sha256": "'; DROP TABLE images; --"}, INVALID),
        ("sha256 not hex", {"sha256": "g" * 64}, INVALID),
        ("sha256 of other bytes", {"sha256": hashlib.sha256(b"other").hexdigest()}, INVALID),
        ("original empty", {"original": b"", "sha256": hashlib.sha256(b"").hexdigest()}, INVALID),
        ("thumbnail over 4 MB", {"thumbnail": b"\xff" * (4 * 1024 * 1024 + 1)}, EXHAUSTED),
        ("model id empty", {"model_id": ""}, INVALID),
        ("model id of 201 characters", {"model_id": "m" * 201}, INVALID),
        ("model id with NUL", {"model_id": make.model_id + "\x00"}, INVALID),
        ("another model", {"model_id": "other@1"}, PRECONDITION),
    ]
    return [(what, make(**fields), code) for what, fields, code in cases]


@pytest.fixture(scope="module")
def upserted(hostile_stack: Stack, model_id: str, rss: RssSampler
             ) -> tuple[dict[str, index_pb2.UpsertItem], dict[str, index_pb2.UpsertResult],
                        list[tuple[str, index_pb2.UpsertItem, int]]]:
    """One Upsert batch: every hostile item that must be stored as plain text, every one that must fail, two good."""
    make = Items(model_id, hostile_stack.index.deps.repo.dim, seed=7)
    kept = {f"label {s!r}": make(label=s + INDEX_SUFFIX) for s in PLAIN}
    kept.update({f"file name {s!r}": make(file_name=s) for s in TRAVERSALS})
    kept.update({"source injection": make(source="$(rm -rf /); `id`"), "label of 100 characters": make(
        label="L" * 100), "good 1": make(), "good 2": make()})
    bad = [*_bad_items(make), ("label of 101 characters", make(label="L" * 101), INVALID),
           *[(f"label {s!r}", make(label=s), INVALID) for s in INJECTIONS if s not in PLAIN]]
    request = index_pb2.UpsertRequest(items=[*kept.values(), *(item for _, item, _ in bad)])
    response = hostile_stack.index.stub.Upsert(request, timeout=30)
    results = list(response.results)
    assert len(results) == len(kept) + len(bad)
    return kept, dict(zip(kept, results[: len(kept)], strict=True)), [
        (what, item, code) for (what, item, code), r in zip(bad, results[len(kept):], strict=True)
        if _same_error(what, r, code)]


def _same_error(what: str, result: index_pb2.UpsertResult, code: int) -> bool:
    assert result.HasField("error"), f"{what}: stored, but must fail"
    assert (result.error.code, bool(result.error.message)) == (code, True), (what, result.error)
    return True


def test_index_upsert_refuses_each_hostile_item_alone(upserted: tuple) -> None:
    _kept, results, bad = upserted
    assert len(bad) >= 30
    for what, r in results.items():
        assert not r.HasField("error") and r.created and r.id > 0, (what, r.error.message)


def test_index_upsert_stores_injection_strings_as_plain_text(hostile_stack: Stack, upserted: tuple) -> None:
    kept, results, _ = upserted
    stub = hostile_stack.index.stub
    metas = {m.id: m for m in stub.Get(index_pb2.GetRequest(ids=[r.id for r in results.values()]), timeout=10).images}
    for what, item in kept.items():
        m = metas[results[what].id]
        assert (m.label, m.source, m.file_name) == (item.label, item.source, item.file_name), what
    labels = {lc.label: lc.count for lc in stub.ListLabels(index_pb2.ListLabelsRequest(), timeout=10).labels}
    assert all(labels.get(s + INDEX_SUFFIX) == 1 for s in PLAIN)
    stats = stub.Stats(index_pb2.StatsRequest(), timeout=10)
    assert stats.count >= len(kept)  # the table is still there


def test_index_media_store_names_files_only_by_hash(hostile_stack: Stack, upserted: tuple) -> None:
    assert_media_named_by_hash(hostile_stack)


def assert_media_named_by_hash(hostile_stack: Stack) -> None:
    """Every stored file is named by its sha256, and nothing a client named exists under the data dir."""
    media = hostile_stack.index.config.media_dir
    files = media_files(media)
    assert files and all(p.name[64:] in ("", ".thumb", ".display.jpg") and set(p.name[:64]) <= set("0123456789abcdef")
                         for p in files)
    root = Path(hostile_stack.index.config.data_dir)
    assert not any(p.name in ("passwd", "shadow", "sam", "x.jpg") for p in root.rglob("*"))


def test_index_queries_with_hostile_values(hostile_stack: Stack, upserted: tuple, model_id: str) -> None:
    stub, kept = hostile_stack.index.stub, upserted[0]
    v = Items(model_id, hostile_stack.index.deps.repo.dim, seed=9).vector()
    for label in PLAIN:
        request = index_pb2.SearchRequest(vector=v, k=5, filter=index_pb2.Filter(labels=[label + INDEX_SUFFIX]))
        assert [h.label for h in stub.Search(request, timeout=10).hits] == [label + INDEX_SUFFIX]
    invalid = [
        index_pb2.SearchRequest(vector=v, k=5, filter=index_pb2.Filter(labels=["a\x00"])),
        index_pb2.SearchRequest(vector=v, k=5, filter=index_pb2.Filter(source="\x00")),
        index_pb2.SearchRequest(vector=v, k=5, min_score=math.nan),
        index_pb2.SearchRequest(vector=v, k=0),
        index_pb2.SearchRequest(vector=v, k=2**32 - 1),
        index_pb2.SearchRequest(vector=[math.nan] * len(v), k=5),
    ]
    for request in invalid:
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request.filter, err.value.details())
    for image_id in (-1, 0, 2**63 - 1):
        assert not stub.Get(index_pb2.GetRequest(ids=[image_id]), timeout=10).images
        assert not stub.Delete(index_pb2.DeleteRequest(ids=[image_id]), timeout=10).deleted
        for call in (lambda i=image_id: stub.SearchSimilar(index_pb2.SearchSimilarRequest(id=i, k=3), timeout=10),
                     lambda i=image_id: list(stub.GetImage(index_pb2.GetImageRequest(id=i), timeout=10))):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    good = kept["good 1"].sha256
    shas = ["'; DROP TABLE images; --", "../../etc/passwd", "a\x00b", good + "\n", good.upper(), good]
    assert list(stub.Exists(index_pb2.ExistsRequest(sha256=shas), timeout=10).present) == [good]


def test_index_refuses_undecodable_requests_as_invalid(hostile_stack: Stack, model_id: str) -> None:
    """Bytes that are not a valid message (invalid UTF-8 in a string field) are the caller's fault."""
    item = Items(model_id, hostile_stack.index.deps.repo.dim, seed=11)(label="MARKER")
    raw = index_pb2.UpsertRequest(items=[item]).SerializeToString().replace(b"MARKER", b"\xff\xfe\xfd\xfc\xc0\x80")
    call = hostile_stack.index.channel.unary_unary("/semsearch.v1.Index/Upsert", request_serializer=None,
                                                   response_deserializer=index_pb2.UpsertResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        call(raw, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


def test_hash_checks_refuse_a_trailing_newline(tmp_path: Path) -> None:
    """Python's "$" matches before a final newline; a hash must be exactly 64 hex characters."""
    digest = hashlib.sha256(b"x").hexdigest()
    assert domain.SHA256_RE.match(digest) and not domain.SHA256_RE.match(digest + "\n")
    with pytest.raises(domain.InvalidArgument):
        MediaStore(tmp_path).path_for(digest + "\n")


def test_gateway_never_serves_a_stored_type_that_is_not_an_image(hostile_stack: Stack, api: httpx.Client,
                                                                 model_id: str) -> None:
    """Another index client stored HTML typed text/html: the gateway must not hand it to browsers as a page."""
    make = Items(model_id, hostile_stack.index.deps.repo.dim, seed=13)
    html = b"<html><script>window.__pwned=1</script></html>"
    result = hostile_stack.index.stub.Upsert(index_pb2.UpsertRequest(items=[make(
        original=html, content_type="text/html")]), timeout=10).results[0]
    assert not result.HasField("error"), result.error.message
    r = api.get(f"/images/{result.id}")
    assert r.status_code == 200 and r.content == html
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-content-type-options"] == "nosniff"


# --- hostile queries and ids through the gateway -----------------------------------------------------------

QUERIES: list[tuple[str, str, tuple[int, ...]]] = [
    ("q=", "empty", (400,)),
    ("q=%20%20%20", "whitespace", (400,)),
    ("q=%09%0A%0D", "tab and newlines only", (400,)),
    ("q=a%00b", "NUL", (400,)),
    ("q=%07bell", "BEL", (400,)),
    ("q=%1B%5B31mred", "ANSI escape", (400,)),
    # The query language refuses these three (a trailing "--", an unclosed quote, an unquoted colon not
    # followed by a weight): a 400 naming the position, which is as harmless as the 200 they used to get.
    ("q=%27%3B%20DROP%20TABLE%20images%3B%20--", "SQL injection", (400,)),
    ("q=%22%20OR%201%3D1%20--", "SQL tautology", (400,)),
    ("q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "script injection", (200,)),
    ("q=%24%7Bjndi%3Aldap%3A%2F%2Fx%2Fa%7D", "log4shell string", (400,)),
    ("q=%22%27%3B%20DROP%20TABLE%20images%3B%20--%22", "quoted SQL injection", (200,)),
    ("q=%FF%FE%FD", "invalid UTF-8", (200, 400)),
    ("q=%C0%80", "overlong NUL", (200, 400)),
    ("q=%ED%A0%80", "UTF-8 surrogate", (200, 400)),
    ("q=%E2%80%AEevil", "bidi override", (200,)),
    ("q=cat&label=%00", "NUL label", (400,)),
    ("q=cat&label=%FF", "invalid UTF-8 label", (200, 400)),
    ("q=cat&label=%27%20OR%20%271%27%3D%271", "SQL label", (200,)),
    ("q=cat&" + "&".join(f"label=l{i}" for i in range(51)), "51 labels", (400,)),
    ("q=cat&k=-1", "negative k", (400,)),
    ("q=cat&k=0", "zero k", (400,)),
    ("q=cat&k=abc", "non-numeric k", (400,)),
    ("q=cat&k=" + str(2**70), "huge k", (400,)),
    ("q=cat&k=1e3", "float k", (400,)),
    ("q=cat&offset=-1", "negative offset", (400,)),
    ("q=cat&offset=" + str(2**70), "huge offset", (400,)),
    ("q=cat&min_score=nan", "NaN min_score", (400,)),
    ("q=cat&min_score=inf", "Inf min_score", (400,)),
    ("q=cat&min_score=1e309", "overflowing min_score", (400,)),
    ("q=cat&k=%00", "NUL k", (400,)),
    ("q=-cat", "only subtracted", (400,)),
    ("q=cat%3A1e309", "overflowing weight", (400,)),
    ("q=cat%3Anan", "NaN weight", (400,)),
    ("q=" + "%20%2B%20".join(f"w{i}" for i in range(100)), "100 terms", (400,)),
    ("q=cat%20-cat", "parts that cancel out", (400,)),
    ("q=%22cat", "unclosed quote", (400,)),
]


@pytest.mark.parametrize(("query", "what", "statuses"), QUERIES, ids=[w for _, w, _ in QUERIES])
def test_hostile_text_queries(api: httpx.Client, query: str, what: str, statuses: tuple[int, ...]) -> None:
    r = api.get("/api/search?" + query)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    if r.status_code == 200:
        assert isinstance(r.json()["hits"], list)
    else:
        assert_error_body(r, statuses)


@pytest.mark.parametrize("size", [1001, 60_000, 100_000])
def test_long_queries_are_4xx(gw: Gateway, size: int) -> None:
    """Over max_query_chars: 413 from the gateway; past its 16 KiB URL limit, a JSON 414 from the connection guard."""
    connection = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    connection.request("GET", "/api/search?q=" + "a" * size)
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    print(f"\nq of {size} characters: {status}")
    assert 400 <= status < 500, (status, body[:300])
    if size <= 16_000:
        assert status == 413 and b"at most" in body
    else:
        assert status == 414 and json.loads(body)["error"] == "uri_too_long"


PATHS: list[tuple[str, str, tuple[int, ...]]] = [
    ("GET", "/api/images/-1", (400,)),
    ("GET", "/api/images/0", (400,)),
    ("GET", f"/api/images/{2**70}", (400,)),
    ("GET", f"/api/images/{2**63}", (400,)),
    ("GET", f"/api/images/{2**63 - 1}", (404,)),
    ("GET", "/api/images/abc", (400,)),
    ("GET", "/api/images/1.5", (400,)),
    ("GET", "/api/images/1e3", (400,)),
    ("GET", "/api/images/0x10", (400,)),
    ("GET", "/api/images/%D9%A1%D9%A2", (400, 404)),  # Arabic-Indic digits
    ("GET", "/api/images/1%00", (400,)),
    ("GET", "/api/images/..%2f..%2fetc", (400, 404)),
    ("GET", "/api/images/..%2f..%2fetc%2fpasswd", (400, 404)),
    ("GET", "/api/images/%2e%2e/%2e%2e/etc/passwd", (400, 404)),
    ("GET", "/images/-1", (400,)),
    ("GET", "/images/-1/thumb", (400,)),
    ("GET", f"/images/{2**70}", (400,)),
    ("GET", f"/images/{2**70}/thumb", (400,)),
    ("GET", "/images/..%2f..%2fetc%2fpasswd", (400, 404)),
    ("GET", "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumb", (400, 404)),
    ("GET", "/images/1;rm%20-rf", (400,)),
    ("GET", "/api/images/-5/similar", (400,)),
    ("GET", "/api/images/abc/similar", (400,)),
    ("GET", f"/api/images/{2**63 - 1}/similar", (404,)),
    ("DELETE", "/api/images/-1", (400,)),
    ("DELETE", f"/api/images/{2**70}", (400,)),
    ("DELETE", "/api/images/..%2f..%2fetc", (400, 404, 405)),
    ("GET", "/static/..%2f..%2fapp.py", (404,)),
    ("GET", "/static/%2e%2e/%2e%2e/gateway/app.py", (404,)),
    ("GET", "/static/....//....//etc/passwd", (404,)),
]


@pytest.mark.parametrize(("method", "path", "statuses"), PATHS, ids=[f"{m} {p[:60]}" for m, p, _ in PATHS])
def test_hostile_ids_and_paths(api: httpx.Client, method: str, path: str, statuses: tuple[int, ...]) -> None:
    r = api.request(method, path)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert "root:" not in r.text and "import " not in r.text
    assert_error_body(r, statuses)


# --- labels round-trip as plain text ------------------------------------------------------------------------

ROUND_TRIP = [*INJECTIONS[:5], INJECTIONS[6], INJECTIONS[7].strip(), "\\.", "ok-label"]


@pytest.fixture(scope="module")
def labelled(api: httpx.Client) -> dict[str, int]:
    """One fresh image uploaded under each hostile label: label -> id."""
    out: dict[str, int] = {}
    for i, label in enumerate(ROUND_TRIP):
        r = upload(api, good_jpeg(900 + i), f"label-{i}.jpg", label=label)
        assert r.status_code == 201, (label, r.text)
        out[label] = r.json()["results"][0]["id"]
    return out


def test_labels_round_trip_byte_identical(api: httpx.Client, labelled: dict[str, int]) -> None:
    listed = {x["label"]: x["count"] for x in api.get("/api/labels").json()}
    for label, image_id in labelled.items():
        assert api.get(f"/api/images/{image_id}").json()["label"] == label
        assert listed.get(label) == 1, label
        hits = api.get("/api/search", params={"q": "anything", "label": label, "k": 5}).json()["hits"]
        assert [(h["id"], h["label"]) for h in hits] == [(image_id, label)]


@pytest.mark.parametrize("label", ["a\x00b", "\x1b[2J", "\x08back", "tab\there\nnewline", "L" * 201])
def test_upload_with_a_bad_label_is_400(api: httpx.Client, label: str) -> None:
    r = upload(api, good_jpeg(990), "x.jpg", label=label)
    assert_error_body(r, (400,))


def test_upload_file_names_never_become_paths(hostile_stack: Stack, api: httpx.Client) -> None:
    names = ["../../etc/passwd", "..\\..\\boot.ini", "/abs/path.jpg", "a\x00b.jpg", "\u202egpj.exe", "n" * 1000]
    for i, name in enumerate(names):
        r = upload(api, good_jpeg(1000 + i), name)
        assert r.status_code == 201, (name, r.status_code, r.text[:300])
        stored = api.get(f"/api/images/{r.json()['results'][0]['id']}").json()["file_name"]
        assert "/" not in stored and "\\" not in stored and "\x00" not in stored and len(stored) <= 255
    assert_media_named_by_hash(hostile_stack)


CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_page_shows_a_script_label_as_text(gw: Gateway, labelled: dict[str, int]) -> None:
    """The page renders an <img onerror> label as text, in the cards and in the label filter."""
    sync_api = pytest.importorskip("playwright.sync_api")
    label = INJECTIONS[3]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{gw.url}/?" + httpx.QueryParams({"q": "anything", "label": label}).__str__())
        page.wait_for_selector(".card .label")
        shown = page.eval_on_selector_all(".card .label", "els => els.map(e => e.textContent)")
        options = page.eval_on_selector_all("#label-filter option", "els => els.map(e => e.textContent)")
        injected = page.evaluate("() => [window.__pwned, document.querySelectorAll('img[src=\"x\"]').length]")
        browser.close()
    assert shown == [label]
    assert any(label in o for o in options)
    assert injected == [None, 0] and not errors


# --- afterwards: still healthy, memory bounded --------------------------------------------------------------

def test_services_stay_healthy_and_memory_bounded(hostile_stack: Stack, api: httpx.Client, rss: RssSampler) -> None:
    for port in (hostile_stack.embedder.port, hostile_stack.index_port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == SERVING, port
    assert api.get("/readyz").status_code == 200
    assert image_search(api, good_jpeg(3)).status_code == 200
    gc.collect()
    grown, peak = rss.now() - rss.baseline, rss.peak - rss.baseline
    print(f"\nRSS baseline {rss.baseline / 2**20:.0f} MiB, growth {grown / 2**20:.0f} MiB, "
          f"peak growth {peak / 2**20:.0f} MiB (bound {MEMORY_BOUND / 2**20:.0f} MiB)")
    assert peak < MEMORY_BOUND and grown < MEMORY_BOUND
