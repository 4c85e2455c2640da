"""Shared fixtures: an empty store on disk, and the demo dataset built once per test session."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/factories.py importable as `factories`

from indexer.store import Store  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db")


@dataclass
class DemoEnv:
    data_dir: Path
    demo_dir: Path
    store: Store


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> DemoEnv:
    """The demo dataset, built once per session (about a minute on 2 cores).

    EDGEMINER_TEST_DEMO_CACHE=<dir> reuses a demo built there before (handy while developing)."""
    from indexer.demo import build_demo

    cache = os.environ.get("EDGEMINER_TEST_DEMO_CACHE")
    base = Path(cache) if cache else tmp_path_factory.mktemp("demo")
    data_dir, demo_dir = base / "db", base / "demo"
    store = Store(data_dir)
    build_demo(demo_dir, store, seed=0, progress=False)
    return DemoEnv(data_dir=data_dir, demo_dir=demo_dir, store=store)
