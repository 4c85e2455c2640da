"""Shared fixtures: an empty store on disk, and the demo dataset built once per test session."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/factories.py importable as `factories`

from edgeminer.indexer.store import Store  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db")


@dataclass
class DemoEnv:
    data_dir: Path
    demo_dir: Path
    store: Store

    def copy(self, dest: Path) -> DemoEnv:
        """A private copy of the demo's store (a few MB) for a test that writes: the images and the
        model stay shared, read-only."""
        data_dir = dest / "db"
        shutil.copytree(self.data_dir, data_dir, ignore=shutil.ignore_patterns("_exports", "_cache", "_stream"))
        return DemoEnv(data_dir=data_dir, demo_dir=self.demo_dir, store=Store(data_dir))


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> DemoEnv:
    """The demo dataset, built and analyzed once per session (about a minute on 2 cores).

    Shared by every test that asks for it, so it is READ-ONLY: a test (or fixture) that writes
    (labels, uploads, issues, exports, another analysis) works on ``demo_env.copy(tmp_path)`` or the
    ``demo_copy`` fixture, so results never depend on which tests ran before.

    EDGEMINER_TEST_DEMO_CACHE=<dir> reuses a demo built there before (handy while developing)."""
    from edgeminer.indexer.analysis.run import analyze, load_analysis
    from edgeminer.indexer.demo import build_demo

    cache = os.environ.get("EDGEMINER_TEST_DEMO_CACHE")
    base = Path(cache) if cache else tmp_path_factory.mktemp("demo")
    data_dir, demo_dir = base / "db", base / "demo"
    store = Store(data_dir)
    build_demo(demo_dir, store, seed=0, progress=False)
    if load_analysis(store, "demo") is None:
        analyze(store, "demo")
    return DemoEnv(data_dir=data_dir, demo_dir=demo_dir, store=store)


@pytest.fixture
def demo_copy(demo_env: DemoEnv, tmp_path: Path) -> DemoEnv:
    """A writable copy of the analyzed demo, private to one test."""
    return demo_env.copy(tmp_path)
