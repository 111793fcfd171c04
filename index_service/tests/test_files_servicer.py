"""The folder-sync RPCs through a real channel over the fake store (no Postgres): translation and checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from index_service.config import Config
from index_service.server import create_server
from index_service.tests.fake_store import FakeDeps, unit_vector
from protos.semsearch.v1 import index_pb2, index_pb2_grpc
from semsearch_common.channels import channel
from tests.support.index import item


@pytest.fixture
def deps() -> FakeDeps:
    return FakeDeps()


@pytest.fixture
def stub(tmp_path: Path, deps: FakeDeps) -> Iterator[index_pb2_grpc.IndexStub]:
    server = create_server(Config(host="127.0.0.1", port=0, dsn="", data_dir=tmp_path, max_batch=4), deps)
    server.set_serving(True)
    with channel(f"127.0.0.1:{server.port}") as chan:
        yield index_pb2_grpc.IndexStub(chan)
    server.stop(0)


def test_a_synced_upsert_is_listed_linked_and_removed(stub: index_pb2_grpc.IndexStub, deps: FakeDeps) -> None:
    it = item(unit_vector(1), "a", source="album")
    it.file_name, it.record_file, it.file_mtime_ns = "a.jpg", True, 123
    (result,) = stub.Upsert(index_pb2.UpsertRequest(items=[it]), timeout=5).results
    link = index_pb2.LinkFilesRequest(source="album", files=[index_pb2.FileLink(path="b/a.jpg", sha256=it.sha256)])
    assert [r.image_id for r in stub.LinkFiles(link, timeout=5).results] == [result.id]
    listed = stub.ListFiles(index_pb2.ListFilesRequest(source="album", limit=40), timeout=5).files
    assert [(f.path, f.image_id, f.mtime_ns, f.sha256) for f in listed] == [
        ("a.jpg", result.id, 123, it.sha256), ("b/a.jpg", result.id, 0, it.sha256)]
    reply = stub.RemoveFiles(index_pb2.RemoveFilesRequest(source="album", paths=["a.jpg", "b/a.jpg"]), timeout=5)
    assert (reply.removed, list(reply.deleted_ids)) == (2, [result.id]) and not deps.repo.rows
    assert deps.repo.timeouts["remove_files"] is not None  # the caller's deadline reaches the store


def test_limits_of_the_sync_rpcs(stub: index_pb2_grpc.IndexStub) -> None:
    paths = [f"p{i}.jpg" for i in range(41)]  # max_ids_per_request is 10 x max_batch = 40
    for call in (lambda: stub.RemoveFiles(index_pb2.RemoveFilesRequest(source="s", paths=paths), timeout=5),
                 lambda: stub.ListFiles(index_pb2.ListFilesRequest(source="s", limit=41), timeout=5)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:
        stub.RemoveFiles(index_pb2.RemoveFilesRequest(source="s", paths=["../x"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
