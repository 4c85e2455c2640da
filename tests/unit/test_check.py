"""Integrity of a dataset on disk: Store.check reads every fragment and reports what is wrong (never
raises for it), search never returns a vector that went bad after it was written, writes refuse NaN
vectors, and `edgeminer check` exits 0 / 1 / 2. The damage is real: bytes overwritten or files cut in
the LanceDB tables a real Store wrote (tests/corruption.py)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from corruption import HUGE_BYTES, NAN_BYTES, corrupt_vectors, data_files, truncate
from factories import Synthetic, make_synthetic

from edgeminer.indexer.embedders import EmbedOutput
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import CheckReport, SchemaMismatch, Store, embeddings_to_numpy
from edgeminer.service.cli import main

NAN_IDS = [f"c1-{j:03d}" for j in range(40, 52)]  # 12 vectors of cluster 1 -> NaN
HUGE_IDS = [f"c1-{j:03d}" for j in range(52, 56)]  # 4 -> 3.39e38 (finite, overflows every distance)
BAD = set(NAN_IDS) | set(HUGE_IDS)


@pytest.fixture
def synth(store: Store) -> Synthetic:
    return make_synthetic(store, "ds", n_clusters=5, per_cluster=60, dim=16)  # 300 rows, one fragment


def _problems(report: CheckReport, table: str = "samples") -> dict[str, Any]:
    return {p.kind: p for t, p in report.problems() if t == table}


def test_a_healthy_dataset_checks_clean(store: Store, synth: Synthetic) -> None:
    store.ensure_indexes("ds", force=True)  # IVF_PQ + scalar indexes: each must answer
    store.put_doc("ds", "issue", "i1", {"name": "x"})
    seen: list[tuple[int, int]] = []
    report = store.check("ds", progress=lambda done, total, msg: seen.append((done, total)))
    assert report.ok, report.summary()
    samples, docs = report.tables
    assert (samples.fragments, samples.fragments_read, samples.rows, samples.expected_rows) == (1, 1, 300, 300)
    assert docs.rows == docs.expected_rows == 1
    assert any("embedding" in name for name in samples.indexes) and len(samples.indexes) >= 5
    assert seen and seen[-1][0] == seen[-1][1] == samples.fragments + docs.fragments
    assert "no problems found" in report.summary()
    json.dumps(report.to_dict())  # serialisable for --json


def test_overwritten_vectors_are_found_and_never_searched(store: Store, synth: Synthetic) -> None:
    store.ensure_indexes("ds", force=True)  # the index keeps the old codes: corruption comes after it
    query = synth.vectors[synth.ids.index(NAN_IDS[0])]  # nearest rows would be the damaged ones
    corrupt_vectors(store.uri, "ds", NAN_IDS, NAN_BYTES)
    corrupt_vectors(store.uri, "ds", HUGE_IDS, HUGE_BYTES)

    # the corruption is silent to an ordinary read: same rows, changed values
    fresh = Store(store.uri)
    table = fresh.query("ds", columns=["id", "embedding"])
    m = embeddings_to_numpy(table["embedding"], 16)
    changed = {i for i, row in zip(table["id"].to_pylist(), m, strict=True) if not np.isfinite(row).all()}
    assert changed == set(NAN_IDS) and np.nanmax(np.abs(m)) > 1e38

    report = fresh.check("ds")
    assert not report.ok
    found = _problems(report)
    assert set(found) == {"non_finite_vector", "vector_overflow"}, report.summary()
    assert sorted(found["non_finite_vector"].ids) == sorted(NAN_IDS) and found["non_finite_vector"].count == 12
    assert sorted(found["vector_overflow"].ids) == sorted(HUGE_IDS)
    assert found["non_finite_vector"].fragment == 0 and len(found["non_finite_vector"].rows) == 12
    assert report.tables[0].rows == 300  # the file still reads to the end

    for kwargs in ({"exact": True}, {"exact": False}, {"exact": False, "refine_factor": None}):
        res = fresh.search("ds", query, k=20, **kwargs)  # type: ignore[arg-type]
        assert res.num_rows == 20, kwargs
        assert not BAD & set(res["id"].to_pylist()), kwargs
        assert np.isfinite(embeddings_to_numpy(res["embedding"], 16)).all()
        assert np.isfinite(res["_distance"].to_numpy()).all()
        ids_only = fresh.search("ds", query, k=20, columns=["id"], **kwargs)  # type: ignore[arg-type]
        assert ids_only.column_names == ["id", "_distance"]
        assert ids_only["id"].to_pylist() == res["id"].to_pylist()
    everything = fresh.search("ds", query, k=1000, exact=True)
    assert everything.num_rows == 300 - len(BAD)
    with pytest.raises(SchemaMismatch, match="NaN"):
        fresh.search("ds", np.full(16, np.nan, np.float32), k=5)


def test_a_truncated_file_is_reported_not_raised(
    store: Store, synth: Synthetic, capsys: pytest.CaptureFixture[str]
) -> None:
    # a second fragment (new rows land in a new file), then the first file is cut in half
    extra = [
        {"id": f"new-{i}", "status": "ok", "embedding": np.eye(16, dtype=np.float32)[i].tolist()} for i in range(10)
    ]
    store.upsert_samples("ds", extra)
    first = data_files(store.uri, "ds")[0]
    truncate(first)

    fresh = Store(store.uri)
    report = fresh.check("ds")
    samples = report.tables[0]
    assert (samples.fragments, samples.fragments_read) == (2, 1)
    assert samples.rows == 10 and samples.expected_rows == 310
    found = _problems(report)
    assert {"file_size", "unreadable_fragment"} <= set(found), report.summary()
    assert found["unreadable_fragment"].fragment == 0 and found["unreadable_fragment"].count == 300
    assert "truncated" in found["file_size"].message and first.name in found["file_size"].message
    assert "/rustc/" not in report.summary() and ".rs:" not in report.summary()

    reason = fresh.unreadable_reason("ds")
    assert reason is not None and first.name in reason and str(store.uri) not in reason
    assert Store(store.uri).unreadable_reason("ds") == reason  # a fresh process finds it too

    assert main(["--data-dir", store.uri, "check", "--dataset", "ds", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "[samples fragment 0] unreadable_fragment: reading failed after 0 of 300 rows" in captured.out
    assert "Traceback" not in captured.err + captured.out


def test_logical_problems_duplicates_missing_vectors_bad_documents(store: Store, synth: Synthetic) -> None:
    tbl = store._samples("ds")  # write around the store's own validation, as a buggy writer or tool would
    dup = store.get_samples("ds", ["c0-000"])
    tbl.add(dup)
    no_vec = store.get_samples("ds", ["c0-001"]).to_pylist()[0]
    no_vec.update(id="novec", embedding=None)
    tbl.add(pa.Table.from_pylist([no_vec], schema=tbl.schema))
    docs = store._docs("ds")
    now = dt.datetime.now(dt.UTC)
    docs.add(
        pa.table(
            {
                "id": ["d1"],
                "kind": ["issue"],
                "name": [""],
                "doc": ["{not json"],
                "created_at": [now],
                "updated_at": [now],
            },
            schema=docs.schema,
        )
    )
    report = store.check("ds")
    found = _problems(report)
    assert found["duplicate_id"].ids == ["c0-000"] and found["duplicate_id"].count == 2
    assert found["missing_vector"].ids == ["novec"]
    assert _problems(report, "docs")["bad_document"].ids == ["d1"]


def test_a_damaged_index_is_reported(store: Store, synth: Synthetic) -> None:
    store.ensure_indexes("ds", force=True)
    index_files = sorted((Path(store.uri) / "ds__samples.lance" / "_indices").rglob("*"))
    vector_files = [f for f in index_files if f.is_file() and f.stat().st_size > 4096]
    assert vector_files
    for f in vector_files:
        truncate(f, 0.3)
    report = Store(store.uri).check("ds")
    assert "index" in _problems(report), report.summary()


def test_writes_refuse_non_finite_vectors(store: Store, synth: Synthetic) -> None:
    before = store.version("ds")
    rows = [
        {"id": "fine", "status": "ok", "embedding": [0.25] * 16},
        {"id": "nan", "status": "ok", "embedding": [math.nan] + [0.0] * 15},
        {"id": "inf", "status": "ok", "embedding": [math.inf] * 16},
    ]
    with pytest.raises(SchemaMismatch, match=r"2 vector\(s\).*'nan', 'inf'"):
        store.upsert_samples("ds", rows)
    with pytest.raises(SchemaMismatch, match="'c0-000'"):
        store.update_columns(
            "ds", pa.table({"id": ["c0-000"], "embedding": pa.array([[1e20] * 16], pa.list_(pa.float32(), 16))})
        )
    assert store.version("ds") == before and store.count("ds") == 300


class _NanEmbedder:
    """A model that returns NaN for the first image of each batch."""

    kind = "fake"
    dim = 4
    classes = None

    def config(self) -> dict[str, Any]:
        return {"kind": "fake", "dim": 4}

    def preprocess(self, image: Any) -> np.ndarray:
        return np.zeros(4, np.float32)

    def embed_batch(self, batch: np.ndarray) -> EmbedOutput:
        e = np.full((len(batch), 4), 0.5, np.float32)
        e[0] = np.nan
        return EmbedOutput(e)


def _images(tmp_path: Path, n: int) -> list[str]:
    from PIL import Image

    out = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(path)
        out.append(str(path))
    return out


def test_ingest_turns_nan_vectors_into_error_rows(tmp_path: Path, store: Store) -> None:
    uris = _images(tmp_path, 4)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"m{i}", "uri": u}) + "\n" for i, u in enumerate(uris)))
    report = ingest(store, "model", open_source(manifest), _NanEmbedder(), batch_size=2, progress=False)  # type: ignore[arg-type]
    assert (report.ok_rows, report.error_rows) == (2, 2)
    errors = {r["id"]: r["error"] for r in store.query("model", where="status = 'error'").to_pylist()}
    assert set(errors) == {"m0", "m2"} and all("NaN" in e for e in errors.values())
    assert store.check("model").ok

    # precomputed vectors: NaN -> error row; huge but finite values are normalised (not zeroed)
    rows = [
        {"id": "p0", "uri": uris[0], "embedding": [1.0, 0.0, 0.0, 0.0]},
        {"id": "p1", "uri": uris[1], "embedding": [1e30, 1e30, 0.0, 0.0]},
        {"id": "p2", "uri": uris[2], "embedding": [1.0, None, 0.0, 0.0]},
    ]
    pre = tmp_path / "p.jsonl"
    pre.write_text("".join(json.dumps(r) + "\n" for r in rows).replace("null", "NaN"))
    from edgeminer.indexer.embedders import PrecomputedEmbedder

    report = ingest(store, "pre", open_source(pre), PrecomputedEmbedder(), progress=False)
    assert (report.ok_rows, report.error_rows) == (2, 1)
    ids, vecs = store.vectors("pre")
    assert sorted(ids) == ["p0", "p1"]
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert store.check("pre").ok


def test_cli_check_exit_codes(store: Store, synth: Synthetic, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", store.uri, "check", "--dataset"]
    assert main([*base, "ds", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "300/300 rows" in out

    corrupt_vectors(store.uri, "ds", NAN_IDS[:3], NAN_BYTES)
    assert main([*base, "ds", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "non_finite_vector: 3 vector(s)" in captured.out and NAN_IDS[0] in captured.out
    assert main([*base, "ds", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and sorted(doc["tables"][0]["problems"][0]["ids"]) == sorted(NAN_IDS[:3])

    assert main([*base, "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope' does not exist" in err[0] and "ds" in err[0]


def test_cli_check_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert "NaN" in out and "exit status" in out


def test_mining_never_returns_a_damaged_row(store: Store, synth: Synthetic) -> None:
    """Mining's in-memory exact path (many seeds) reads vectors itself: damaged ones are skipped too."""
    from edgeminer.service.mining import Seeds, mine

    corrupt_vectors(store.uri, "ds", NAN_IDS, NAN_BYTES)
    corrupt_vectors(store.uri, "ds", HUGE_IDS, HUGE_BYTES)
    fresh = Store(store.uri)
    healthy_seeds = [i for i in synth.ids if synth.cluster_of[i] == 1 and i not in BAD and synth.labeled[i]]
    assert len(healthy_seeds) > 4
    result = mine(fresh, "ds", Seeds(ids=healthy_seeds), budget=200, exact=True, include_labeled=True)
    got = [row["id"] for row in result.rows]
    assert result.engine == "exact"
    assert got and not BAD & set(got)
