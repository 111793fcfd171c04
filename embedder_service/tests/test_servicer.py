"""EmbedderServicer through a real in-process channel, over a fake engine: the RPC layer alone, in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from embedder_service.batching import Closed, Overloaded
from embedder_service.config import EmbedderConfig
from embedder_service.engine import DeadlineExceeded
from embedder_service.server import SERVICE, STREAM_IN_FLIGHT, EmbedderServer, create_server
from embedder_service.tests.fake_engine import DIM, FakeEngine
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc
from semsearch_common import status
from semsearch_common.channels import channel
from semsearch_common.exif import Facts
from tests.support.health import NOT_SERVING, SERVING, wait_status

CONFIG = EmbedderConfig(port=0, max_images_per_request=4, max_texts_per_request=3, thumbnail_max=128)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def server(engine: FakeEngine) -> Iterator[EmbedderServer]:
    served = create_server(CONFIG, engine)
    yield served
    engine.release()
    served.stop(0)


@pytest.fixture
def chan(server: EmbedderServer) -> Iterator[grpc.Channel]:
    with channel(f"127.0.0.1:{server.port}") as c:
        yield c


@pytest.fixture
def stub(chan: grpc.Channel) -> embedder_pb2_grpc.EmbedderStub:
    return embedder_pb2_grpc.EmbedderStub(chan)


def images(*datas: bytes, thumbnail_size: int = 0, request_id: str = "") -> embedder_pb2.EmbedImagesRequest:
    return embedder_pb2.EmbedImagesRequest(
        images=[embedder_pb2.ImageInput(data=d, key=f"k{i}") for i, d in enumerate(datas)],
        thumbnail_size=thumbnail_size, request_id=request_id)


def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), status.call_reason(info.value)


def test_results_keep_keys_and_order_and_a_bad_item_fails_alone_with_its_reason(stub, engine: FakeEngine) -> None:
    reply = stub.EmbedImages(images(b"one", b"bad bytes", b"three!", thumbnail_size=64, request_id="r1"), timeout=5)
    assert reply.request_id == "r1" and reply.model_id == "fake@1"
    ok, bad, last = reply.results
    assert [r.key for r in reply.results] == ["k0", "k1", "k2"]
    assert len(ok.embedding) == DIM and (ok.width, ok.height, ok.content_type, ok.thumbnail) == (
        32, 24, "image/jpeg", b"thumb")
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not bad.embedding
    assert status.reason(bad.error) == "INVALID_ARGUMENT" and "not an image" in bad.error.message
    assert not last.HasField("error") and list(last.embedding) != list(ok.embedding)
    texts = stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a dog", " "]), timeout=5)
    assert texts.model_id == "fake@1" and texts.results[0].token_count == 4
    assert status.reason(texts.results[1].error) == "INVALID_ARGUMENT"


def test_limits_are_refused_with_their_reason_before_the_engine_is_asked(stub, engine: FakeEngine) -> None:
    assert failure(lambda: stub.EmbedImages(images(*[b"x"] * 5), timeout=5)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE")
    assert failure(lambda: stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a"] * 4), timeout=5)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE")
    assert failure(lambda: stub.EmbedImages(images(b"x", thumbnail_size=129), timeout=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert failure(lambda: list(stub.StreamEmbedImages(iter([images(*[b"x"] * 5)]), timeout=5))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE")
    assert engine.calls == []


def test_model_info_publishes_the_limits(stub) -> None:
    info = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=5)
    assert (info.name, info.model_id, info.dim, info.providers) == ("fake", "fake@1", DIM, ["FakeExecutionProvider"])
    assert (info.max_images_per_request, info.max_texts_per_request, info.max_thumbnail_size) == (4, 3, 128)
    assert info.max_message_bytes == CONFIG.max_receive_mb << 20


@pytest.mark.parametrize(("error", "code", "reason"), [
    (Overloaded("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"),
    (Closed("closing"), grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
    (DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
])
def test_engine_errors_leave_as_their_status_and_reason(stub, engine: FakeEngine, error: Exception,
                                                        code: grpc.StatusCode, reason: str) -> None:
    engine.fail = error  # type: ignore[assignment]
    got = failure(lambda: stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a"]), timeout=5))
    assert got == (code, reason)
    assert failure(lambda: stub.EmbedImages(images(b"x"), timeout=5))[0] == code


def test_a_bug_in_the_engine_is_internal(stub, engine: FakeEngine) -> None:
    engine.fail = ZeroDivisionError("oops")  # type: ignore[assignment]
    assert failure(lambda: stub.EmbedImages(images(b"x"), timeout=5))[0] == grpc.StatusCode.INTERNAL


def test_the_callers_deadline_reaches_the_engine_and_is_honoured(stub, engine: FakeEngine) -> None:
    stub.EmbedImages(images(b"x"), timeout=3)
    (_, _, timeout, room), = engine.calls
    # The caller's 3 s, not the server's default (gRPC may round the deadline it sends up by a few ms);
    # unary calls never wait for queue room.
    assert 0 < timeout <= 3.1 and not room
    engine.hold()
    assert failure(lambda: stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a"]), timeout=0.3))[0] == (
        grpc.StatusCode.DEADLINE_EXCEEDED)


def test_without_a_client_deadline_the_server_default_applies_and_streams_wait_for_room(stub, engine) -> None:
    assert len(stub.EmbedImages(images(b"x")).results) == 1  # no timeout at all
    assert len(stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a"])).results) == 1
    assert stub.GetModelInfo(embedder_pb2.GetModelInfoRequest()).dim == DIM
    assert [r.request_id for r in stub.StreamEmbedImages(iter([images(b"x", request_id="s")]))] == ["s"]
    unary_images, unary_texts, streamed = engine.calls
    assert 100 < unary_images[2] <= 120 and 100 < unary_texts[2] <= 120  # the platform's default of 120 s
    assert streamed[2] is None and streamed[3]  # a stream without deadline: no bound, and back-pressure


def test_a_stream_answers_in_order_and_keeps_at_most_its_in_flight_limit_running(stub, engine: FakeEngine) -> None:
    engine.hold()
    requests = [images(b"x" * (i + 1), request_id=f"r{i}") for i in range(3 * STREAM_IN_FLIGHT)]
    call = stub.StreamEmbedImages(iter(requests), timeout=30)
    for _ in range(STREAM_IN_FLIGHT):
        assert engine.entered.acquire(timeout=10)  # the in-flight requests have all reached the engine
    assert not engine.entered.acquire(timeout=0.3), "more requests of one stream running than its limit"
    engine.release()
    assert [r.request_id for r in call] == [f"r{i}" for i in range(3 * STREAM_IN_FLIGHT)]
    assert engine.most_running == STREAM_IN_FLIGHT


def test_loading_until_attached_then_serving_and_released_on_stop(engine: FakeEngine) -> None:
    server = create_server(CONFIG)
    try:
        with channel(f"127.0.0.1:{server.port}") as chan:
            wait_status(chan, NOT_SERVING, SERVICE)
            stub = embedder_pb2_grpc.EmbedderStub(chan)
            assert failure(lambda: stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=5)) == (
                grpc.StatusCode.UNAVAILABLE, "MODEL_LOADING")
            server.attach(engine)
            wait_status(chan, SERVING, SERVICE)
            assert stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=5).model_id == "fake@1"
    finally:
        server.stop(0)
    assert engine.closed


def test_facts_reach_the_response_with_optional_fields_unset_where_the_file_says_nothing(
        stub, engine: FakeEngine) -> None:
    engine.facts = Facts(taken_at=1622894582, taken_offset_minutes=120, camera_make="Canon",
                         camera_model="EOS R5", latitude=48.8582, longitude=2.2945, orientation=6,
                         notes=("Model cut",))
    stated = stub.EmbedImages(images(b"x" * 10, b"bad"), timeout=5).results
    facts = stated[0].facts
    assert (facts.taken_at, facts.taken_offset_minutes, facts.camera_make, facts.camera_model) == (
        1622894582, 120, "Canon", "EOS R5")
    assert (facts.latitude, facts.longitude, list(facts.notes)) == (48.8582, 2.2945, ["Model cut"])
    assert not stated[1].HasField("facts")  # an error carries no facts
    engine.facts = Facts(camera_model="EOS R5")
    silent = stub.EmbedImages(images(b"x" * 10), timeout=5).results[0].facts
    assert not silent.HasField("taken_at") and not silent.HasField("taken_offset_minutes")
    assert not silent.HasField("latitude") and not silent.HasField("longitude")
    streamed = next(iter(stub.StreamEmbedImages(iter([images(b"x" * 10)]), timeout=5)))
    assert streamed.results[0].facts.camera_model == "EOS R5"
