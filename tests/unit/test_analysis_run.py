"""analyze() end to end on a real LanceDB store: coordinates and clusters written, failure clusters
found, runs recorded, reuse, new rows transformed without refit (also after a restart), re-clustering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from factories import Synthetic, make_synthetic

from edgeminer.indexer.analysis.run import (
    AnalyzeParams,
    analyze,
    format_clusters,
    format_slices,
    get_cluster,
    load_analysis,
)
from edgeminer.indexer.store import Store

FAST = {"n_neighbors": 10, "n_epochs": 30, "min_cluster_size": 15}


def _synth(store: Store) -> Synthetic:
    return make_synthetic(store, "synth", n_clusters=5, per_cluster=50, error_clusters=(1,), seed=2)


def _coords(store: Store, ds: str) -> pa.Table:
    return store.query(ds, columns=["id", "x", "y", "cluster", "status"])


def test_analyze_writes_map_clusters_run_and_reuses(store: Store) -> None:
    syn = _synth(store)
    seen: list[tuple[int, int, str]] = []
    rep = analyze(store, "synth", FAST, progress=lambda d, t, m: seen.append((d, t, m)))
    assert rep.mode == "fit" and rep.rows == 250 and rep.fitted == 250
    assert seen[0][0] == 0 and seen[-1][:2] == (5, 5)
    assert sorted({d for d, _, _ in seen}) == [0, 1, 2, 3, 4, 5]  # no step skipped
    tab = _coords(store, "synth")
    assert tab["x"].null_count == 0 and tab["y"].null_count == 0 and tab["cluster"].null_count == 0
    assert rep.version_written > rep.version_read
    # the error cluster of the generator is the top failure cluster
    doc = load_analysis(store, "synth")
    assert doc is not None and doc["run_id"] == rep.run_id
    top = doc["clusters"][0]
    assert top["failure_rank"] == 1 and top["errors"] > 0
    members = set(store.query("synth", where=f"cluster = {top['id']}", columns=["id"])["id"].to_pylist())
    gen = {i for i, c in syn.cluster_of.items() if c == 1}
    assert len(members & gen) / len(members) > 0.9 and len(members & gen) / len(gen) > 0.9
    assert get_cluster(store, "synth", top["id"]) == top
    assert get_cluster(store, "synth", 999) is None
    # the run document
    runs = [d for d in store.list_docs("synth", "run") if d.get("kind") == "analyze"]
    assert len(runs) == 1 and runs[0]["version_read"] == rep.version_read
    assert runs[0]["params"]["seed"] == 0 and runs[0]["duration_s"] >= 0
    assert runs[0]["counts"]["clusters"] == rep.n_clusters
    # state file under the data dir
    assert (Path(store.uri) / doc["state"]["file"]).is_file()
    # second run, nothing changed: reused
    again = analyze(store, "synth", FAST)
    assert again.mode == "reuse" and again.n_clusters == rep.n_clusters
    assert store.version("synth") == rep.version_written
    assert len([d for d in store.list_docs("synth", "run") if d.get("kind") == "analyze"]) == 2
    text = format_clusters(load_analysis(store, "synth") or {})
    assert "cat" in text or "dog" in text or "bird" in text


def _new_rows(syn: Synthetic, near_cluster: int, n: int, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    members = [i for i, ident in enumerate(syn.ids) if syn.cluster_of[ident] == near_cluster]
    base = syn.vectors[members].mean(axis=0)
    vecs = base + 0.03 * rng.normal(size=(n, base.size))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return pa.table(
        {
            "id": [f"new-{j}" for j in range(n)],
            "uri": [f"/synthetic/new-{j}.png" for j in range(n)],
            "split": ["unlabeled"] * n,
            "labeled": [False] * n,
            "pred_label": ["cat"] * n,
            "status": ["ok"] * n,
            "fingerprint": [f"fp-new-{j}" for j in range(n)],
            "embedding": pa.array(vecs.astype(np.float32).tolist(), pa.list_(pa.float32(), base.size)),
        }
    )


def test_new_rows_are_transformed_without_refit_even_after_restart(store: Store) -> None:
    syn = _synth(store)
    first = analyze(store, "synth", FAST)
    before = _coords(store, "synth").to_pandas().set_index("id")
    store.upsert_samples("synth", _new_rows(syn, near_cluster=3, n=12))
    restarted = Store(store.uri)  # a new process: the fitted state comes from the file
    rep = analyze(restarted, "synth", FAST)
    assert rep.mode == "transform" and rep.transformed == 12 and rep.fitted == first.fitted == 250
    after = _coords(restarted, "synth").to_pandas().set_index("id")
    assert after["x"].isna().sum() == 0 and after["cluster"].isna().sum() == 0 and len(after) == 262
    # old rows keep their coordinates (no refit)
    old = before.index
    assert (
        np.allclose(after.loc[old, "x"], before.loc[old, "x"])
        and (after.loc[old, "cluster"] == before.loc[old, "cluster"]).all()
    )
    # the new rows land in the cluster of the generator cluster they were drawn from
    gen3 = [i for i, c in syn.cluster_of.items() if c == 3]
    home = int(before.loc[gen3, "cluster"].mode()[0])
    assert (after.loc[[f"new-{j}" for j in range(12)], "cluster"] == home).mean() >= 0.75
    # --refit fits again on everything
    refit = analyze(restarted, "synth", FAST, refit=True)
    assert refit.mode == "fit" and refit.fitted == 262
    doc = load_analysis(restarted, "synth") or {}
    assert doc["fitted_rows"] == 262 and (Path(store.uri) / doc["state"]["file"]).is_file()
    assert len(list((Path(store.uri) / "_analysis" / "synth").glob("state-*.pkl"))) == 1  # old state removed


def test_changed_clustering_params_recluster_the_same_map(store: Store) -> None:
    _synth(store)
    analyze(store, "synth", FAST)
    xs = _coords(store, "synth")["x"].to_pylist()
    rep = analyze(store, "synth", {**FAST, "min_cluster_size": 40})
    assert rep.mode == "recluster"
    assert _coords(store, "synth")["x"].to_pylist() == xs
    assert (load_analysis(store, "synth") or {})["min_cluster_size"] == 40


def test_truth_field_quality_check(store: Store) -> None:
    _synth(store)
    rep = analyze(store, "synth", FAST, truth_field="group")
    assert rep.truth_field == "group" and len(rep.slices) == 5
    for s in rep.slices:  # every generator group is recovered by one cluster
        assert s["precision"] > 0.9 and s["recall"] > 0.9
    g1 = next(s for s in rep.slices if s["slice"] == "g1")
    assert g1["failure_rank"] == 1
    assert "g1" in format_slices(rep.slices, rep.truth_field)
    with pytest.raises(ValueError, match="truth field 'weather' is not a metadata field"):
        analyze(store, "synth", FAST, truth_field="weather")


def test_bad_params_and_empty_dataset(store: Store) -> None:
    store.create_dataset("empty", dim=4, embedder={"kind": "precomputed"})
    with pytest.raises(ValueError, match="has no rows with an embedding"):
        analyze(store, "empty", FAST)
    with pytest.raises(ValueError, match="unknown analysis parameter.*neighbours"):
        analyze(store, "empty", {"neighbours": 5})
    with pytest.raises(ValueError, match="pca must be one of"):
        AnalyzeParams(pca="maybe").check()


def test_cli_analyze_and_clusters(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeminer.service.cli import main

    _synth(store)
    args = ["--data-dir", store.uri]
    assert main([*args, "clusters", "--dataset", "synth"]) == 1
    assert "has not been analyzed yet" in capsys.readouterr().err
    assert main([*args, "analyze", "--dataset", "synth", "--n-epochs", "30", "--min-cluster-size", "15"]) == 0
    out = capsys.readouterr()
    assert "fitted the map on 250 rows" in out.out and "[5/5] done" in out.err
    assert main([*args, "clusters", "--dataset", "synth", "--truth-field", "group"]) == 0
    text = capsys.readouterr().out
    assert "rank cluster" in text and "per-slice check (group)" in text
    assert "group=g1 100% (dataset 20%)" in text  # the failure cluster's common trait
    assert main([*args, "clusters", "--dataset", "synth", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["clusters"][0]["failure_rank"] == 1


@pytest.mark.slow
def test_demo_slices_are_top_failure_clusters(demo_env: object) -> None:
    store: Store = demo_env.store  # type: ignore[attr-defined]
    rep = analyze(store, "demo")
    assert rep.truth_field == "slice" and rep.slices
    n_fail = rep.n_failure_clusters
    for s in rep.slices:
        # every planted slice has a failure cluster among the top ones that is mostly made of it, or
        # holds it whole
        assert s["failure_rank"] is not None and s["failure_rank"] <= max(6, n_fail), s
        assert s["precision"] >= 0.3 and s["recall"] >= 0.5, s
    tab = store.query("demo", where="status = 'ok'", columns=["x", "y", "cluster"])
    assert tab["x"].null_count == 0 and tab["cluster"].null_count == 0


def test_unreadable_state_means_refit(store: Store) -> None:
    syn = _synth(store)
    analyze(store, "synth", FAST)
    doc = load_analysis(store, "synth") or {}
    (Path(store.uri) / doc["state"]["file"]).write_bytes(b"not a pickle")
    store.upsert_samples("synth", _new_rows(syn, near_cluster=0, n=3))
    rep = analyze(store, "synth", FAST)
    assert rep.mode == "fit" and rep.fitted == 253


def test_state_saved_before_the_package_rename_still_loads(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data dir analyzed by a version installed as top-level `indexer` keeps its fitted map: the saved
    state names `indexer.analysis...` classes, read now as `edgeminer.indexer.analysis...`."""
    import sys

    import edgeminer.indexer as pkg
    import edgeminer.indexer.analysis as analysis_pkg
    import edgeminer.indexer.analysis.clustering as clustering

    syn = _synth(store)
    with monkeypatch.context() as m:  # pickle the state the way the old layout named its classes
        m.setitem(sys.modules, "indexer", pkg)
        m.setitem(sys.modules, "indexer.analysis", analysis_pkg)
        m.setitem(sys.modules, "indexer.analysis.clustering", clustering)
        m.setattr(clustering.Clusterer, "__module__", "indexer.analysis.clustering")
        analyze(store, "synth", FAST)
    doc = load_analysis(store, "synth") or {}
    assert b"indexer.analysis.clustering" in (Path(store.uri) / doc["state"]["file"]).read_bytes()
    assert "indexer" not in sys.modules
    store.upsert_samples("synth", _new_rows(syn, near_cluster=0, n=3))
    rep = analyze(Store(store.uri), "synth", FAST)
    assert rep.mode == "transform" and rep.transformed == 3
