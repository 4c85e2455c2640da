"""Label issues (indexer/analysis/label_issues.py): the same rows as cleanlab's confident learning on the
same probabilities, and planted label noise found at a known rate, train rows included (via the probe)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from metafactory import make_noisy_labels

from edgeminer.indexer.analysis.label_issues import (
    LabelIssueParams,
    compute_label_issues,
    confident_learning,
    issue_ids,
    load_label_issues,
)
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store
from edgeminer.service.filters import build_where


def _pr(found: list[str], flipped: dict[str, bool], split: dict[str, str], which: str) -> tuple[float, float]:
    got = {i for i in found if split[i] == which}
    truth = {i for i, f in flipped.items() if f and split[i] == which}
    hit = len(got & truth)
    return hit / max(len(got), 1), hit / max(len(truth), 1)


def test_confident_learning_is_cleanlabs() -> None:
    from cleanlab.filter import find_label_issues

    rng = np.random.default_rng(1)
    for n_classes in (2, 5, 10):
        labels = rng.integers(0, n_classes, size=600)
        logits = rng.normal(size=(600, n_classes)) + 2.5 * np.eye(n_classes)[labels]
        flip = rng.random(600) < 0.15
        labels = np.where(flip, (labels + 1) % n_classes, labels)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        ours, _, _ = confident_learning(labels, probs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = find_label_issues(labels, probs, filter_by="confident_learning")
        assert np.array_equal(ours, theirs)
    # a class nobody is labeled with (labels 0-3 of 5 classes)
    labels = rng.integers(0, 4, size=300)
    probs = rng.dirichlet(np.ones(5), size=300)
    ours, guess, thresholds = confident_learning(labels, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(ours, find_label_issues(labels, probs, filter_by="confident_learning"))
    assert thresholds[4] > 1  # never confident by its own threshold (argmax of several may still be 4)


@pytest.mark.slow
def test_planted_noise_is_found_on_val_and_train_rows(store: Store) -> None:
    from cleanlab.filter import find_label_issues

    noisy = make_noisy_labels(store, noise=0.1, seed=0)
    doc = compute_label_issues(store, noisy.name)
    found = [i["id"] for i in doc["issues"]]
    val_p, val_r = _pr(found, noisy.flipped, noisy.split, "val")
    train_p, train_r = _pr(found, noisy.flipped, noisy.split, "train")
    # measured (seeds 0-2, 10% and 20% noise), every row by the probe: val P 0.96-1.00 R 0.69-0.79, train P
    # 0.94-0.99 R 0.70-0.82; val by the model's probabilities: P 0.97-1.00 R 0.64-0.72 (cleanlab's default
    # prune_by_noise_rate on those: P 0.87-0.98 R 0.74-0.85)
    assert val_p >= 0.9 and val_r >= 0.6 and train_p >= 0.85 and train_r >= 0.6
    # the model's own train probabilities have memorised the noisy labels (a forest: recall 0 measured)
    model_doc = compute_label_issues(store, noisy.name, LabelIssueParams(train_rows="model", other_rows="model"))
    _, model_train_r = _pr([i["id"] for i in model_doc["issues"]], noisy.flipped, noisy.split, "train")
    assert model_train_r < train_r / 2
    # cleanlab on the same val probabilities: its confident-learning rows are exactly ours
    by_model = compute_label_issues(store, noisy.name, LabelIssueParams(train_rows="skip", other_rows="model"))
    val = np.array([noisy.split[i] == "val" for i in noisy.ids])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = find_label_issues(noisy.labels[val], noisy.probs[val], filter_by="confident_learning")
    val_ids = [i for i, v in zip(noisy.ids, val, strict=True) if v]
    assert {val_ids[i] for i in np.flatnonzero(theirs)} == {i["id"] for i in by_model["issues"]}
    assert by_model["counts"] == {"labeled": len(noisy.ids), "model": int(val.sum()), "probe": 0,
                                  "not_judged": int((~val).sum())}  # fmt: skip
    assert doc["counts"]["probe"] == len(noisy.ids) and doc["counts"]["model"] == 0
    ranks = [i["self_confidence"] for i in doc["issues"]]
    assert ranks == sorted(ranks) and all(i["label"] != i["suggested"] for i in doc["issues"])


def test_skip_leaves_train_rows_out_and_the_filter_uses_the_cache(store: Store) -> None:
    noisy = make_noisy_labels(store, noise=0.15, seed=3)
    doc = load_label_issues(store, noisy.name, LabelIssueParams(train_rows="skip", other_rows="model"))
    assert all(noisy.split[i["id"]] == "val" for i in doc["issues"]) and doc["counts"]["probe"] == 0
    assert doc["counts"]["not_judged"] == sum(s == "train" for s in noisy.split.values())
    ids = issue_ids(store, noisy.name)  # the default (probe) parameters: computed and cached
    assert load_label_issues(store, noisy.name)["computed_at"] == load_label_issues(store, noisy.name)["computed_at"]
    info, schema = store.get_dataset(noisy.name), store.schema(noisy.name)
    where = build_where(info, schema, [{"field": "label_issue", "op": "eq", "value": True}], store=store)
    assert where is not None
    assert sorted(store.query(noisy.name, where=where, columns=["id"])["id"].to_pylist()) == sorted(ids)
    not_issue = build_where(info, schema, [{"field": "label_issue", "value": False}], store=store)
    assert store.count(noisy.name, not_issue) == len(noisy.ids) - len(ids)
    from edgeminer.indexer.errors import InvalidFilter
    from edgeminer.service.mining import Seeds, mine

    mined = mine(store, noisy.name, Seeds(label_issues=True), budget=5, include_labeled=True)
    assert set(mined.seeds.ids) == set(ids) and len(mined.rows) == 5 and not {r["id"] for r in mined.rows} & set(ids)

    with pytest.raises(InvalidFilter, match="label_issue"):
        build_where(info, schema, [{"field": "label_issue", "value": True}])  # no store: refused, clearly
    with pytest.raises(InvalidFilter, match="eq or ne"):
        build_where(info, schema, [{"field": "label_issue", "op": "gt", "value": 1}], store=store)
    with pytest.raises(ValidationFailed, match="train_rows"):
        compute_label_issues(store, noisy.name, LabelIssueParams(train_rows="all"))
    with pytest.raises(ValidationFailed, match="other_rows"):
        compute_label_issues(store, noisy.name, LabelIssueParams(other_rows="skip"))
