"""The Label Studio push / pull routes talk only to the server of the settings: without one they refuse
(422 naming the settings), a request cannot name another server, and a local-files root must be one of
the media roots. (The round trip against a real Label Studio is tests/integration/test_labelstudio_live.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from exportdata import build_classification
from fastapi.testclient import TestClient

from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings

PUSH = "/api/v1/datasets/cls/label_studio/push"
PULL = "/api/v1/datasets/cls/label_studio/pull"


@pytest.fixture
def settings(api_settings: Settings, tmp_path: Path) -> Settings:
    build_classification(Store(api_settings.data_dir), tmp_path / "media")
    return api_settings


def test_without_a_configured_server_both_routes_refuse(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    client = make_client(settings)
    for path, body in ((PUSH, {"project": "p", "ids": ["img-000"]}), (PULL, {"project": "p"})):
        resp = client.post(path, json=body)
        assert resp.status_code == 422, resp.text
        assert "EDGEMINER_LABEL_STUDIO_URL" in resp.json()["detail"]


def test_a_request_cannot_name_the_server_or_a_root_outside_the_media_roots(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    configured = Settings(
        **{**settings.model_dump(exclude={"label_studio_token"}), "label_studio_url": "http://127.0.0.1:9"},
        label_studio_token="tok-secret",
    )
    client = make_client(configured)
    for field in ("url", "server", "token"):
        resp = client.post(PUSH, json={"project": "p", "ids": ["img-000"], field: "http://169.254.169.254"})
        assert resp.status_code == 422 and field in resp.text
        assert client.post(PULL, json={"project": "p", field: "x"}).status_code == 422
    resp = client.post(PUSH, json={"project": "p", "ids": ["img-000"], "media": "relative", "media_root": "/etc"})
    assert resp.status_code == 422 and "media_root must be one of" in resp.json()["detail"]
    assert client.post(PUSH, json={"project": "", "ids": ["img-000"]}).status_code == 422
    assert client.post("/api/v1/datasets/nope/label_studio/pull", json={"project": "p"}).status_code == 404


def test_an_unreachable_server_fails_the_job_without_the_token(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    configured = Settings(
        **{**settings.model_dump(exclude={"label_studio_token"}), "label_studio_url": "http://127.0.0.1:9"},
        label_studio_token="tok-secret",
    )
    client = make_client(configured)
    resp = client.post(PULL, json={"project": "p"})
    assert resp.status_code == 202
    job_id = resp.json()["id"]
    for _ in range(200):
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["status"] == "failed" and "Label Studio at http://127.0.0.1:9 is not reachable" in job["error"]
    assert "tok-secret" not in client.get("/api/v1/jobs", params={"dataset": "cls"}).text
