"""/api/duplicates and /images/{id}/display against the real embedder (tiny model) and index (embedded Postgres)."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from embedder_service.tests import images
from tests.support.photos import photo
from tests.support.stack import Stack


def jpeg(image: Image.Image, quality: int, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, exif=exif)
    return buf.getvalue()


def upload(client: httpx.Client, *datas: bytes) -> list[int]:
    files = [("files", (f"p{i}.jpg", d, "image/jpeg")) for i, d in enumerate(datas)]
    r = client.post("/api/images", files=files)
    assert r.status_code == 201, r.text
    return [x["id"] for x in r.json()["results"]]


def test_a_re_encoded_copy_is_found_and_every_image_has_a_display_size(private_stack: Stack) -> None:
    api = private_stack.gateway().client
    picture = photo(2400, 1800, seed=5)
    first, copy, other = upload(api, jpeg(picture, 92, orientation=6), jpeg(picture, 60, orientation=6),
                                images.jpeg(320, 240, seed=7))
    groups, pages, after = [], [], 0
    while True:
        page = api.get("/api/duplicates", params={"max_distance": 0.05, "after": after, "limit": 2}).json()
        groups += [[m["id"] for m in g["members"]] for g in page["groups"]]
        pages.append((page["scanned"], page["total"]))
        if page["next"] is None:
            break
        after = page["next"]
    assert [sorted(g) for g in groups] == [sorted([first, copy])], (first, copy, other, groups)
    assert groups[0][0] == min(first, copy)  # ids follow the content hashes' order within one upload
    assert pages == [(2, 3), (3, 3)]

    shown = api.get(f"/images/{first}/display")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(shown.content)).size == (1200, 1600)  # turned upright, 1600 on the long side
    assert int(shown.headers["content-length"]) < len(api.get(f"/images/{first}").content) / 2
    head = api.head(f"/images/{first}/display")
    assert head.status_code == 200 and head.headers["content-length"] == shown.headers["content-length"]
    assert head.headers["etag"].endswith('-display"')
    small = api.get(f"/images/{other}/display")  # already small: the original itself
    assert small.content == api.get(f"/images/{other}").content
    assert api.get("/api/duplicates", params={"max_distance": 2}).status_code == 400
