"""Logging formats, the throttle, file sniffing, retries and the rich-status helpers."""

from __future__ import annotations

import io
import json
import logging
import threading

import grpc
import pytest

from semsearch_common import channels, errors, logs, sniff, status


def test_json_lines_carry_level_logger_message_and_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    logs.setup("INFO", "json")
    try:
        logging.getLogger("svc.part").debug("hidden")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("svc.part").exception("failed %d", 3)
    finally:
        logs.setup("WARNING", "text")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR" and entry["logger"] == "svc.part" and entry["message"] == "failed 3"
    assert "ValueError: boom" in entry["exception"] and entry["time"].endswith("Z")


def test_setup_replaces_its_own_handler_and_keeps_others(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    try:
        logs.setup("INFO", "text")
        logs.setup("INFO", "text")
        logging.getLogger("svc").warning("once")
    finally:
        logs.setup("WARNING", "text")
    assert out.getvalue().count("once") == 1 and "once" in caplog.text


def test_throttled_logs_one_line_per_cause_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    throttle = logs.Throttled(logging.getLogger("svc"), interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="svc"):
        for _ in range(5):
            throttle.log(logging.WARNING, "db", "database down")
        throttle.log(logging.WARNING, "embedder", "embedder down")
    assert [r.getMessage() for r in caplog.records] == ["database down", "embedder down"]
    throttle.interval_s = 0
    with caplog.at_level(logging.WARNING, logger="svc"):
        throttle.log(logging.WARNING, "db", "database down")
    assert caplog.records[-1].getMessage() == "database down (4 more like it in the last 0 s)"


@pytest.mark.parametrize(("head", "mime"), [
    (b"\xff\xd8\xff\xe0", "image/jpeg"), (b"\x89PNG\r\n\x1a\n....", "image/png"), (b"GIF89a", "image/gif"),
    (b"BM....", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"RIFF\x00\x00\x00\x00WAVE", None),
    (b"%PDF-1.7", None), (b"", None),
])
def test_image_type(head: bytes, mime: str | None) -> None:
    assert sniff.image_type(head) == mime
    assert mime is None or mime in sniff.IMAGE_TYPES


def test_other_kind_names_common_mistakes() -> None:
    assert sniff.other_kind(b"%PDF-1.4") == "a PDF document"
    assert sniff.other_kind(b"\xff\xd8\xff") is None


class FakeError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, metadata: tuple = ()) -> None:
        self._code, self._metadata = code, metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "away"

    def trailing_metadata(self) -> tuple:
        return self._metadata


def test_retry_repeats_retryable_codes_and_raises_the_rest() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise FakeError(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert channels.retry(flaky, "flaky", channels.Backoff(5, first_s=0.01)) == "ok" and len(attempts) == 3

    def wrong() -> str:
        raise FakeError(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(FakeError):
        channels.retry(wrong, "wrong", channels.Backoff(5, first_s=0.01))


def test_backoff_gives_up_after_its_limit_and_on_stop() -> None:
    def down() -> str:
        raise FakeError(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(channels.GaveUp, match="gave up"):
        channels.retry(down, "down", channels.Backoff(0.05, first_s=0.01))
    stop = threading.Event()
    stop.set()
    with pytest.raises(channels.GaveUp, match="stopped"):
        channels.retry(down, "down", channels.Backoff(60, stop=stop))


def test_rich_status_round_trips_through_trailing_metadata() -> None:
    err = errors.ResourceExhausted("store full", reason=errors.Reason.MEDIA_STORE_FULL)
    sent = status.to_grpc(err)
    received = FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, tuple(sent.trailing_metadata))
    assert status.call_reason(received) == "MEDIA_STORE_FULL"
    assert status.of_call(received).message == "store full"
    plain = FakeError(grpc.StatusCode.UNAVAILABLE)
    assert status.call_reason(plain) == "" and status.of_call(plain).code == grpc.StatusCode.UNAVAILABLE.value[0]
    item = status.to_proto(errors.InvalidArgument("bad file"))
    assert status.reason(item) == "INVALID_ARGUMENT" and item.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_reasons_are_the_contracts_error_reason_enum() -> None:
    from protos.semsearch.v1 import common_pb2

    in_contract = {name for name in common_pb2.ErrorReason.keys() if name != "ERROR_REASON_UNSPECIFIED"}
    assert in_contract == {r.value for r in errors.Reason}
