"""Fixtures for the object-storage tests: one loopback S3 server (moto's server mode) per session, a fresh
``s3://edgeminer-test/<prefix>`` per test with the AWS variables pointing at it (the dataset the tests ingest is
``s3server.write_manifest``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import BUCKET, S3Server, s3_server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def s3_uri(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh prefix in the test bucket; the AWS variables point at the loopback server and the local cache
    of the remote store is under tmp_path (never the user's ~/.cache)."""
    for var, value in s3.env.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "EDGEMINER_STORAGE_OPTIONS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EDGEMINER_CACHE_DIR", str(tmp_path / "s3cache"))
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
