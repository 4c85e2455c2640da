"""Model versions and compare over HTTP (issue 14): add a version from a manifest under the ingest roots
(a job), list versions, compare, page the fixed / broken rows, make a version current; unknown versions
are 404s naming the known ones, base == new a 422, a path outside the roots a 403."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from servers import wait_job
from versiondata import V2_PRED, write_dataset, write_v2

from edgeminer.indexer.embedders import PrecomputedEmbedder
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings

API = "/api/v1/datasets/ds"


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "roots"
    root.mkdir()
    return root


@pytest.fixture
def client(make_client: Callable[..., TestClient], api_settings: Settings, roots: Path) -> TestClient:
    store = Store(api_settings.data_dir)
    ingest(store, "ds", open_source(write_dataset(roots)), PrecomputedEmbedder(), progress=False)
    return make_client(api_settings, ingest_roots=[str(roots)], api_key="k")


def test_add_compare_and_switch_versions(client: TestClient, roots: Path) -> None:
    key = {"X-API-Key": "k"}
    assert client.get(f"{API}/versions").json()["versions"][0]["name"] == "v1"
    body = {"name": "v2", "source": str(write_v2(roots))}
    assert client.post(f"{API}/versions", json=body).status_code == 401  # writes need the key
    resp = client.post(f"{API}/versions", json=body, headers=key)
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["id"])
    assert job["status"] == "succeeded" and job["counts"] == {"rows": 10, "errors": 0}, job
    versions = client.get(f"{API}/versions").json()
    assert versions["current"] == "v1" and [(v["name"], v["rows"]) for v in versions["versions"]] == [
        ("v1", 10), ("v2", 10),
    ]  # fmt: skip

    report = client.get(f"{API}/compare", params={"base": "v1", "new": "v2"})
    assert report.status_code == 200, report.text
    data = report.json()
    assert (data["overall"]["fixed"], data["overall"]["broken"], data["overall"]["n"]) == (2, 2, 8)
    assert {g["value"]: (g["fixed"], g["broken"]) for g in data["slices"]} == {"x": (0, 1), "y": (2, 1)}
    assert set(data) >= {"regressions", "clusters", "classes", "metadata", "rows", "analysis"}

    rows = client.get(f"{API}/compare/rows", params={"base": "v1", "new": "v2", "outcome": "fixed"}).json()
    assert [r["id"] for r in rows["items"]] == ["r4", "r5"] and rows["counts"]["broken"] == 2
    points = client.get(f"{API}/compare/points", params={"base": "v1", "new": "v2"}).json()
    assert points["count"] == 0 and points["codes"] == []  # no map before an analysis

    switch = client.post(f"{API}/versions/current", json={"name": "v2"}, headers=key)
    assert switch.status_code == 202
    assert wait_job(client, switch.json()["id"])["status"] == "succeeded"
    assert client.get(f"{API}/versions").json()["current"] == "v2"
    items = client.get(f"{API}/samples", params={"sort": "id", "limit": 10, "columns": "id,pred_label"}).json()
    assert [r["pred_label"] for r in items["items"]] == V2_PRED


def test_bad_requests(client: TestClient, roots: Path, tmp_path: Path) -> None:
    key = {"X-API-Key": "k"}
    unknown = client.get(f"{API}/compare", params={"base": "v1", "new": "v9"})
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["known_versions"] == ["v1"] and "Known versions: v1" in unknown.json()["detail"]
    ingest_v2 = client.post(f"{API}/versions", json={"name": "v2", "source": str(write_v2(roots))}, headers=key)
    wait_job(client, ingest_v2.json()["id"])
    same = client.get(f"{API}/compare", params={"base": "v2", "new": "v2"})
    assert same.status_code == 422 and "two different versions" in same.json()["detail"]
    assert client.get(f"{API}/compare/rows", params={"base": "v1", "new": "v9"}).status_code == 404
    assert client.post(f"{API}/versions/current", json={"name": "v9"}, headers=key).status_code == 404
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    refused = client.post(f"{API}/versions", json={"name": "v3", "source": str(outside)}, headers=key)
    assert refused.status_code == 403 and "EDGEMINER_INGEST_ROOTS" in refused.json()["detail"]
    bad_name = client.post(f"{API}/versions", json={"name": "a/b", "source": str(write_v2(roots))}, headers=key)
    assert bad_name.status_code == 422
    both = client.post(
        f"{API}/versions", json={"name": "v3", "source": str(write_v2(roots)), "model_file": str(roots / "m.pt")},
        headers=key,
    )  # fmt: skip
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    assert client.get("/api/v1/datasets/nope/compare", params={"base": "v1", "new": "v2"}).status_code == 404
    assert client.get(f"{API}/compare", params={"base": "v1", "new": "v2", "resamples": 5}).status_code == 422
