"""Folder-sync records on the real database: paging by path, links, removals, what a sync may delete."""

from __future__ import annotations

import hashlib

import grpc
import numpy as np
import pytest

from protos.semsearch.v1 import index_pb2
from tests.support.index import Running, item, unit


def synced(key: str, rng: np.random.Generator, path: str, mtime: int = 7) -> index_pb2.UpsertItem:
    """A sync's upsert item: records `path` under source 'album'."""
    it = item(unit(rng), key, source="album")
    it.file_name, it.record_file, it.file_mtime_ns = path, True, mtime
    return it


def listed(index: Running, limit: int = 100, source: str = "album") -> list[index_pb2.FileRecord]:
    out: list[index_pb2.FileRecord] = []
    after = ""
    while True:
        page = index.stub.ListFiles(index_pb2.ListFilesRequest(source=source, after_path=after, limit=limit),
                                    timeout=10).files
        out += page
        if len(page) < limit:
            return out
        after = page[-1].path


def link(index: Running, path: str, sha: str, source: str = "album") -> int:
    reply = index.stub.LinkFiles(index_pb2.LinkFilesRequest(source=source, files=[
        index_pb2.FileLink(path=path, sha256=sha, size_bytes=3, mtime_ns=9)]), timeout=10)
    return reply.results[0].image_id


def remove(index: Running, *paths: str) -> index_pb2.RemoveFilesResponse:
    return index.stub.RemoveFiles(index_pb2.RemoveFilesRequest(source="album", paths=paths), timeout=10)


def test_records_page_by_byte_order_and_removals_delete_only_what_a_sync_stored(index: Running) -> None:
    rng = np.random.default_rng(3)
    a, b = synced("a", rng, "x/é.jpg"), synced("b", rng, "B.jpg")
    ids = [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=[a, b]), timeout=10).results]
    uploaded = item(unit(rng), "up", source="phone")  # an upload: no file record, never a sync's to delete
    up_id = index.stub.Upsert(index_pb2.UpsertRequest(items=[uploaded]), timeout=10).results[0].id
    assert link(index, "copy/a.jpg", a.sha256) == ids[0]
    assert link(index, "up.jpg", uploaded.sha256) == up_id
    assert link(index, "new.jpg", hashlib.sha256(b"never stored").hexdigest()) == 0
    records = listed(index, limit=1)
    assert [r.path for r in records] == ["B.jpg", "copy/a.jpg", "up.jpg", "x/é.jpg"]  # byte order, paged
    assert [(r.image_id, r.sha256, r.size_bytes) for r in records][3] == (ids[0], a.sha256, len(a.original))
    assert records[3].mtime_ns == 7
    assert listed(index, source="other") == []

    gone = remove(index, "x/é.jpg", "up.jpg", "no/such.jpg")
    assert (gone.removed, list(gone.deleted_ids)) == (2, [])  # a.jpg still shows image a; the upload stays
    (meta,) = index.stub.Get(index_pb2.GetRequest(ids=[ids[0]]), timeout=10).images
    assert meta.file_name == "copy/a.jpg"  # the row names a file that still exists
    media = index.deps.media
    assert media.path_for(a.sha256).exists()
    gone = remove(index, "copy/a.jpg", "B.jpg")
    assert (gone.removed, sorted(gone.deleted_ids)) == (2, sorted(ids))
    assert not media.path_for(a.sha256).exists() and not media.path_for(b.sha256).exists()
    assert [m.id for m in index.stub.Get(index_pb2.GetRequest(ids=[*ids, up_id]), timeout=10).images] == [up_id]
    assert listed(index) == []
    again = remove(index, "copy/a.jpg")
    assert (again.removed, list(again.deleted_ids)) == (0, [])


def test_a_changed_file_moves_its_path_and_the_orphan_goes_at_the_next_removal(index: Running) -> None:
    rng = np.random.default_rng(4)
    old = synced("old", rng, "p.jpg")
    old_id = index.stub.Upsert(index_pb2.UpsertRequest(items=[old]), timeout=10).results[0].id
    new = synced("new", rng, "p.jpg", mtime=8)  # the same path, new bytes
    new_id = index.stub.Upsert(index_pb2.UpsertRequest(items=[new]), timeout=10).results[0].id
    assert [(r.path, r.image_id) for r in listed(index)] == [("p.jpg", new_id)]
    # A killed sync leaves the old image without a file: any later RemoveFiles of the source deletes it.
    assert list(remove(index).deleted_ids) == [old_id]
    # Deleting an image by id forgets its files: the next sync sees the file as new.
    index.stub.Delete(index_pb2.DeleteRequest(ids=[new_id]), timeout=10)
    assert listed(index) == []


def test_bad_sync_input_is_refused(index: Running) -> None:
    rng = np.random.default_rng(5)
    sha = hashlib.sha256(b"x").hexdigest()
    for path in ("", "/abs.jpg", "../up.jpg", "a//b.jpg", "a/./b.jpg", "nul\x00.jpg"):
        with pytest.raises(grpc.RpcError) as err:
            link(index, path, sha)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
    bad_requests = [
        lambda: index.stub.ListFiles(index_pb2.ListFilesRequest(source="", limit=10), timeout=5),
        lambda: index.stub.ListFiles(index_pb2.ListFilesRequest(source="album"), timeout=5),
        lambda: index.stub.LinkFiles(index_pb2.LinkFilesRequest(source="album"), timeout=5),
        lambda: index.stub.LinkFiles(index_pb2.LinkFilesRequest(source="album", files=[
            index_pb2.FileLink(path="a.jpg", sha256="ABC")]), timeout=5),
        lambda: index.stub.LinkFiles(index_pb2.LinkFilesRequest(source="album", files=[
            index_pb2.FileLink(path="a.jpg", sha256=sha), index_pb2.FileLink(path="a.jpg", sha256=sha)]), timeout=5),
        lambda: index.stub.RemoveFiles(index_pb2.RemoveFilesRequest(source="", paths=["a.jpg"]), timeout=5),
    ]
    for call in bad_requests:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    too_many = index_pb2.ListFilesRequest(source="album", limit=index.config.max_batch * 10 + 1)
    with pytest.raises(grpc.RpcError) as err:
        index.stub.ListFiles(too_many, timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    unnamed = synced("u", rng, "../escape.jpg")
    (result,) = index.stub.Upsert(index_pb2.UpsertRequest(items=[unnamed]), timeout=10).results
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and result.id == 0


def test_a_row_loaded_by_dir_from_the_same_file_is_taken_over_by_the_sync(index: Running) -> None:
    rng = np.random.default_rng(6)
    by_dir = item(unit(rng), "t", source="album")  # `loader dir` stored it: file_name is the relative path
    by_dir.file_name = "sub/t.jpg"
    other = item(unit(rng), "o", source="album")  # same source, another path: not the sync's
    ids = [r.id for r in index.stub.Upsert(index_pb2.UpsertRequest(items=[by_dir, other]), timeout=10).results]
    assert link(index, "sub/t.jpg", by_dir.sha256) == ids[0]
    assert link(index, "moved/o.jpg", other.sha256) == ids[1]
    gone = remove(index, "sub/t.jpg", "moved/o.jpg")
    assert (gone.removed, list(gone.deleted_ids)) == (2, [ids[0]])
