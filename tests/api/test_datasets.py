"""Datasets: list / create / detail / delete, API-key rules on a live server, and an ingest job from a
real manifest of real PNGs (one bad row recorded as an error row while the rest lands).

Ingest requests name server paths, which must lie under ``settings.ingest_roots``: the ingest tests run
on a client whose ingest root is ``tmp_path/src`` (the rules themselves: test_ingest_roots.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import wait_job

from edgeminer.service.settings import Settings

NEW = {"name": "cars", "dim": 8, "classes": ["car", "truck"], "metadata_fields": {"weather": "string"}}


def test_create_list_detail_delete(api_client: TestClient) -> None:
    assert api_client.get("/api/v1/datasets").json() == []
    resp = api_client.post("/api/v1/datasets", json=NEW)
    assert resp.status_code == 201
    body = resp.json()
    assert body["name"] == "cars" and body["dim"] == 8 and body["classes"] == ["car", "truck"]
    assert body["embedder"] == {"kind": "precomputed", "dim": 8}
    assert body["counts"]["total"] == 0 and body["counts"]["by_split"] == {}
    assert body["fields"]["weather"] == "string" and body["fields"]["confidence"] == "float"
    assert body["version"] >= 1 and body["versions"]
    listed = api_client.get("/api/v1/datasets").json()
    assert [d["name"] for d in listed] == ["cars"] and listed[0]["rows"] == 0
    assert api_client.get("/api/v1/datasets/cars").json()["name"] == "cars"

    dup = api_client.post("/api/v1/datasets", json=NEW)
    assert dup.status_code == 409 and dup.json()["type"].endswith("dataset-exists")
    missing = api_client.get("/api/v1/datasets/trucks")
    assert missing.status_code == 404
    assert missing.json()["known_datasets"] == ["cars"] and "cars" in missing.json()["detail"]

    assert api_client.delete("/api/v1/datasets/cars").status_code == 204
    assert api_client.get("/api/v1/datasets/cars").status_code == 404
    assert api_client.delete("/api/v1/datasets/cars").status_code == 404


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "bad__name", "dim": 4}, "name"),
        ({"name": "-x", "dim": 4}, "name"),
        ({"name": "ok", "dim": 0}, "dim"),
        ({"name": "ok", "dim": 4, "task": "segmentation"}, "task"),
        ({"name": "ok", "dim": 4, "metadata_fields": {"x": "complex"}}, "metadata_fields"),
        ({"name": "ok", "dim": 4, "metadata_fields": {"1bad": "string"}}, None),
        ({"name": "ok", "dim": 4, "colour": "red"}, "colour"),
    ],
)
def test_create_rejects_bad_bodies(api_client: TestClient, body: dict[str, Any], field: str | None) -> None:
    resp = api_client.post("/api/v1/datasets", json=body)
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert resp.headers["content-type"] == "application/problem+json"
    assert problem["status"] == 422 and problem["detail"]
    if field:
        assert field in problem["detail"]
    assert api_client.get("/api/v1/datasets").json() == []


def test_api_key_on_a_live_server(live_server: Callable[..., str], api_settings: Settings) -> None:
    base = live_server(api_settings, api_key="s3cret")
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/api/v1/health").json()["auth"] == "writes"
        assert http.get("/api/v1/datasets").status_code == 200  # reads are open
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cre"}, {"X-API-Key": "s3cret2"}):
            resp = http.post("/api/v1/datasets", json=NEW, headers=headers)
            assert resp.status_code == 401, headers
            assert resp.headers["content-type"] == "application/problem+json"
            assert "X-API-Key" in resp.json()["detail"]
        assert http.get("/api/v1/datasets").json() == []  # nothing was written
        ok = http.post("/api/v1/datasets", json=NEW, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 201
        assert http.delete("/api/v1/datasets/cars").status_code == 401
        assert http.get("/api/v1/datasets/cars").status_code == 200


def test_cross_site_writes_are_refused(live_server: Callable[..., str], api_settings: Settings) -> None:
    base = live_server(api_settings, cors_origins=["https://app.example"])
    host = base.removeprefix("http://")
    with httpx.Client(base_url=base, timeout=30) as http:
        evil = http.post("/api/v1/datasets", json=NEW, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "cross-site" in evil.json()["detail"]
        assert http.post("/api/v1/datasets", json=NEW, headers={"Origin": "null"}).status_code == 403
        assert http.get("/api/v1/datasets", headers={"Origin": "https://evil.example"}).json() == []
        same = http.post("/api/v1/datasets", json=NEW, headers={"Origin": f"http://{host}"})
        assert same.status_code == 201  # the dashboard served by this server
        allowed = http.post("/api/v1/datasets", json={**NEW, "name": "vans"}, headers={"Origin": "https://app.example"})
        assert allowed.status_code == 201
        assert http.post("/api/v1/datasets", json={**NEW, "name": "bikes"}).status_code == 201  # no Origin: curl


def test_api_key_for_reads(make_client: Callable[..., TestClient], api_settings: Settings) -> None:
    client = make_client(api_settings, api_key="k", api_key_for_reads=True)
    assert client.get("/api/v1/datasets").status_code == 401
    assert client.get("/api/v1/datasets", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/api/v1/datasets", headers={"X-API-Key": "k"}).status_code == 200
    assert client.get("/api/v1/health").json()["auth"] == "reads_and_writes"  # health stays open


@pytest.fixture
def ingest_client(make_client: Callable[..., TestClient], api_settings: Settings, tmp_path: Path) -> TestClient:
    """A client whose ingest root is tmp_path/src, where the tests write their sources."""
    (tmp_path / "src").mkdir(exist_ok=True)
    return make_client(api_settings, ingest_roots=[str(tmp_path / "src")])


def write_manifest(folder: Path, make_png: Callable[..., Path], n: int = 12) -> Path:
    rows = []
    for i in range(n):
        png = make_png(folder / "images" / f"img{i}.png", size=(32, 32), color=(i * 20, 50, 100))
        vec = [0.0] * 8
        vec[i % 8] = 1.0
        row: dict[str, Any] = {
            "id": f"img{i}",
            "uri": str(png),
            "embedding": vec,
            "weather": "rain" if i % 3 == 0 else "sun",
        }
        if i % 2 == 0:
            row.update(label="car" if i % 4 == 0 else "truck", split="val", probs=[0.7, 0.3])
        else:
            row.update(split="unlabeled", probs=[0.4, 0.6])
        rows.append(row)
    # a row-level problem (3 probabilities for 2 classes): stored as an error row, the rest lands
    rows.append(
        {
            "id": "bad",
            "uri": str(folder / "images" / "img0.png"),
            "embedding": [1.0] + [0.0] * 7,
            "split": "unlabeled",
            "probs": [0.2, 0.3, 0.5],
            "weather": "sun",
        }
    )
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_ingest_job_from_a_manifest(ingest_client: TestClient, make_png: Callable[..., Path], tmp_path: Path) -> None:
    api_client = ingest_client
    manifest = write_manifest(tmp_path / "src", make_png)
    body = {"source": str(manifest), "classes": ["car", "truck"], "embedder": {"kind": "precomputed"}}
    resp = api_client.post("/api/v1/datasets/cars/ingest", json=body)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["status"] in ("queued", "running", "succeeded") and job["kind"] == "ingest"
    done = wait_job(api_client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["counts"]["total"] == 13 and done["counts"]["ok"] == 12 and done["counts"]["errors"] == 1
    assert done["error_count"] == 1 and done["errors"][0]["item"] == "bad"
    assert done["version_written"] > done["version_read"]
    assert done["progress"]["done"] == 13

    detail = api_client.get("/api/v1/datasets/cars").json()
    assert detail["counts"]["total"] == 13 and detail["counts"]["errors"] == 1
    assert detail["counts"]["by_split"] == {"unlabeled": 7, "val": 6}
    own = {k: v for k, v in detail["metadata_fields"].items() if not k.startswith("img_")}
    assert detail["counts"]["labeled"] == 6 and own == {"weather": "string"}
    assert detail["metadata_fields"]["img_sharpness"] == "float"  # image properties computed at ingest
    assert str(tmp_path / "src" / "images") in detail["media_roots"]
    # the dataset's media root lets its thumbnails through
    thumb = api_client.get("/api/v1/datasets/cars/media/img3")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"

    again = wait_job(api_client, api_client.post("/api/v1/datasets/cars/ingest", json=body).json()["id"])
    assert again["status"] == "succeeded" and again["counts"]["skipped"] == 13  # idempotent: nothing rewritten
    jobs = api_client.get("/api/v1/jobs", params={"dataset": "cars", "kind": "ingest"}).json()
    assert [j["id"] for j in jobs] == [again["id"], job["id"]]
    assert not {"pid", "host", "runner"} & set(jobs[0])  # process bookkeeping stays server-side

    settings = api_client.app.state.settings  # type: ignore[attr-defined]
    assert (settings.thumbnail_cache / "cars").is_dir()
    assert api_client.delete("/api/v1/datasets/cars").status_code == 204
    assert not (settings.thumbnail_cache / "cars").exists()  # its thumbnails go with it


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"source": "{src}/no/such/manifest.csv"}, 422, "does not exist"),  # inside the ingest root
        ({"source": "x", "format": "tarball"}, 422, "format"),
        ({"source": "x", "batch_size": 0}, 422, "batch_size"),
        ({"source": "x", "embedder": {"kind": "magic"}}, 422, "embedder"),
    ],
)
def test_ingest_rejects_bad_requests(
    ingest_client: TestClient, tmp_path: Path, body: dict[str, Any], status: int, needle: str
) -> None:
    body = {**body, "source": body["source"].replace("{src}", str(tmp_path / "src"))}
    resp = ingest_client.post("/api/v1/datasets/cars/ingest", json=body)
    assert resp.status_code == status and needle in resp.text
    assert ingest_client.get("/api/v1/datasets").json() == []  # nothing created


def test_ingest_into_an_existing_dataset_with_another_embedder(
    ingest_client: TestClient, make_png: Callable[..., Path], tmp_path: Path
) -> None:
    api_client = ingest_client
    api_client.post("/api/v1/datasets", json=NEW)
    manifest = write_manifest(tmp_path / "src", make_png, n=2)
    body = {"source": str(manifest), "classes": ["car", "truck"], "embedder": {"kind": "open_clip"}}
    resp = api_client.post("/api/v1/datasets/cars/ingest", json=body)
    assert resp.status_code == 422 and "precomputed" in resp.json()["detail"]


def test_delete_removes_the_datasets_files(api_client: TestClient, api_settings: Settings) -> None:
    """Exports, stream uploads and thumbnails of a deleted dataset go with it (another dataset's stay)."""
    assert api_client.post("/api/v1/datasets", json=NEW).status_code == 201
    data = Path(api_settings.data_dir)
    left = [data / "_exports" / "cars" / "exp-1", data / "_stream" / "cars", api_settings.thumbnail_cache / "cars"]
    kept = data / "_exports" / "other" / "exp-2"
    for folder in [*left, kept]:
        folder.mkdir(parents=True)
        (folder / "f.bin").write_bytes(b"x")
    assert api_client.delete("/api/v1/datasets/cars").status_code == 204
    assert not any(p.exists() for p in left)
    assert (kept / "f.bin").is_file()
