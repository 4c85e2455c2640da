"""The Ray engine for ingest (issue 11, part 2) against the local engine, on real Ray, real LanceDB and real
images: the same rows, vectors, error rows, embedder record, fingerprints and run document; a second run
changes nothing; a model actor killed mid-run loses no row and duplicates none; the CLI's --engine ray and
its one-line errors.

Ray starts once for the module (``ray_local``, 2 CPUs on 127.0.0.1); the engine uses that session."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray  # the dev extra installs it: a missing Ray fails here, it is not skipped
from raysupport import N_IMAGES, assert_same_rows, comparable_run_doc, make_images, rows_by_id, start_local_ray

from edgeminer.indexer.embedders import TorchScriptEmbedder
from edgeminer.indexer.pipeline import IngestReport, ingest
from edgeminer.indexer.ray_engine import ingest_ray
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store

BATCH = 8


@pytest.fixture(scope="module")
def ray_temp() -> Iterator[str]:
    """The module's Ray temp dir (short: Ray's socket paths must stay under 108 characters); Ray, if running
    at the end, is shut down."""
    temp = tempfile.mkdtemp(prefix="em-ray-test-")
    try:
        yield temp
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_local(ray_temp: str) -> None:
    """A local Ray (2 CPUs, 127.0.0.1, no dashboard, logs in the module's temp dir), started once for the
    module unless a test shut it down."""
    if not ray.is_initialized():
        start_local_ray(ray_temp)


@pytest.fixture(scope="module")
def images() -> Iterator[tuple[Path, Path]]:
    folder = Path(tempfile.mkdtemp(prefix="em-ray-img-"))
    try:
        yield make_images(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _embedder(model: Path) -> TorchScriptEmbedder:
    return TorchScriptEmbedder(model, mc_passes=3, device="cpu", seed=0)


def run_local(data_dir: Path | str, manifest: Path, model: Path) -> IngestReport:
    source = open_source(manifest, kind="manifest")
    return ingest(Store(data_dir), "ds", source, _embedder(model), batch_size=BATCH, progress=False)


def run_ray(data_dir: Path | str, manifest: Path, model: Path, **kwargs: Any) -> IngestReport:
    source = open_source(manifest, kind="manifest")
    return ingest_ray(Store(data_dir), "ds", source, _embedder(model), batch_size=BATCH, progress=False, **kwargs)


def test_ray_equals_local_then_second_run_changes_nothing(ray_local: None, images: tuple[Path, Path]) -> None:
    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-eq-"))
    try:
        local = run_local(work / "local", manifest, model)
        calls: list[tuple[int, int, str]] = []
        first = run_ray(work / "ray", manifest, model, write_rows=16, on_progress=lambda *c: calls.append(c))
        assert calls[-1][:2] == (local.total, local.total) and [c[0] for c in calls] == sorted(c[0] for c in calls)
        s_local, s_ray = Store(work / "local"), Store(work / "ray")
        a, b = rows_by_id(s_local), rows_by_id(s_ray)
        assert_same_rows(a, b)
        # the input holds good rows and every kind of error row, and the engines agree on each
        assert local.ok_rows == first.ok_rows == N_IMAGES
        assert local.error_rows == first.error_rows == 4
        assert local.errors == first.errors
        assert {r["error"].split(":")[0] for r in b.values() if r["status"] == "error"} >= {
            "file not found",
            "not an image (Pillow cannot identify the file)",
        }
        assert any(r["mc_variance"] for r in b.values() if r["status"] == "ok")  # the MC passes were run
        # the dataset's record, the run document and the counts
        assert s_local.get_dataset("ds").embedder == s_ray.get_dataset("ds").embedder
        assert s_local.get_dataset("ds").classes == s_ray.get_dataset("ds").classes
        assert comparable_run_doc(s_local, local.run_id) == comparable_run_doc(s_ray, first.run_id)
        assert local.counts() == first.counts()
        assert set(first.nodes) == {"decode", "embed"} and all(first.nodes.values())

        version = s_ray.version("ds")
        again = run_ray(work / "ray", manifest, model)
        assert again.skipped == again.total and again.inserted == again.updated == 0
        assert Store(work / "ray").version("ds") == version
        assert_same_rows(b, rows_by_id(Store(work / "ray")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_cuda_on_a_cluster_without_gpus_is_refused(ray_local: None, images: tuple[Path, Path]) -> None:
    """--device cuda on a cluster with no GPU: one clear error, and the new dataset is not left behind empty."""
    from edgeminer.indexer.errors import Unavailable

    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-gpu-"))
    try:
        with pytest.raises(Unavailable, match="the Ray cluster has no GPU: pass --device cpu"):
            run_ray(work / "db", manifest, model, device="cuda")
        assert not Store(work / "db").has_dataset("ds")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def crashing_factory(config: dict[str, Any], marker: str) -> Any:
    """An actor embedder that kills its own process (os._exit) on its 3rd batch, once (the marker file says
    it happened): Ray restarts the actor and retries the chunk."""
    from edgeminer.indexer.ray_engine import load_actor_embedder

    def factory() -> Any:
        inner = load_actor_embedder(config, "cpu", 0)

        class Crashing:
            def __init__(self) -> None:
                self.calls = 0

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def embed_batch(self, batch: np.ndarray) -> Any:
                self.calls += 1
                if self.calls == 3 and not os.path.exists(marker):
                    with open(marker, "w") as f:
                        f.write(str(os.getpid()))
                    os._exit(1)
                return inner.embed_batch(batch)

        return Crashing()

    return factory


def test_killed_actor_loses_no_row_and_duplicates_none(ray_local: None, images: tuple[Path, Path]) -> None:
    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-kill-"))
    try:
        marker = work / "killed"
        local = run_local(work / "local", manifest, model)
        factory = crashing_factory(_embedder(model).config(), str(marker))
        report = run_ray(work / "ray", manifest, model, embedder_factory=factory, write_rows=8)
        assert marker.exists(), "the actor was never killed: the test checks nothing"
        killed_pid = int(marker.read_text())
        assert killed_pid != os.getpid()
        stored = rows_by_id(Store(work / "ray"))  # asserts no id twice
        assert_same_rows(rows_by_id(Store(work / "local")), stored)
        assert Store(work / "ray").count("ds") == local.total
        assert report.counts() == local.counts()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_cli_engine_ray(ray_local: None, images: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``edgeminer ingest --engine ray`` through main(): the same rows as ``--engine local``."""
    from edgeminer.service.cli import main

    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-cli-"))
    try:
        common = ["ingest", str(manifest), "--dataset", "ds", "--embedder", "torchscript", "--model-file", str(model)]
        common += ["--batch-size", str(BATCH), "--mc-passes", "3", "--device", "cpu", "--quiet"]
        assert main(["--data-dir", str(work / "local"), *common, "--engine", "local"]) == 0
        assert main(["--data-dir", str(work / "ray"), *common, "--engine", "ray"]) == 0
        out = capsys.readouterr().out
        assert "ray at existing session: 1 node(s)" in out, out
        assert_same_rows(rows_by_id(Store(work / "local")), rows_by_id(Store(work / "ray")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_cli_unreachable_address_is_one_line(images: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A --ray-address nobody listens on: one line, exit 1, no dataset created (runs without the module's
    Ray session, so the engine has to connect itself)."""
    from servers import free_port

    from edgeminer.service.cli import main

    if ray.is_initialized():
        ray.shutdown()
    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-unreach-"))
    try:
        args = ["--data-dir", str(work / "db"), "ingest", str(manifest), "--dataset", "ds", "--embedder"]
        args += ["torchscript", "--model-file", str(model), "--quiet", "--engine", "ray"]
        assert main([*args, "--ray-address", f"127.0.0.1:{free_port()}"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no Ray cluster answers at 127.0.0.1:" in err, err
        assert not Store(work / "db").has_dataset("ds")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_engine_ray_without_ray_is_one_line(
    images: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Ray installed (its import fails), --engine ray says how to install it, in one line."""
    import builtins

    from edgeminer.service.cli import main

    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-noray-"))
    try:
        args = ["--data-dir", str(work / "db"), "ingest", str(manifest), "--dataset", "ds", "--embedder"]
        assert main([*args, "torchscript", "--model-file", str(model), "--quiet", "--engine", "ray"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == "edgeminer: error: the Ray engine needs Ray: pip install 'edgeminer[ray]'", err
        assert not Store(work / "db").has_dataset("ds")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow  # starts and stops a second Ray instance (~20 s under load)
def test_local_ray_started_and_stopped_by_the_engine(images: tuple[Path, Path]) -> None:
    """No Ray session and no address: the engine starts a local Ray for the ingest and shuts it down."""
    if ray.is_initialized():
        ray.shutdown()
    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-own-"))
    try:
        report = run_ray(work / "db", manifest, model)
        assert report.address == "local" and report.ok_rows == N_IMAGES
        assert not ray.is_initialized()
        assert json.dumps(report.as_dict(), default=str)  # the report serialises (API / --json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow  # trains the demo CNN, then ingests the 1,797 demo digits with each engine (~1 min)
def test_ray_equals_local_on_the_demo_images(ray_local: None, tmp_path: Path) -> None:
    """The demo as `edgeminer demo` builds it (local engine), then the same manifest and model on Ray."""
    from edgeminer.indexer.demo import DATASET, build_demo

    local = Store(tmp_path / "local")
    build_demo(tmp_path / "demo", local, progress=False, mc_passes=3)
    source = open_source(tmp_path / "demo" / "manifest.csv", kind="manifest")
    embedder = TorchScriptEmbedder(tmp_path / "demo" / "digits_cnn.pt", mc_passes=3, device="cpu", seed=0)
    on_ray = Store(tmp_path / "ray")
    report = ingest_ray(on_ray, DATASET, source, embedder, batch_size=128, progress=False)
    assert report.ok_rows == local.count(DATASET, "status = 'ok'") == 1797
    assert_same_rows(rows_by_id(local, DATASET), rows_by_id(on_ray, DATASET))
    assert local.get_dataset(DATASET).embedder == on_ray.get_dataset(DATASET).embedder


def test_several_chunks_per_block_give_the_same_rows(
    ray_local: None, images: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of several chunks (one Ray task and one actor call each): every chunk is still embedded as its own
    model batch, so the rows equal the local engine's."""
    import edgeminer.indexer.ray_engine as engine

    monkeypatch.setattr(engine, "BLOCKS", 2)  # 6 chunks of 8 -> blocks of 3 chunks
    manifest, model = images
    work = Path(tempfile.mkdtemp(prefix="em-ray-blocks-"))
    try:
        local = run_local(work / "local", manifest, model)
        on_ray = run_ray(work / "ray", manifest, model)
        assert on_ray.counts() == local.counts() and on_ray.errors == local.errors
        assert_same_rows(rows_by_id(Store(work / "local")), rows_by_id(Store(work / "ray")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
