"""Schemathesis against /openapi.json of a real server with data in it: no 5xx, and every response's
status, content type and body match the schema. Bounded (few examples per operation, fixed seed).

The default test covers the service-core operations (health, datasets, samples, media, issues, jobs);
the slow one runs the whole API, analysis / mining / exports included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from factories import make_synthetic
from servers import failures, run_schemathesis

from edgeminer.indexer.store import Store
from edgeminer.service.settings import Settings

CORE_TAGS = "^(health|datasets|samples|media|issues|jobs)$"


@pytest.fixture
def seeded(api_settings: Settings, make_png: Callable[..., Path]) -> Settings:
    store = Store(api_settings.data_dir)
    make_synthetic(store, "s", n_clusters=3, per_cluster=15)
    png = make_png(Path(api_settings.media_roots[0]) / "c0-000.png")
    store.update_where("s", "id = 'c0-000'", {"uri": str(png)})
    store.put_doc("s", "issue", "i1", {"id": "i1", "name": "x", "sample_ids": ["c0-000"]}, name="x")
    return api_settings


def test_core_api_has_no_server_errors(seeded: Settings, live_server: Callable[..., str], tmp_path: Path) -> None:
    base = live_server(seeded)
    result = run_schemathesis(base, tmp_path, "--include-tag-regex", CORE_TAGS)
    assert result.returncode == 0, failures(result.stdout)
    assert " passed" in result.stdout.split("SUMMARY")[-1]


@pytest.mark.slow
def test_whole_api_has_no_server_errors(seeded: Settings, live_server: Callable[..., str], tmp_path: Path) -> None:
    base = live_server(seeded)
    result = run_schemathesis(base, tmp_path, timeout=1200)
    assert result.returncode == 0, failures(result.stdout)
