"""``GET /api/v1/health`` says whether the server has a Label Studio configured (``label_studio``), so
the dashboard can disable its push / pull actions; it never shows the server's URL or token."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from pydantic import SecretStr

from edgeminer.service.settings import Settings

URL = "http://labeler:s3cret-pass@127.0.0.1:8089"
TOKEN = "tok-very-secret-123"


def test_health_says_false_without_a_label_studio(
    make_client: Callable[..., TestClient], api_settings: Settings
) -> None:
    body = make_client(api_settings).get("/api/v1/health").json()
    assert body["label_studio"] is False


def test_a_url_without_a_token_is_not_configured(
    make_client: Callable[..., TestClient], api_settings: Settings
) -> None:
    client = make_client(api_settings, label_studio_url="http://127.0.0.1:8089")
    assert client.get("/api/v1/health").json()["label_studio"] is False


def test_health_says_true_and_shows_neither_url_nor_token(
    make_client: Callable[..., TestClient], api_settings: Settings
) -> None:
    client = make_client(api_settings, label_studio_url=URL, label_studio_token=SecretStr(TOKEN))
    resp = client.get("/api/v1/health")
    assert resp.status_code == 200
    assert resp.json()["label_studio"] is True
    for secret in (TOKEN, "s3cret-pass", "labeler", "8089"):
        assert secret not in resp.text
