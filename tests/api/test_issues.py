"""Issues: create with known and unknown ids, list, get, rename, add/remove ids, delete, 404s, API key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from factories import make_synthetic
from fastapi.testclient import TestClient

from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings

BASE = "/api/v1/datasets/s/issues"


@pytest.fixture
def client(api_settings: Settings, make_client: Callable[..., TestClient]) -> TestClient:
    make_synthetic(Store(api_settings.data_dir), "s", n_clusters=2, per_cluster=10)
    return make_client(api_settings)


def test_issue_lifecycle(client: TestClient, api_settings: Settings) -> None:
    assert client.get(BASE).json() == []
    resp = client.post(BASE, json={"name": "dog seen as bird", "sample_ids": ["c0-001", "c0-002", "ghost", "c0-001"]})
    assert resp.status_code == 201
    issue = resp.json()
    assert issue["sample_ids"] == ["c0-001", "c0-002"] and issue["count"] == 2
    assert issue["unknown_ids"] == ["ghost"] and issue["added"] == 2
    iid = issue["id"]

    listed = client.get(BASE).json()
    assert [i["id"] for i in listed] == [iid] and listed[0]["name"] == "dog seen as bird"
    assert client.get(f"{BASE}/{iid}").json()["sample_ids"] == ["c0-001", "c0-002"]

    patch = client.patch(
        f"{BASE}/{iid}",
        json={
            "name": "dogs as birds",
            "description": "night shots",
            "add_ids": ["c1-000", "c0-001", "nobody"],
            "remove_ids": ["c0-002", "c1-009"],
        },
    ).json()
    assert patch["sample_ids"] == ["c0-001", "c1-000"]
    assert patch["added"] == 1 and patch["removed"] == 1
    assert patch["unknown_ids"] == ["nobody"] and patch["not_in_issue"] == ["c1-009"]
    assert patch["name"] == "dogs as birds" and patch["description"] == "night shots"

    # the document the mining module reads
    doc = Store(api_settings.data_dir).get_doc("s", "issue", iid)
    assert doc["sample_ids"] == ["c0-001", "c1-000"]

    assert client.delete(f"{BASE}/{iid}").status_code == 204
    assert client.get(f"{BASE}/{iid}").status_code == 404
    assert client.get(BASE).json() == []


def test_unknown_issue_and_dataset(client: TestClient) -> None:
    for method, url, body in [
        ("GET", f"{BASE}/nope", None),
        ("PATCH", f"{BASE}/nope", {"add_ids": ["c0-001"]}),
        ("DELETE", f"{BASE}/nope", None),
    ]:
        resp = client.request(method, url, json=body)
        assert resp.status_code == 404 and resp.json()["type"].endswith("issue-not-found"), method
    assert client.get("/api/v1/datasets/nope/issues").status_code == 404
    assert client.post("/api/v1/datasets/nope/issues", json={"name": "x"}).status_code == 404


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x", "sample_ids": "c0-001"}, {"name": "x", "extra": 1}])
def test_bad_issue_bodies(client: TestClient, body: dict[str, Any]) -> None:
    resp = client.post(BASE, json=body)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"


def test_issue_writes_need_the_key(api_settings: Settings, make_client: Callable[..., TestClient]) -> None:
    make_synthetic(Store(api_settings.data_dir), "s", n_clusters=1, per_cluster=3)
    client = make_client(api_settings, api_key="k")
    assert client.post(BASE, json={"name": "x"}).status_code == 401
    created = client.post(BASE, json={"name": "x"}, headers={"X-API-Key": "k"})
    assert created.status_code == 201
    iid = created.json()["id"]
    assert client.patch(f"{BASE}/{iid}", json={"name": "y"}).status_code == 401
    assert client.delete(f"{BASE}/{iid}", headers={"X-API-Key": "bad"}).status_code == 401
    assert client.get(f"{BASE}/{iid}").json()["name"] == "x"
