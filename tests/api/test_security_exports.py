"""Attacks and faults over HTTP: a media_base_url that is a format string, export documents whose
paths moved or were tampered with, stream upload ids that look like paths, images that do not
decode. Real apps (TestClient with the lifespan run), real LanceDB tables, real PNGs, a real
TorchScript embedder."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import torch
from exportdata import build_classification
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

from edgeminer.indexer.embedders import TorchScriptEmbedder
from edgeminer.indexer.store import Store
from edgeminer.service.api.app import create_app
from edgeminer.service.export.runner import exports_dir
from edgeminer.service.settings import Settings

API = "/api/v1"
FORMAT_ATTACKS = ["https://cdn.example/{id:>40000000}", "https://cdn.example/{id.__class__.__mro__}"]


def _wait_export(client: TestClient, dataset: str, export_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"{API}/datasets/{dataset}/exports/{export_id}").json()
        if view["status"] in ("done", "failed", "interrupted", "cancelled"):
            return view
        assert time.monotonic() < deadline, f"export still {view['status']}"
        time.sleep(0.05)


def _export(client: TestClient, dataset: str, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    r = client.post(f"{API}/datasets/{dataset}/exports", json=body)
    assert r.status_code in (200, 202), r.text
    view = _wait_export(client, dataset, r.json()["id"])
    assert view["status"] == "done", view
    dl = client.get(f"{API}/datasets/{dataset}/exports/{view['id']}/download")
    assert dl.status_code == 200 and dl.headers["content-type"] == "application/zip", dl.text
    return view, dl.content


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


# -- 3. media_base_url -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", FORMAT_ATTACKS)
def test_format_string_media_base_url_is_refused(
    api_settings: Settings, api_client: TestClient, tmp_path: Path, url: str
) -> None:
    cls = build_classification(Store(api_settings.data_dir), tmp_path / "media" / "cls", n=3)
    body = {"target": "csv", "ids": cls.ids, "media": "url", "media_base_url": url}
    r = api_client.post(f"{API}/datasets/cls/exports", json=body)
    assert r.status_code == 422, r.text[:2000]
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert "media_base_url" in problem["detail"] and "{id}, {dataset}, {path}, {name}" in problem["detail"]
    assert any(e["field"] == "media_base_url" for e in problem["errors"])
    assert len(r.content) < 4000 and "<class" not in r.text and "object at 0x" not in r.text
    assert api_client.get(f"{API}/datasets/cls/exports").json() == []  # nothing was started
    assert _folder_bytes(exports_dir(api_settings.data_dir)) < 100_000


@pytest.mark.parametrize("url", FORMAT_ATTACKS)
def test_format_string_in_the_servers_media_base_url_is_refused(
    api_settings: Settings, make_client: Callable[..., TestClient], tmp_path: Path, url: str
) -> None:
    cls = build_classification(Store(api_settings.data_dir), tmp_path / "media" / "cls", n=3)
    client = make_client(api_settings, media_base_url=url)
    r = client.post(f"{API}/datasets/cls/exports", json={"target": "csv", "ids": cls.ids, "media": "url"})
    assert r.status_code == 422, r.text[:2000]
    assert "EDGEMINER_MEDIA_BASE_URL" in r.json()["detail"] and "<class" not in r.text
    assert _folder_bytes(exports_dir(api_settings.data_dir)) < 100_000


def test_media_base_url_template_fills_quoted_values(
    api_settings: Settings, api_client: TestClient, tmp_path: Path
) -> None:
    cls = build_classification(Store(api_settings.data_dir), tmp_path / "media" / "cls", n=3)
    body = {
        "target": "label_studio",
        "ids": cls.ids,
        "media": "url",
        "media_base_url": "https://cdn.example/{dataset}/{path}?id={id}&f={name}",
    }
    _, data = _export(api_client, "cls", body)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        tasks = json.loads(zf.read("tasks.json"))
    urls = {t["data"]["edgeminer_id"]: t["data"]["image"] for t in tasks}
    assert urls[cls.ids[0]] == f"https://cdn.example/cls/b/pic00.png?id={cls.ids[0]}&f=pic00.png"
    assert urls[cls.ids[1]].startswith(f"https://cdn.example/cls/a/pic00.png?id={cls.ids[1]}&f=pic00-")


# -- 11. export paths --------------------------------------------------------------------------------


def test_exports_download_after_the_data_dir_moved(api_settings: Settings, tmp_path: Path) -> None:
    cls = build_classification(Store(api_settings.data_dir), tmp_path / "media" / "cls", n=5)
    body = {"target": "coco", "ids": cls.ids, "media": "copy"}
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as client:
        view, before = _export(client, "cls", body)
    old = Path(api_settings.data_dir)
    moved = old.rename(tmp_path / "moved-db")
    assert not old.exists()
    settings = api_settings.model_copy(update={"data_dir": str(moved), "cache_dir": str(tmp_path / "cache2")})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        again = client.get(f"{API}/datasets/cls/exports/{view['id']}").json()
        assert again["status"] == "done" and again["zip"] == f"{view['id']}.zip"
        dl = client.get(f"{API}/datasets/cls/exports/{view['id']}/download")
        assert dl.status_code == 200, dl.text
        assert dl.content == before
        # the same request is still the same, finished export (its zip is found at the new place)
        r = client.post(f"{API}/datasets/cls/exports", json=body)
        assert r.status_code == 200 and r.json()["id"] == view["id"] and r.json()["status"] == "done"
    with zipfile.ZipFile(io.BytesIO(before)) as zf:
        assert len([n for n in zf.namelist() if n.startswith("images/default/")]) == len(cls.ids)


def test_an_old_document_with_absolute_paths_still_downloads(
    api_settings: Settings, api_client: TestClient, tmp_path: Path
) -> None:
    store = Store(api_settings.data_dir)
    cls = build_classification(store, tmp_path / "media" / "cls", n=2)
    view, data = _export(api_client, "cls", {"target": "csv", "ids": cls.ids})
    doc = store.get_doc("cls", "export", view["id"])
    folder = exports_dir(api_settings.data_dir) / "cls"
    doc.update(path=str(folder / view["id"]), zip=str(folder / f"{view['id']}.zip"))  # as written before
    store.put_doc("cls", "export", view["id"], {k: v for k, v in doc.items() if not k.startswith("_")})
    dl = api_client.get(f"{API}/datasets/cls/exports/{view['id']}/download")
    assert dl.status_code == 200 and dl.content == data


def test_a_tampered_document_never_serves_files_outside_the_exports(
    api_settings: Settings, api_client: TestClient, tmp_path: Path
) -> None:
    store = Store(api_settings.data_dir)
    cls = build_classification(store, tmp_path / "media" / "cls", n=2)
    view, _ = _export(api_client, "cls", {"target": "csv", "ids": cls.ids})
    secret = tmp_path / "secret.zip"
    secret.write_bytes(b"PK secret outside the exports folder")
    folder = exports_dir(api_settings.data_dir) / "cls"
    (folder / "planted.zip").symlink_to(secret)
    other = exports_dir(api_settings.data_dir) / "other"
    other.mkdir()
    (other / "exp-other.zip").write_bytes(b"PK another dataset's export")
    doc = store.get_doc("cls", "export", view["id"])
    for value in [
        "/etc/passwd",
        str(secret),
        "../../../../../../etc/passwd",
        "cls/../../secret.zip",
        "cls/planted.zip",
        "other/exp-other.zip",
    ]:
        doc["zip"] = value
        store.put_doc("cls", "export", view["id"], {k: v for k, v in doc.items() if not k.startswith("_")})
        r = api_client.get(f"{API}/datasets/cls/exports/{view['id']}/download")
        assert r.status_code == 404, (value, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert b"secret" not in r.content and b"root:" not in r.content and b"another" not in r.content


# -- 1. stream uploads and 8. image decode errors ------------------------------------------------


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.body(x)
        return e, self.head(e)


@pytest.fixture
def cam(api_settings: Settings, tmp_path: Path) -> str:
    """Dataset ``cam`` in the API's data dir, embedded by a real (tiny) TorchScript model."""
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    meta = {"classes": ["circle", "square", "none"], "image_size": 16}
    torch.jit.script(_Net()).save(str(model), _extra_files={"edgeminer.json": json.dumps(meta)})
    emb = TorchScriptEmbedder(model, device="cpu")
    Store(api_settings.data_dir).create_dataset("cam", dim=emb.dim, embedder=emb.config(), classes=emb.classes or [])
    return "cam"


def _png_b64(seed: int, size: int = 20) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_stream_upload_ids_never_become_paths(
    api_settings: Settings, api_client: TestClient, tmp_path: Path, cam: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ids = [
        "../../../escaped",
        "../../escaped-too",
        "../cam-sibling",
        str(outside / "absolute"),
        str(Path(api_settings.data_dir) / "planted"),
        "a/b/../../c",
        "..",
    ]
    upload_dir = (Path(api_settings.data_dir) / "_stream" / "cam").resolve()
    for n, sample_id in enumerate(ids):
        payload = {"image_base64": _png_b64(n), "id": sample_id, "confidence_below": 1.0}
        r = api_client.post(f"{API}/datasets/cam/stream", json=payload)
        assert r.status_code == 200, r.text
        assert r.json()["sample_id"] == sample_id
        name = hashlib.sha256(sample_id.encode()).hexdigest()[:40] + ".png"
        assert (upload_dir / name).read_bytes() == base64.b64decode(payload["image_base64"])
        # the stored row's image is served back through the media route (its folder is a media root)
        quoted = quote(sample_id, safe="").replace(".", "%2E")  # the client must not normalise the ../
        media = api_client.get(f"{API}/datasets/cam/media/{quoted}", params={"size": "full"})
        assert media.status_code == 200 and media.content == (upload_dir / name).read_bytes()
    pngs = sorted(p for p in tmp_path.rglob("*.png"))
    assert len(pngs) == len(ids) and all(p.parent == upload_dir for p in pngs), pngs
    assert list(outside.iterdir()) == []


def test_undecodable_images_say_what_is_wrong(api_client: TestClient, cam: str) -> None:
    junk = base64.b64encode(b"certainly not an image").decode()
    truncated = base64.b64encode(base64.b64decode(_png_b64(1))[:80]).decode()
    cases = [
        ("/datasets/cam/stream", {"image_base64": junk}, "image_base64", "not an image format Pillow can identify"),
        ("/datasets/cam/stream", {"image_base64": truncated}, "image_base64", "truncated or corrupt PNG data"),
        ("/datasets/cam/mine", {"seeds": {"image_base64": junk}}, "seeds.image_base64", "Pillow can identify"),
    ]
    for path, body, field, reason in cases:
        r = api_client.post(API + path, json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        detail = r.json()["detail"]
        assert detail.startswith(f"{field} is not readable as an image (PNG, JPEG, WebP...): "), detail
        assert reason in detail, detail
        assert "BytesIO" not in r.text and "object at 0x" not in r.text
