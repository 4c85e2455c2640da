"""Scalar indexes built with Ray (issue 11, part 4): ``Store.ensure_indexes(engine="ray")`` builds the filter
columns' indexes with ``lance_ray.create_scalar_index`` (one index segment per Ray task) and compacts with
``lance_ray.compact_files``, on real LanceDB tables and a real local Ray. The indexes answer filters (the
query plan uses them) with the same rows as the locally built ones, and stay refreshable.

Ray starts once for the module (2 CPUs on 127.0.0.1, no dashboard)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from raysupport import start_local_ray

from edgeminer.indexer import store as store_mod
from edgeminer.indexer.errors import UnknownField
from edgeminer.indexer.store import SCALAR_INDEXES, Store

ray = pytest.importorskip("ray")
pytest.importorskip("lance_ray")

DIM = 8
FRAGMENTS = 4
PER_FRAGMENT = 300


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray for the module (2 CPUs, 127.0.0.1, no dashboard), shut down at the end unless a session
    was already running."""
    if ray.is_initialized():
        yield
        return
    temp = tempfile.mkdtemp(prefix="em-ray-ix-")
    start_local_ray(temp)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _table(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"r{start + i:05d}" for i in range(n)]
    return pa.table(
        {
            "id": ids,
            "uri": [f"/img/{i}.png" for i in ids],
            "split": [("train", "val", "unlabeled")[(start + i) % 3] for i in range(n)],
            "labeled": [(start + i) % 3 != 2 for i in range(n)],
            "label": [("cat", "dog")[(start + i) % 2] if (start + i) % 3 != 2 else None for i in range(n)],
            "status": ["ok"] * n,
            "fingerprint": ids,
            "meta_weather": [("rain", "sun", "fog")[(start + i) % 3] for i in range(n)],
            "meta_speed": rng.uniform(0, 100, n).astype(np.float64),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), DIM),
        }
    )


def _dataset(store: Store, fragments: int = FRAGMENTS, per: int = PER_FRAGMENT) -> str:
    """The same rows in ``fragments`` writes (one fragment each) on every store."""
    store.create_dataset(
        "ds", dim=DIM, embedder={"kind": "precomputed", "dim": DIM}, classes=["cat", "dog"],
        metadata_fields={"weather": "string", "speed": "float"},
    )
    rng = np.random.default_rng(0)
    for f in range(fragments):
        store.upsert_samples("ds", _table(f * per, per, rng))
    return "ds"


FILTERS = (
    "meta_weather = 'sun'",
    "split = 'unlabeled' AND meta_speed > 50",
    "label = 'dog' AND meta_weather IN ('rain', 'fog')",
)


def _same_answers(ds: str, remote: Store, local: Store, filters: tuple[str, ...]) -> None:
    """Each filter selects the same rows on both stores, and a filtered vector search ranks the same ones."""
    query = local.vectors(ds, ids=["r00042"])[1][0]
    for where in filters:
        want = sorted(local.query(ds, where=where, columns=["id"])["id"].to_pylist())
        assert want and sorted(remote.query(ds, where=where, columns=["id"])["id"].to_pylist()) == want
        hits = remote.search(ds, query, k=10, where=where, columns=["id"])
        assert hits["id"].to_pylist() == local.search(ds, query, k=10, where=where, columns=["id"])["id"].to_pylist()


def test_ray_built_indexes_answer_filters_and_are_refreshed_after_a_rewrite(
    ray_local: None, tmp_path: Path
) -> None:
    remote, local = Store(tmp_path / "ray"), Store(tmp_path / "local")
    ds = _dataset(remote)
    _dataset(local)
    built = remote.build_scalar_indexes_distributed(ds, {"cluster": "BTREE", "meta_weather": "BITMAP"}, workers=2)
    assert built == ["cluster_idx", "meta_weather_idx"]
    lds = remote._read_ds(ds)
    ix = {ix.name: ix for ix in lds.describe_indices()}["meta_weather_idx"]
    assert int(ix.num_rows_indexed) == FRAGMENTS * PER_FRAGMENT
    assert len(ix.segments) == 2  # two Ray tasks, one segment each, committed as one index
    plan = lds.scanner(filter="meta_weather = 'sun'", columns=["id"]).explain_plan()
    assert "ScalarIndexQuery" in plan and "meta_weather_idx" in plan
    _same_answers(ds, remote, local, ("meta_weather = 'sun'", "meta_weather IN ('rain', 'fog') AND meta_speed > 50"))

    ids = [f"r{i:05d}" for i in range(FRAGMENTS * PER_FRAGMENT)]
    cluster = (np.arange(len(ids)) % 5).astype(np.int32)
    remote.update_columns(ds, pa.table({"id": ids, "cluster": cluster}))  # what an analysis writes
    assert remote.unindexed_rows(ds)["cluster_idx"] == len(ids)
    assert "cluster_idx" in remote.refresh_indexes(ds)
    assert remote.unindexed_rows(ds)["cluster_idx"] == 0
    want = sorted(i for i, c in zip(ids, cluster, strict=True) if c == 4)
    assert sorted(remote.query(ds, where="cluster = 4", columns=["id"])["id"].to_pylist()) == want
    with pytest.raises(UnknownField, match="unknown column 'nope'"):
        remote.build_scalar_indexes_distributed(ds, {"nope": "BTREE"})


@pytest.mark.slow  # one Ray pool per index: ten of them (~50 s on a busy 2-core machine)
def test_ensure_indexes_with_ray_builds_every_scalar_index(
    ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "COMPACT_TARGET_ROWS", 200)  # the 300-row fragments are not small
    remote, local = Store(tmp_path / "ray"), Store(tmp_path / "local")
    ds = _dataset(remote)
    _dataset(local)
    done = remote.ensure_indexes(ds, force=True, engine="ray", workers=2)
    assert done["engine"] == "ray" and done["compacted"] is False
    assert set(done["scalar_indexes"]) == {*SCALAR_INDEXES, "meta_weather", "meta_speed"}
    local.ensure_indexes(ds, force=True)
    by_name = {ix.name: ix for ix in remote._read_ds(ds).describe_indices()}
    for col in done["scalar_indexes"]:
        assert len(by_name[f"{col}_idx"].segments) == 2
    assert not any(remote.unindexed_rows(ds).values())
    _same_answers(ds, remote, local, FILTERS)
    assert remote.ensure_indexes(ds, engine="ray", workers=2)["scalar_indexes"] == []  # nothing left to build


def test_ray_compacts_the_small_fragments(ray_local: None, tmp_path: Path) -> None:
    store = Store(tmp_path / "ray")
    ds = _dataset(store, fragments=10, per=20)  # ten small batches
    before = store.query(ds).sort_by("id")
    done = store.ensure_indexes(ds, engine="ray", workers=2)
    assert done["compacted"] is True
    assert len(store._read_ds(ds).get_fragments()) == 1
    assert store.query(ds).sort_by("id").equals(before)
