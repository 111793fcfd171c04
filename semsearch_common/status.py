"""ServiceError <-> google.rpc.Status with an ErrorInfo detail, for whole calls and for batch items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from semsearch_common.errors import DOMAIN, ServiceError

DETAILS_KEY = "grpc-status-details-bin"


def to_proto(err: ServiceError) -> status_pb2.Status:
    """The error as a google.rpc.Status whose details hold one ErrorInfo (domain "semsearch")."""
    info = error_details_pb2.ErrorInfo(reason=str(err.reason), domain=DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code_pb2.Code.Value(err.code), message=str(err), details=[detail])


def to_grpc(err: ServiceError) -> grpc.Status:
    """The error as a status a servicer can `abort_with_status` with."""
    return rpc_status.to_status(to_proto(err))


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The first ErrorInfo among a status's details."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def reason(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of a status, or "" when it carries none."""
    info = error_info(status)
    return info.reason if info is not None else ""


def of_call(err: grpc.RpcError | Any) -> status_pb2.Status:
    """The google.rpc.Status a failed call (sync or asyncio) carries; code and message only if it has no details."""
    for key, value in _metadata(err):
        if key == DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    code = err.code()
    return status_pb2.Status(code=code.value[0] if code is not None else code_pb2.UNKNOWN, message=err.details() or "")


def call_reason(err: grpc.RpcError | Any) -> str:
    """The ErrorInfo reason of a failed call, or "" when it carries none."""
    return reason(of_call(err))


def _metadata(err: Any) -> Iterable[tuple[str, Any]]:
    try:
        return tuple(err.trailing_metadata() or ())
    except Exception:  # an error made locally (e.g. by a channel that never connected) has none
        return ()
