"""The Embedder gRPC service, in process on port 0, through a real channel."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from embedder_service.batching import Batcher
from embedder_service.config import EmbedderConfig
from embedder_service.engine import Engine
from embedder_service.model import ClipModel
from embedder_service.models import bundle
from embedder_service.preprocess import PreprocessSpec, decode
from embedder_service.server import SERVICE, create_server
from embedder_service.tests import images
from protos.semsearch.v1 import embedder_pb2, embedder_pb2_grpc
from semsearch_common import channels
from semsearch_common.status import call_reason
from tests.support import exif as written
from tests.support.health import NOT_SERVING, wait_status

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest.fixture(scope="module")
def model(tiny_bundle_dir: Path) -> ClipModel:
    return ClipModel(bundle.load(tiny_bundle_dir), "cpu")


@pytest.fixture(scope="module")
def served(model: ClipModel) -> Iterator[tuple[embedder_pb2_grpc.EmbedderStub, grpc.Channel]]:
    config = EmbedderConfig(port=0, max_images_per_request=64, max_wait_ms=5)
    server = create_server(config, Engine(model, config))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield embedder_pb2_grpc.EmbedderStub(channel), channel
    channel.close()
    server.stop(1)


@pytest.fixture
def stub(served) -> embedder_pb2_grpc.EmbedderStub:
    return served[0]


def embed(stub, datas: list[bytes], thumbnail_size: int = 0) -> list[embedder_pb2.ImageEmbedding]:
    request = embedder_pb2.EmbedImagesRequest(
        images=[embedder_pb2.ImageInput(data=d, key=str(i)) for i, d in enumerate(datas)],
        thumbnail_size=thumbnail_size)
    return list(stub.EmbedImages(request, timeout=30).results)


def vec(result) -> np.ndarray:
    return np.asarray(result.embedding, dtype=np.float32)


def test_images_of_every_format_give_unit_vectors_sizes_and_thumbnails(stub) -> None:
    picture = images.photo(320, 200, seed=1)
    files = {fmt: images.encode(picture, fmt) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")}
    results = embed(stub, list(files.values()), thumbnail_size=64)
    for fmt, result in zip(files, results, strict=True):
        assert not result.HasField("error"), (fmt, result.error)
        v = vec(result)
        assert v.shape == (512,) and abs(np.linalg.norm(v) - 1) < 1e-5
        assert (result.width, result.height) == (320, 200)
        assert result.content_type == f"image/{fmt.lower()}" or fmt == "JPEG"
        thumb = Image.open(io.BytesIO(result.thumbnail))
        assert thumb.format == "JPEG" and max(thumb.size) == 64
    # Lossless formats hold the same pixels, so they must give the same vector.
    png, bmp, tiff = (vec(results[i]) for i in (1, 4, 5))
    assert np.allclose(png, bmp, atol=1e-6) and np.allclose(png, tiff, atol=1e-6)
    assert results[0].content_type == "image/jpeg"


def test_vectors_equal_the_model_on_the_reference_preprocessing(stub, model: ClipModel) -> None:
    data = images.jpeg(500, 375, seed=2)
    served = vec(embed(stub, [data])[0])
    direct = model.embed_pixels(decode(data, PreprocessSpec()).pixels[None])[0]
    assert float(served @ direct) > 0.99999


def test_a_bad_item_fails_alone(stub) -> None:
    good = images.jpeg(seed=3)
    bad = [b"", b"hello, not an image", good[: len(good) // 2], images.pixel_bomb_png()]
    results = embed(stub, [good, *bad, good])
    assert not results[0].HasField("error") and not results[-1].HasField("error")
    for result in results[1:-1]:
        assert result.error.code == INVALID and result.error.message
        assert len(result.embedding) == 0
    assert [r.key for r in results] == [str(i) for i in range(6)]


def test_request_limits_carry_their_reason(stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        embed(stub, [b"x"] * 65)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and call_reason(err.value) == "TOO_LARGE"
    with pytest.raises(grpc.RpcError) as err:
        stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a"] * 1025), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and call_reason(err.value) == "TOO_LARGE"
    with pytest.raises(grpc.RpcError) as err:
        embed(stub, [images.jpeg()], thumbnail_size=100_000)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and call_reason(err.value) == "INVALID_ARGUMENT"
    too_many = embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=b"x")] * 65)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamEmbedImages(iter([too_many]), timeout=10))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and call_reason(err.value) == "TOO_LARGE"


def test_a_full_queue_is_overloaded_and_a_closed_engine_is_shutting_down(model: ClipModel) -> None:
    config = EmbedderConfig(port=0, queue_limit=1)
    engine = Engine(model, config)
    entered, release = threading.Event(), threading.Event()

    def blocked(rows: list) -> list:
        entered.set()
        release.wait(30)
        return [np.zeros(512, np.float32) for _ in rows]

    engine.texts.close()
    engine.texts = Batcher(blocked, max_batch=1, max_wait_s=0, queue_limit=1, name="text")
    server = create_server(config, engine)
    stub = embedder_pb2_grpc.EmbedderStub(chan := channels.channel(f"127.0.0.1:{server.port}"))
    try:
        with pytest.raises(grpc.RpcError) as err:  # more than the whole queue holds: waiting cannot help
            stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a dog", "a cat"]), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and call_reason(err.value) == "TOO_LARGE"
        running = engine.texts.submit([[1]])
        assert entered.wait(10)  # that one is in inference; the next fills the queue
        waiting = engine.texts.submit([[1]])
        with pytest.raises(grpc.RpcError) as err:
            stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a dog"]), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and call_reason(err.value) == "OVERLOADED"
        release.set()
        assert len(running[0].result(10)) == len(waiting[0].result(10)) == 512
        engine.close()
        with pytest.raises(grpc.RpcError) as err:
            stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a dog"]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and call_reason(err.value) == "SHUTTING_DOWN"
    finally:
        release.set()
        chan.close()
        server.stop(0)


def test_concurrent_single_image_calls_match_one_batch(stub) -> None:
    datas = [images.jpeg(seed=10 + i) for i in range(8)]
    batched = [vec(r) for r in embed(stub, datas)]
    singles: list[np.ndarray | None] = [None] * 8

    def one(i: int) -> None:
        singles[i] = vec(embed(stub, [datas[i]])[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(batched, singles, strict=True):
        assert np.allclose(a, b, atol=1e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)  # different images differ


def test_texts_empty_fail_alone_long_ones_truncate_and_batching_is_transparent(stub) -> None:
    texts = ["a photo of a dog", "", "   ", "word " * 200, "a diagram"]
    response = stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=texts), timeout=30)
    r = list(response.results)
    assert r[1].error.code == INVALID and r[2].error.code == INVALID
    assert r[3].truncated and r[3].token_count == 77
    assert not r[0].truncated and r[0].token_count == 7
    for i in (0, 3, 4):
        assert abs(np.linalg.norm(vec(r[i])) - 1) < 1e-5
    alone = stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a photo of a dog"]), timeout=30)
    assert np.allclose(vec(alone.results[0]), vec(r[0]), atol=1e-5)
    assert response.model_id.startswith("random-tiny@")


def test_stream_answers_each_request_by_id(stub) -> None:
    datas = [images.jpeg(seed=20 + i) for i in range(6)]
    requests = [embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=d)],
                                                request_id=f"r{i}") for i, d in enumerate(datas)]
    responses = list(stub.StreamEmbedImages(iter(requests), timeout=60))
    assert [r.request_id for r in responses] == [f"r{i}" for i in range(6)]
    unary = [vec(r) for r in embed(stub, datas)]
    for response, expected in zip(responses, unary, strict=True):
        assert np.allclose(vec(response.results[0]), expected, atol=1e-5)


def test_model_info(stub, model: ClipModel) -> None:
    info = stub.GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=5)
    assert info.dim == 512 and info.image_size == 224 and info.context_length == 77
    assert info.providers == ["CPUExecutionProvider"] and info.precision == embedder_pb2.PRECISION_FP32
    config = EmbedderConfig()  # the fixture's server: defaults but max_images_per_request=64
    assert (info.max_images_per_request, info.max_texts_per_request, info.max_thumbnail_size, info.max_text_chars,
            info.max_message_bytes) == (64, config.max_texts_per_request,
                                        config.thumbnail_max, config.max_text_chars, config.max_receive_mb << 20)
    assert info.model_id == model.bundle.model_id and not info.semantic


def test_deadline_is_honoured(stub) -> None:
    datas = [images.jpeg(1200, 900, seed=i) for i in range(32)]
    request = embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=d) for d in datas])
    with pytest.raises(grpc.RpcError) as err:
        stub.EmbedImages(request, timeout=0.05)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_reflection_and_loading_state(model: ClipModel) -> None:
    config = EmbedderConfig(port=0)
    server = create_server(config)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    status = health_pb2.HealthCheckResponse
    try:
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status == status.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            embedder_pb2_grpc.EmbedderStub(channel).GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and call_reason(err.value) == "MODEL_LOADING"
        server.attach(Engine(model, config))
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status == status.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == status.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert {SERVICE, "grpc.reflection.v1.ServerReflection"} <= names
        v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                   response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        answer = next(v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert SERVICE in {s.name for s in answer.list_services_response.service}
    finally:
        channel.close()
        server.stop(1)


@pytest.mark.timeout(120)
def test_every_rpc_answers_through_a_channel_without_any_timeout(served) -> None:
    channel = served[1]  # a plain channel; no call below passes a timeout
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    data = images.jpeg(seed=40)
    request = embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=data, key="k")], request_id="i")
    unary = stub.EmbedImages(request)
    assert unary.results[0].key == "k" and len(unary.results[0].embedding) == 512
    streamed = list(stub.StreamEmbedImages(iter([request, request])))
    assert [r.request_id for r in streamed] == ["i", "i"]
    assert np.allclose(vec(streamed[1].results[0]), vec(unary.results[0]), atol=1e-5)
    texts = stub.EmbedTexts(embedder_pb2.EmbedTextsRequest(texts=["a dog", ""]))
    assert len(texts.results[0].embedding) == 512 and texts.results[1].error.code == INVALID
    assert stub.GetModelInfo(embedder_pb2.GetModelInfoRequest()).dim == 512
    with pytest.raises(grpc.RpcError) as err:  # errors too come back whole, with their reason
        stub.EmbedImages(embedder_pb2.EmbedImagesRequest(images=[request.images[0]] * 65))
    assert call_reason(err.value) == "TOO_LARGE"


def test_health_is_not_serving_during_the_drain_while_calls_are_still_answered(model: ClipModel) -> None:
    config = EmbedderConfig(port=0)
    server = create_server(config, Engine(model, config))
    chan = channels.channel(f"127.0.0.1:{server.port}")
    stopping = threading.Thread(target=server.stop, args=(1, 2.0))
    try:
        assert channels.is_serving(chan, SERVICE) and channels.is_serving(chan)
        stopping.start()
        wait_status(chan, NOT_SERVING, SERVICE, timeout_s=1.5)  # the drain has begun
        health = health_pb2_grpc.HealthStub(chan)
        for name in (SERVICE, ""):  # an answer, not an error: the server is still up, saying it is leaving
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        info = embedder_pb2_grpc.EmbedderStub(chan).GetModelInfo(embedder_pb2.GetModelInfoRequest(), timeout=5)
        assert info.dim == 512
        stopping.join(10)
        assert not stopping.is_alive()
    finally:
        chan.close()
        if stopping.ident is None:
            server.stop(0)


def test_stream_without_a_deadline_works(stub) -> None:
    request = embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=images.jpeg(seed=30))],
                                              request_id="only")
    responses = list(stub.StreamEmbedImages(iter([request])))
    assert [r.request_id for r in responses] == ["only"] and len(responses[0].results[0].embedding) == 512


def _stream_handlers_running() -> int:
    return sum(any(f.f_code.co_name == "StreamEmbedImages" for f in _stack(frame))
               for frame in sys._current_frames().values())


def _stack(frame) -> Iterator:
    while frame is not None:
        yield frame
        frame = frame.f_back


def test_a_vanished_stream_client_does_not_leave_its_handler_waiting(stub) -> None:
    gate = threading.Event()

    def requests() -> Iterator[embedder_pb2.EmbedImagesRequest]:
        yield embedder_pb2.EmbedImagesRequest(images=[embedder_pb2.ImageInput(data=images.jpeg(seed=31))])
        gate.wait(30)  # the client neither sends more nor closes its side

    call = stub.StreamEmbedImages(requests(), timeout=60)
    next(call)
    deadline = time.monotonic() + 5
    while not _stream_handlers_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stream_handlers_running() == 1  # waiting for the client's next request
    call.cancel()
    gate.set()
    deadline = time.monotonic() + 5
    while _stream_handlers_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stream_handlers_running() == 0


def test_undecodable_request_bytes_are_invalid_argument_not_internal(served) -> None:
    channel = served[1]
    raw = embedder_pb2.EmbedTextsRequest(texts=["MARKER"]).SerializeToString().replace(b"MARKER", b"\xff\xfe\xc0")
    unary = channel.unary_unary("/semsearch.v1.Embedder/EmbedTexts", request_serializer=None,
                                response_deserializer=embedder_pb2.EmbedTextsResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        unary(raw, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid protobuf" in err.value.details()
    bad = embedder_pb2.EmbedImagesRequest(request_id="MARKER").SerializeToString().replace(b"MARKER", b"\xff\xfe\xc0")
    stream = channel.stream_stream("/semsearch.v1.Embedder/StreamEmbedImages", request_serializer=None,
                                   response_deserializer=embedder_pb2.EmbedImagesResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        list(stream(iter([bad]), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_facts_come_back_from_the_same_decode_over_a_real_server(stub) -> None:
    lying = written.block(exif=[written.ascii(written.DATE_TIME_ORIGINAL, "1900:01:01 00:00:00")])
    files = [written.photo(written.full(6), 64, 48), written.photo(lying), written.photo(None, fmt="PNG")]
    results = embed(stub, files)
    stated, lie, silent = (r.facts for r in results)
    assert (results[0].width, results[0].height) == (48, 64)  # orientation 6: upright is portrait
    assert stated.taken_at == written.FULL_TAKEN_AT and stated.taken_offset_minutes == 120
    assert (stated.camera_make, stated.camera_model) == ("Canon", "Canon EOS R5")
    assert abs(stated.latitude - 48.8582) < 1e-6 and abs(stated.longitude - 2.2945) < 1e-6
    assert not results[1].HasField("error") and not lie.HasField("taken_at")
    assert list(lie.notes) == ["DateTimeOriginal 1900:01:01 00:00:00 is before 1970; ignored"]
    assert silent == type(silent)() and results[2].HasField("facts")
