"""GET /datasets/{ds}/media/{id}: real PNGs under a media root, thumbnails cached once, object crops,
and every way out of the roots refused (.., absolute paths, encoded slashes, symlinks, URLs)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings

DIM = 4


def add_rows(store: Store, rows: list[dict[str, Any]], *, media_roots: list[str] | None = None) -> None:
    if not store.has_dataset("m"):
        store.create_dataset("m", dim=DIM, embedder={"kind": "precomputed"}, media_roots=media_roots or [])
    full = []
    for r in rows:
        # every row with every key: Arrow infers the columns of a list of dicts from its first row
        base = {"parent_id": None, "bbox": None, "split": "unlabeled", "labeled": False}
        full.append({**base, "embedding": [1.0, 0.0, 0.0, 0.0], **r})
    store.upsert_samples("m", full)


@pytest.fixture
def env(api_settings: Settings, make_client: Callable[..., TestClient], make_png: Callable[..., Path], tmp_path: Path):
    media = Path(api_settings.media_roots[0])
    secret_dir = tmp_path / "secret"
    secret = make_png(secret_dir / "secret.png", color=(0, 0, 255))
    (secret_dir / "passwd").write_text("root:x:0:0\n")
    make_png(media / "a.png", size=(300, 200))
    make_png(media / "sub" / "b.png", size=(40, 30), color=(10, 200, 10))
    (media / "notes.txt").write_text("not an image")
    os.symlink(secret, media / "link.png")  # a real symlink pointing out of the root
    os.symlink(secret_dir, media / "linkdir")
    os.symlink(media / "a.png", media / "inside-link.png")  # stays inside: allowed
    store = Store(api_settings.data_dir)
    rows = [
        {"id": "a", "uri": str(media / "a.png")},
        {"id": "a-file-uri", "uri": "file://" + str(media / "a.png")},
        {"id": "rel", "uri": "sub/b.png"},
        {"id": "obj", "uri": str(media / "a.png"), "parent_id": "a", "bbox": [10, 20, 100, 50]},
        {"id": "obj-no-uri", "uri": None, "parent_id": "a", "bbox": [0, 0, 30, 40]},
        {"id": "dotdot", "uri": str(media / ".." / "secret" / "secret.png")},
        {"id": "dotdot-rel", "uri": "../secret/secret.png"},
        {"id": "absolute-out", "uri": str(secret)},
        {"id": "etc", "uri": "/etc/passwd"},
        {"id": "encoded", "uri": str(media) + "/..%2F..%2Fsecret%2Fsecret.png"},
        {"id": "encoded-file", "uri": "file://" + str(media) + "/..%2fsecret%2fpasswd"},
        {"id": "symlink-out", "uri": str(media / "link.png")},
        {"id": "symlink-dir", "uri": str(media / "linkdir" / "secret.png")},
        {"id": "symlink-in", "uri": str(media / "inside-link.png")},
        {"id": "missing", "uri": str(media / "gone.png")},
        {"id": "text", "uri": str(media / "notes.txt")},
        {"id": "url", "uri": "http://127.0.0.1:9/x.png"},
        {"id": "url-meta", "uri": "http://169.254.169.254/latest/meta-data"},
        {"id": "url-private", "uri": "http://10.1.2.3/x.png"},
        {"id": "s3", "uri": "s3://bucket/x.png"},
        {"id": "nul", "uri": str(media) + "/a.png\x00.txt"},
    ]
    add_rows(store, rows)
    client = make_client(api_settings)
    return client, media, secret, api_settings


def get(client: TestClient, sample_id: str, size: str = "thumb") -> Any:
    return client.get(f"/api/v1/datasets/m/media/{sample_id}", params={"size": size})


def image_of(resp: Any) -> Image.Image:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("image/")
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    return img


def test_thumbnail_is_made_once_and_cached(env: Any) -> None:
    client, media, _, settings = env
    first = get(client, "a")
    img = image_of(first)
    assert max(img.size) == 256 and img.size == (256, 171)  # aspect kept
    assert first.headers["x-cache"] == "miss"
    cached = list(settings.thumbnail_cache.rglob("*.jpg"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    second = get(client, "a")
    assert second.headers["x-cache"] == "hit" and second.content == first.content
    assert list(settings.thumbnail_cache.rglob("*.jpg")) == cached and cached[0].stat().st_mtime_ns == mtime
    assert "/" not in cached[0].name and "a" != cached[0].stem  # named by hash, never by id


def test_full_serves_the_original_file(env: Any) -> None:
    client, media, _, _ = env
    resp = get(client, "a", "full")
    assert resp.content == (media / "a.png").read_bytes()
    assert resp.headers["content-type"] == "image/png"
    assert image_of(get(client, "a-file-uri", "full")).size == (300, 200)
    assert image_of(get(client, "rel", "full")).size == (40, 30)  # relative to the root
    assert image_of(get(client, "symlink-in", "full")).size == (300, 200)


def test_object_rows_are_cropped_from_their_image(env: Any) -> None:
    client, _, _, _ = env
    crop = image_of(get(client, "obj", "full"))
    assert crop.size == (100, 50)
    source = Image.open(env[1] / "a.png").convert("RGB")
    assert crop.convert("RGB").getpixel((5, 5)) == source.getpixel((15, 25))
    assert image_of(get(client, "obj-no-uri", "full")).size == (30, 40)  # the parent's image
    assert image_of(get(client, "obj")).size == (100, 50)  # thumbnails never upscale


@pytest.mark.parametrize(
    "sample_id",
    ["dotdot", "dotdot-rel", "absolute-out", "etc", "symlink-out", "symlink-dir", "nul"],
)
def test_paths_out_of_the_roots_are_refused(env: Any, sample_id: str) -> None:
    client, _, _, _ = env
    for size in ("thumb", "full"):
        resp = get(client, sample_id, size)
        assert resp.status_code == 403, (sample_id, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["type"].endswith("media-outside-roots")
        assert b"root:x" not in resp.content and b"PNG" not in resp.content


@pytest.mark.parametrize("sample_id", ["encoded", "encoded-file"])
def test_encoded_slashes_are_never_decoded(env: Any, sample_id: str) -> None:
    client, _, _, _ = env
    resp = get(client, sample_id, "full")
    assert resp.status_code == 404  # a literal file name that does not exist under the root
    assert "image/" not in resp.headers["content-type"]


def test_request_path_tricks_reach_no_file(env: Any) -> None:
    client, _, secret, _ = env
    for path in [
        "..%2F..%2Fsecret%2Fsecret.png",
        "%2e%2e/%2e%2e/etc/passwd",
        str(secret).lstrip("/"),
        "a/../../secret.png",
    ]:
        resp = client.get(f"/api/v1/datasets/m/media/{path}", params={"size": "full"})
        assert resp.status_code == 404, path
        assert resp.headers["content-type"] == "application/problem+json"


def test_urls_and_other_schemes(env: Any, make_client: Callable[..., TestClient]) -> None:
    client, _, _, settings = env
    resp = get(client, "url")
    assert resp.status_code == 403 and "allow-url-fetch" in resp.json()["detail"]
    fetching = make_client(settings, allow_url_fetch=True)
    for sample_id in ("url", "url-meta", "url-private"):
        resp = get(fetching, sample_id)
        assert resp.status_code == 403, sample_id
        assert "private, loopback or link-local" in resp.json()["detail"]
    assert get(client, "s3").status_code == 422


def test_missing_files_rows_and_non_images(env: Any) -> None:
    client, _, _, _ = env
    assert get(client, "missing").status_code == 404
    assert get(client, "missing").json()["type"].endswith("media-not-found")
    resp = get(client, "text", "full")
    assert resp.status_code == 422 and b"not an image" in resp.content
    assert get(client, "no-such-row").json()["type"].endswith("sample-not-found")
    assert client.get("/api/v1/datasets/nope/media/a").status_code == 404
    assert get(client, "a", "huge").status_code == 422


def test_dataset_media_roots_count_too(
    api_settings: Settings, make_client: Callable[..., TestClient], make_png: Callable[..., Path], tmp_path: Path
) -> None:
    other = tmp_path / "dataset-images"
    png = make_png(other / "x.png", size=(20, 10))
    store = Store(api_settings.data_dir)
    add_rows(store, [{"id": "x", "uri": str(png)}], media_roots=[str(other)])
    client = make_client(api_settings)
    assert image_of(get(client, "x", "full")).size == (20, 10)
    no_roots = make_client(api_settings, media_roots=[])
    assert image_of(get(no_roots, "x", "full")).size == (20, 10)  # the dataset's own root suffices


@pytest.mark.parametrize(
    "url,ok",
    [
        ("http://93.184.216.34/x.png", True),
        ("https://[2606:4700:4700::1111]/x.png", True),
        ("http://127.0.0.1/x.png", False),
        ("http://0.0.0.0/x.png", False),
        ("http://[::1]/x.png", False),
        ("http://[::ffff:127.0.0.1]/x.png", False),
        ("http://192.168.1.10/x.png", False),
        ("http://172.16.0.1/x.png", False),
        ("http://100.64.0.1/x.png", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://[fe80::1]/x.png", False),
        ("http://224.0.0.1/x.png", False),
        ("http://localhost/x.png", False),
        ("ftp://93.184.216.34/x.png", False),
        ("http:///x.png", False),
    ],
)
def test_only_public_addresses_are_fetched(url: str, ok: bool) -> None:
    from edgeminer.service.errors import MediaOutsideRoots
    from edgeminer.service.media import check_public_url

    if ok:
        check_public_url(url)  # IP literals: no DNS needed
    else:
        with pytest.raises(MediaOutsideRoots):
            check_public_url(url)


def test_a_changed_file_gets_a_new_thumbnail(env: Any, make_png: Callable[..., Path]) -> None:
    client, media, _, settings = env
    first = get(client, "rel")
    assert first.headers["x-cache"] == "miss" and get(client, "rel").headers["x-cache"] == "hit"
    make_png(media / "sub" / "b.png", size=(80, 20), color=(1, 2, 3))
    os.utime(media / "sub" / "b.png", ns=(1, 10**18))
    changed = get(client, "rel")
    assert changed.headers["x-cache"] == "miss" and image_of(changed).size == (80, 20)


def test_fetches_go_to_the_checked_address(make_png: Callable[..., Path], tmp_path: Path) -> None:
    """The URL is rewritten to the address that passed the check; the server still sees its host name."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    from edgeminer.service.media import pinned_request

    png = make_png(tmp_path / "remote.png", size=(12, 9)).read_bytes()
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        url, headers, extensions = pinned_request(f"http://images.example.test:{port}/a/b.png?x=1", "127.0.0.1")
        assert url == f"http://127.0.0.1:{port}/a/b.png?x=1" and extensions == {"sni_hostname": "images.example.test"}
        with httpx.Client(trust_env=False) as client:
            resp = client.get(url, headers=headers, extensions=extensions)
        assert resp.content == png and hosts == [f"images.example.test:{port}"]
        assert pinned_request("https://h.example/x", "2001:db8::1")[0] == "https://[2001:db8::1]/x"
    finally:
        server.shutdown()
        server.server_close()
