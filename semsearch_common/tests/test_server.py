"""The shared server through a real channel: port refusal, deadlines, rich errors, guard, health, reflection."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from semsearch_common import channels, errors, interceptor, status
from semsearch_common.server import REFLECTION_V1, PortInUse, ServerSettings, create_server
from semsearch_common.server import options as server_options

SERVICE = "test.Echo"
Text = wrappers_pb2.StringValue


class Echo:
    """Behaviours for each call kind; each records what the servicer saw."""

    def __init__(self) -> None:
        self.remaining: float | None = None
        self.started = threading.Event()
        self.release = threading.Event()

    def say(self, request: Text, context: grpc.ServicerContext) -> Text:
        self.remaining = context.time_remaining()
        if request.value == "invalid":
            raise errors.InvalidArgument("no good", metadata={"field": "value"})
        if request.value == "mismatch":
            raise errors.FailedPrecondition("other model", reason=errors.Reason.DIMENSION_MISMATCH)
        if request.value == "bug":
            raise KeyError("oops")
        if request.value == "abort":
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "servicer's own")
        if request.value == "slow":
            self.started.set()
            self.release.wait(10)
        return Text(value=request.value.upper())

    def count(self, requests: Iterator[Text], context: grpc.ServicerContext) -> Iterator[Text]:
        for request in requests:
            if request.value == "bad":
                raise errors.ResourceExhausted("too much", reason=errors.Reason.OVERLOADED)
            yield Text(value=request.value)


def handlers(echo: Echo) -> grpc.GenericRpcHandler:
    ser, de = Text.SerializeToString, Text.FromString
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Say": grpc.unary_unary_rpc_method_handler(echo.say, request_deserializer=de, response_serializer=ser),
        "Count": grpc.stream_stream_rpc_method_handler(echo.count, request_deserializer=de, response_serializer=ser),
    })


@pytest.fixture()
def served() -> Iterator[tuple[Echo, object, grpc.Channel]]:
    echo = Echo()
    settings = ServerSettings(host="127.0.0.1", port=0, workers=4, default_deadline_s=7.0, metrics_prefix="echo")
    server = create_server(settings, [SERVICE], lambda s: s.add_generic_rpc_handlers((handlers(echo),)))
    chan = channels.channel(f"127.0.0.1:{server.port}")
    yield echo, server, chan
    echo.release.set()
    chan.close()
    server.stop(0)


def say(chan: grpc.Channel, value: bytes | str, timeout: float | None = None) -> Text:
    data = value if isinstance(value, bytes) else Text(value=value).SerializeToString()
    call = chan.unary_unary(f"/{SERVICE}/Say", request_serializer=lambda b: b, response_deserializer=Text.FromString)
    return call(data, timeout=timeout)


def test_second_server_on_a_taken_port_is_refused(served: tuple) -> None:
    _, server, _ = served
    with pytest.raises(PortInUse, match=str(server.port)):
        create_server(ServerSettings(host="127.0.0.1", port=server.port), [SERVICE], lambda s: None)


def test_no_client_deadline_gets_the_default_and_a_client_deadline_is_kept(served: tuple) -> None:
    echo, _, chan = served
    assert say(chan, "hi").value == "HI"
    assert echo.remaining is not None and 6.0 < echo.remaining <= 7.0
    say(chan, "hi", timeout=2.0)
    assert echo.remaining is not None and echo.remaining <= 2.1  # the deadline travels with a little skew


def test_service_errors_carry_code_and_reason(served: tuple) -> None:
    _, _, chan = served
    with pytest.raises(grpc.RpcError) as caught:
        say(chan, "invalid")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rich = status.of_call(caught.value)
    assert rich.message == "no good"
    info = status.error_info(rich)
    assert info is not None and info.reason == "INVALID_ARGUMENT" and info.domain == "semsearch"
    assert dict(info.metadata) == {"field": "value"}
    with pytest.raises(grpc.RpcError) as caught:
        say(chan, "mismatch")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert status.call_reason(caught.value) == "DIMENSION_MISMATCH"


def test_a_bug_is_internal_and_a_servicer_abort_is_kept(served: tuple) -> None:
    _, _, chan = served
    with pytest.raises(grpc.RpcError) as caught:
        say(chan, "bug")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "oops" not in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        say(chan, "abort")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.details() == "servicer's own"
    requests, _ = interceptor.rpc_metrics("echo")
    assert requests.labels("Say", "INTERNAL")._value.get() >= 1
    assert requests.labels("Say", "ALREADY_EXISTS")._value.get() >= 1


def test_undecodable_bytes_are_invalid_argument_unary_and_streamed(served: tuple) -> None:
    _, _, chan = served
    bad = b"\x0a\x02\xff\xfe"  # field 1 (string) holding invalid UTF-8
    with pytest.raises(grpc.RpcError) as caught:
        say(chan, bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stream = chan.stream_stream(f"/{SERVICE}/Count", request_serializer=lambda b: b,
                                response_deserializer=Text.FromString)
    with pytest.raises(grpc.RpcError) as caught:
        list(stream(iter([Text(value="a").SerializeToString(), bad]), timeout=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_streamed_errors_carry_their_reason(served: tuple) -> None:
    _, _, chan = served
    stream = chan.stream_stream(f"/{SERVICE}/Count", request_serializer=Text.SerializeToString,
                                response_deserializer=Text.FromString)
    got: list[str] = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stream(iter([Text(value="a"), Text(value="bad")])):
            got.append(reply.value)
    assert got == ["a"]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.call_reason(caught.value) == "OVERLOADED"


def test_health_is_not_serving_until_ready_and_again_while_stopping(served: tuple) -> None:
    echo, server, chan = served
    assert not channels.is_serving(chan) and not channels.is_serving(chan, SERVICE)
    server.set_serving(True)
    assert channels.is_serving(chan) and channels.is_serving(chan, SERVICE)
    slow = threading.Thread(target=say, args=(chan, "slow"), daemon=True)
    slow.start()
    assert echo.started.wait(5)
    stopping = threading.Thread(target=server.stop, args=(10, 2.0), daemon=True)
    stopping.start()
    probe = health_pb2_grpc.HealthStub(chan)
    reply = probe.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    server.set_serving(True)  # ignored once the graceful shutdown began
    assert probe.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.NOT_SERVING
    echo.release.set()
    stopping.join(10)
    slow.join(10)


@pytest.mark.parametrize("name", [REFLECTION_V1, "grpc.reflection.v1alpha.ServerReflection"])
def test_reflection_lists_the_services_in_both_versions(served: tuple, name: str) -> None:
    _, _, chan = served
    info = chan.stream_stream(f"/{name}/ServerReflectionInfo",
                              request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                              response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    replies = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", REFLECTION_V1} <= names


def test_calls_under_way_outlive_their_connections_age() -> None:
    # An aged connection is closed once its calls end or the grace runs out: a minute cut off a BuildIndex of
    # 300,000 rows (bench.index's growth curve), so the grace must outlast the longest unbounded call by far.
    opts = dict(server_options(64 << 20))
    assert opts["grpc.max_connection_age_ms"] == 300_000
    assert opts["grpc.max_connection_age_grace_ms"] >= 3 * 3600 * 1000
