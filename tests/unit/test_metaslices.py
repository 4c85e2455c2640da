"""Metadata slices (indexer/analysis/metaslices.py) on a planted metadata slice, checked against the
reference implementation (pip ``sliceline``) on the same binned features and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from metafactory import make_planted_meta

from edgeminer.indexer.analysis import metaslices as ms
from edgeminer.indexer.errors import NotFound, ValidationFailed
from edgeminer.indexer.store import Store


def _sliceline_top(store: Store, name: str, *, k: int, max_l: int, min_sup: int) -> list[set[tuple[str, str]]]:
    """sliceline.Slicefinder's top-k slices over our binned features, as sets of (field, bin)."""
    from sliceline import Slicefinder

    info = store.get_dataset(name)
    rows = ms._load_rows(store, name, ms.slice_fields(info), include_train=False)
    features = ms.build_features(rows.table, info)
    x = np.full((rows.table.num_rows, len(features)), "~none", dtype=object)
    for j, f in enumerate(features):
        for b in f.bins:
            x[b.mask, j] = b.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf = Slicefinder(alpha=0.95, k=k, max_l=max_l, min_sup=min_sup, verbose=False)
        sf.fit(x[rows.judged], rows.errors[rows.judged].astype(float))
    return [{(features[j].field, v) for j, v in enumerate(top) if v is not None} for top in sf.top_slices_]


def test_planted_slice_is_the_top_slice_and_matches_sliceline(store: Store) -> None:
    make_planted_meta(store)
    doc = ms.load_slices(store, "planted", ms.SliceParams(top_k=5, refinements=True))  # as SliceLine lists
    top = doc["slices"][0]
    assert {(c["field"], c["bin"]) for c in top["conditions"]} == {("camera", "C"), ("img_brightness", "dark")}
    assert top["error_rate"] > 0.55 and top["lift"] > 4 and top["unlabeled"] > 0
    assert top["summary"].startswith("camera=C and img_brightness=dark: ")
    assert "x the base rate" in top["summary"] and "unlabeled" in top["summary"]
    reference = _sliceline_top(store, "planted", k=5, max_l=2, min_sup=doc["min_sup"])
    ours = [{(c["field"], c["bin"]) for c in s["conditions"]} for s in doc["slices"]]
    assert ours == reference  # same slices, same order
    assert doc["judged_on"] == "labeled rows outside the train split"


def test_narrower_slices_that_add_nothing_are_left_out(store: Store) -> None:
    """SliceLine also lists the planted slice with the weather added (camera=C, dark and rain: the same
    70% planted rate, fewer rows). By default such a refinement is left out when it is not wrong
    significantly more often than the rest of its parent, so a listed slice never narrows a listed
    slice to a lower error rate; everything listed is in SliceLine's list, in its order."""
    make_planted_meta(store)
    every = ms.compute_slices(store, "planted", ms.SliceParams(max_l=3, top_k=20, refinements=True))
    doc = ms.compute_slices(store, "planted", ms.SliceParams(max_l=3, top_k=20))
    conds = [{(c["field"], c["bin"]) for c in s["conditions"]} for s in doc["slices"]]
    every_conds = [{(c["field"], c["bin"]) for c in s["conditions"]} for s in every["slices"]]
    planted = {("camera", "C"), ("img_brightness", "dark")}
    assert conds[0] == every_conds[0] == planted
    narrowed = [c for c in every_conds if planted < c]
    assert narrowed and not any(planted < c for c in conds)  # SliceLine lists it with the weather; we do not
    assert [c for c in every_conds if c in conds] == conds
    rates = {frozenset(c): s["error_rate"] for c, s in zip(conds, doc["slices"], strict=True)}
    for c, s in zip(conds, doc["slices"], strict=True):
        for parent in (frozenset(c - {x}) for x in c if len(c) > 1):
            assert parent not in rates or s["error_rate"] > rates[parent], (c, parent)
    assert "raises the error rate" in doc["method"] and "raises" not in every["method"]


def test_counts_and_filters_describe_the_slice_rows(store: Store) -> None:
    planted = make_planted_meta(store)
    doc = ms.load_slices(store, "planted")
    top = doc["slices"][0]
    info = store.get_dataset("planted")
    rows = store.query("planted", where=ms.slice_where(info, top), columns=["id", "split", "labeled", "correct"])
    got = rows.to_pylist()
    assert len(got) == top["rows"]
    judged = [r for r in got if r["labeled"] and r["split"] != "train"]
    assert len(judged) == top["judged"] and sum(not r["correct"] for r in judged) == top["errors"]
    assert sum(not r["labeled"] for r in got) == top["unlabeled"]
    assert all(planted.in_slice[r["id"]] for r in got)  # the dark bin is <= the 20th percentile: inside


def test_cached_per_table_version(store: Store) -> None:
    make_planted_meta(store)
    first = ms.load_slices(store, "planted")
    again = ms.load_slices(store, "planted")
    assert again["computed_at"] == first["computed_at"] and again["slices"] == first["slices"]
    store.update_where("planted", "id = 'r00000'", {"meta_camera": "'Z'"})  # the table moves on
    fresh = ms.load_slices(store, "planted")
    assert fresh["version"] > first["version"] and fresh["computed_at"] != first["computed_at"]
    overview = ms.slices_overview(store, "planted")
    assert overview["stale"] is False and overview["clusters"] == {"analyzed": False, "stale": False, "items": []}


def test_level3_and_parameters(store: Store) -> None:
    make_planted_meta(store)
    doc = ms.compute_slices(store, "planted", ms.SliceParams(max_l=3, top_k=20, refinements=True))
    assert any(len(s["conditions"]) == 3 for s in doc["slices"])
    assert doc["slices"][0]["description"] == "camera=C and img_brightness=dark"
    with pytest.raises(ValidationFailed, match="max_l"):
        ms.compute_slices(store, "planted", ms.SliceParams(max_l=5))
    with pytest.raises(NotFound, match="no metadata slice 99"):
        ms.get_slice(store, "planted", 99)


def test_fields_leave_out_a_field_and_unknown_ones_are_named(store: Store) -> None:
    """``fields`` slices on those fields only: without ``camera`` the planted slice's other half is all
    that is left of it, and no slice names the camera."""
    make_planted_meta(store)
    info = store.get_dataset("planted")
    every = ms.compute_slices(store, "planted")
    others = [f for f in ms.slice_fields(info) if f != "camera"]
    doc = ms.compute_slices(store, "planted", fields=others)
    assert {f["field"] for f in every["features"]} - {f["field"] for f in doc["features"]} == {"camera"}
    assert doc["slices"] and all(c["field"] != "camera" for s in doc["slices"] for c in s["conditions"])
    assert doc["slices"][0]["description"] == "img_brightness=dark"
    assert doc["slices"][0]["error_rate"] < every["slices"][0]["error_rate"]
    with pytest.raises(ValidationFailed, match="no metadata field 'lens'.*camera"):
        ms.compute_slices(store, "planted", fields=["camera", "lens"])


def test_no_errors_means_no_slices(store: Store) -> None:
    make_planted_meta(store)
    store.update_where("planted", "labeled = true", {"correct": "true"})
    doc = ms.load_slices(store, "planted")
    assert doc["slices"] == [] and doc["base_error_rate"] == 0.0


def test_cached_documents_leave_the_analysis_document_alone(store: Store) -> None:
    """Doc ids are unique across kinds in the docs table: the caches must not overwrite ``current``."""
    from edgeminer.indexer.analysis.label_issues import LabelIssueParams, load_label_issues

    make_planted_meta(store)
    analysis = {"run_id": "r1", "version_written": store.version("planted"), "clusters": []}
    store.put_doc("planted", "analysis", "current", analysis, name="analysis")
    ms.load_slices(store, "planted")
    load_label_issues(store, "planted", LabelIssueParams(train_rows="skip", other_rows="model"))
    assert store.get_doc("planted", "analysis", "current")["run_id"] == "r1"
    overview = ms.slices_overview(store, "planted")
    assert overview["clusters"]["analyzed"] is True and overview["clusters"]["stale"] is False
