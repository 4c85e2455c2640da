"""Label issues: labeled rows whose label is likely wrong, by confident learning over class probabilities.

The method is cleanlab's ``find_label_issues(filter_by="confident_learning")`` (Northcutt et al., JAIR
2021), implemented here in numpy (:func:`confident_learning`; tests/unit/test_label_issues.py checks it
gives the same rows as cleanlab 2.9): per class ``k`` a threshold ``t_k`` = the mean probability of ``k``
over the rows labeled ``k``; a row's confident class is the one class whose probability reaches its
threshold (the most probable of several); a row whose confident class is not its label is an issue,
unless the model's top class is the label anyway. Issues are ranked by self-confidence (the probability
of the given label), lowest first.

Not judging a model on its own training rows
    Stored probabilities of ``train`` rows come from the model that was fitted to those very labels: it
    has learnt them (noisy ones included), so its confidence there says little about the label. So train
    rows are judged with out-of-fold probabilities of a cross-validated logistic-regression probe on the
    stored embeddings (each row predicted by a probe that never saw it; ``train_rows="probe"``), or left
    out (``"skip"``), or, if asked, judged by the stored probabilities anyway (``"model"``).

    The other labeled rows are judged by the probe too by default (``other_rows="probe"``), or by the
    stored model probabilities (``"model"``). Measured: on digits with 10-20% planted label noise, the
    probe finds val label errors as precisely as the model's probabilities and with more recall; on the
    demo, whose labels are all right but whose model fails systematically on planted slices, the model's
    probabilities flag 48 val rows (41 of them slice failures: model errors, not label errors) and the
    probe 2. Each group (model / probe) gets its own thresholds. Rows without probabilities (model) or
    embeddings (probe) are not judged.

Caching
    :func:`load_label_issues` keeps the result as the ``label_issues`` document ``label-issues`` with the
    samples table version it read, and recomputes when the version or the parameters differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeminer.indexer.analysis.cache import load_or_compute
from edgeminer.indexer.documents import now_iso
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import Store, embeddings_to_numpy
from edgeminer.indexer.where import ok_and

__all__ = [
    "LABEL_ISSUES_DOC",
    "OTHER_ROWS",
    "TRAIN_ROWS",
    "LabelIssueParams",
    "compute_label_issues",
    "confident_learning",
    "issue_ids",
    "load_label_issues",
    "probe_probabilities",
]

LABEL_ISSUES_DOC = "label_issues"
DOC_ID = "label-issues"  # doc ids are unique across kinds: not "current" (the analysis document)
TRAIN_ROWS = ("probe", "skip", "model")
OTHER_ROWS = ("probe", "model")
#: issues kept in the document (the count covers all).
MAX_STORED = 50_000
#: most rows the probe is fitted on (a random subset above; every labeled row is still predicted).
PROBE_MAX_ROWS = 200_000
#: cleanlab's tolerance in the threshold test and the "top class is the label anyway" test.
EPS = 1e-6


@dataclass(frozen=True)
class LabelIssueParams:
    """``train_rows``: how train rows are judged (probe | skip | model); ``other_rows``: how the other
    labeled rows are (probe | model); ``folds``: the probe's folds."""

    train_rows: str = "probe"
    other_rows: str = "probe"
    folds: int = 5
    seed: int = 0

    def check(self) -> None:
        if self.train_rows not in TRAIN_ROWS:
            raise ValidationFailed(
                f"train_rows must be one of {', '.join(TRAIN_ROWS)}, not {self.train_rows!r}", field="train_rows"
            )
        if self.other_rows not in OTHER_ROWS:
            raise ValidationFailed(
                f"other_rows must be one of {', '.join(OTHER_ROWS)}, not {self.other_rows!r}", field="other_rows"
            )
        if not 2 <= self.folds <= 20:
            raise ValidationFailed(f"folds must be between 2 and 20, not {self.folds}", field="folds")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def confident_learning(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident learning's label issues.

    Parameters
    ----------
    labels : (n,) int array, the given labels (class indices)
    probs : (n, C) out-of-sample class probabilities

    Returns
    -------
    (issue mask, confident class per row (-1 when none reaches its threshold), thresholds (C,))
    """
    n, n_classes = probs.shape
    thresholds = np.full(n_classes, 2.0)  # a class nobody is labeled with is never confident
    for k in range(n_classes):
        mine = labels == k
        if mine.any():
            thresholds[k] = max(probs[mine, k].mean(), 2 * EPS)  # cleanlab's lower bound
    confident = probs >= thresholds - EPS
    count = confident.sum(axis=1)
    guess = np.where(count > 1, probs.argmax(axis=1), confident.argmax(axis=1))
    guess = np.where(count > 0, guess, -1)
    issues = (guess >= 0) & (guess != labels)
    bumped = probs.copy()
    bumped[np.arange(n), labels] += EPS
    issues &= bumped.argmax(axis=1) != labels
    return issues, guess, thresholds


def probe_probabilities(
    vectors: np.ndarray, labels: np.ndarray, n_classes: int, *, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold class probabilities of a logistic-regression probe on ``vectors``: each row is
    predicted by a probe fitted on the other folds (at most PROBE_MAX_ROWS rows of them)."""
    from sklearn.linear_model import LogisticRegression

    n = len(labels)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    out = np.zeros((n, n_classes))
    for f in range(folds):
        fit_rows = np.flatnonzero(fold != f)
        if len(fit_rows) > PROBE_MAX_ROWS:
            fit_rows = rng.choice(fit_rows, size=PROBE_MAX_ROWS, replace=False)
        test_rows = np.flatnonzero(fold == f)
        present = np.unique(labels[fit_rows])
        if len(present) < 2:  # one class only: the probe can only say that class
            out[np.ix_(test_rows, present)] = 1.0
            continue
        probe = LogisticRegression(max_iter=300, C=1.0)
        probe.fit(vectors[fit_rows], labels[fit_rows])
        out[np.ix_(test_rows, probe.classes_)] = probe.predict_proba(vectors[test_rows])
    return out


# ---------------------------------------------------------------------------------------------
# over a dataset
# ---------------------------------------------------------------------------------------------


@dataclass
class _Judged:
    ids: list[str]
    split: list[str]
    labels: np.ndarray
    probs: np.ndarray
    source: str  # model | probe


def _labeled_rows(store: Store, dataset: str, with_embedding: bool) -> tuple[pa.Table, list[str]]:
    info = store.get_dataset(dataset)
    cols = ["id", "split", "label", "probs", *(["embedding"] if with_embedding else [])]
    table = store.query(dataset, where=ok_and("labeled = true", "label IS NOT NULL"), columns=cols)
    known = pc.is_in(table.column("label"), value_set=pa.array(info.classes, pa.string()))
    return table.filter(known), list(info.classes)


def _probs_matrix(column: pa.ChunkedArray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows with probabilities as a bool mask, their (m, C) matrix padded with zeros for classes added
    after the model's)."""
    values = column.to_pylist()
    has = np.array([v is not None and len(v) > 0 for v in values], dtype=bool)
    out = np.zeros((int(has.sum()), n_classes))
    for row, v in enumerate(v for v in values if v is not None and len(v) > 0):
        out[row, : min(len(v), n_classes)] = v[:n_classes]
    sums = out.sum(axis=1, keepdims=True)
    sums[sums == 0] = 1.0
    return has, out / sums


def _groups(store: Store, dataset: str, params: LabelIssueParams) -> tuple[list[_Judged], dict[str, int], list[str]]:
    """The judged groups (stored probabilities, the probe's out-of-fold ones) and row counts."""
    table, classes = _labeled_rows(store, dataset, "probe" in (params.train_rows, params.other_rows))
    index = {c: i for i, c in enumerate(classes)}
    split = pc.fill_null(table.column("split"), "").to_pylist()
    is_train = np.array([s == "train" for s in split], dtype=bool)
    labels = np.array([index[v] for v in table.column("label").to_pylist()], dtype=np.int64)
    has, probs = _probs_matrix(table.column("probs"), len(classes))
    ids = table.column("id").to_pylist()
    counts = {"labeled": table.num_rows, "model": 0, "probe": 0, "not_judged": 0}
    use_model = has & np.where(is_train, params.train_rows == "model", params.other_rows == "model")
    use_probe = np.where(is_train, params.train_rows == "probe", params.other_rows == "probe")
    groups = []
    if use_model.any():
        pos = np.flatnonzero(use_model)
        prob_rows = np.cumsum(has) - 1
        groups.append(
            _Judged([ids[i] for i in pos], [split[i] for i in pos], labels[pos], probs[prob_rows[pos]], "model")
        )
        counts["model"] = len(pos)
    if use_probe.any():
        probe = _probe_group(table, labels, use_probe, ids, split, len(classes), params)
        if probe is not None:
            groups.append(probe)
            counts["probe"] = len(probe.ids)
    counts["not_judged"] = counts["labeled"] - counts["model"] - counts["probe"]
    return groups, counts, classes


def _probe_group(
    table: pa.Table,
    labels: np.ndarray,
    use: np.ndarray,
    ids: list[str],
    split: list[str],
    n_classes: int,
    params: LabelIssueParams,
) -> _Judged | None:
    """The rows of ``use`` judged by the probe's out-of-fold probabilities (the probe is fitted on every
    labeled row with an embedding; only the predictions of the rows of ``use`` are kept)."""
    has_emb = pc.is_valid(table.column("embedding")).to_numpy(zero_copy_only=False).astype(bool)
    rows = np.flatnonzero(has_emb)
    if not (use & has_emb).any() or len(np.unique(labels[rows])) < 2:
        return None
    dim = table.schema.field("embedding").type.list_size
    vectors = embeddings_to_numpy(table.column("embedding").take(pa.array(rows)), dim)
    oof = probe_probabilities(vectors, labels[rows], n_classes, folds=params.folds, seed=params.seed)
    keep = use[rows]
    pos = rows[keep]
    return _Judged([ids[i] for i in pos], [split[i] for i in pos], labels[pos], oof[keep], "probe")


def compute_label_issues(store: Store, dataset: str, params: LabelIssueParams | None = None) -> dict[str, Any]:
    """Find the label issues of ``dataset`` now (no cache): the document :func:`load_label_issues` keeps."""
    params = params or LabelIssueParams()
    params.check()
    version = store.version(dataset)
    groups, counts, classes = _groups(store, dataset, params)
    issues: list[dict[str, Any]] = []
    thresholds: dict[str, dict[str, float]] = {}
    for g in groups:
        mask, guess, th = confident_learning(g.labels, g.probs)
        thresholds[g.source] = {c: float(t) for c, t in zip(classes, th, strict=True)}
        for i in np.flatnonzero(mask):
            issues.append(
                {
                    "id": g.ids[i],
                    "split": g.split[i],
                    "label": classes[g.labels[i]],
                    "suggested": classes[guess[i]],
                    "self_confidence": float(g.probs[i, g.labels[i]]),
                    "suggested_confidence": float(g.probs[i, guess[i]]),
                    "judged_by": g.source,
                }
            )
    issues.sort(key=lambda d: (d["self_confidence"], d["id"]))
    for rank, item in enumerate(issues, start=1):
        item["rank"] = rank
    return {
        "dataset": dataset,
        "version": version,
        "computed_at": now_iso(),
        "params": params.as_dict(),
        "method": "confident learning (cleanlab filter_by=confident_learning), ranked by self-confidence",
        "counts": counts,
        "thresholds": thresholds,
        "count": len(issues),
        "truncated": len(issues) > MAX_STORED,
        "issues": issues[:MAX_STORED],
    }


def load_label_issues(
    store: Store, dataset: str, params: LabelIssueParams | None = None, *, refresh: bool = False
) -> dict[str, Any]:
    """The label issues at the table's current version: the cached document when it was computed at
    this version with these parameters, else computed now and cached."""
    params = params or LabelIssueParams()
    params.check()
    checked = params

    def compute() -> dict[str, Any]:
        return compute_label_issues(store, dataset, checked)

    return load_or_compute(store, dataset, LABEL_ISSUES_DOC, DOC_ID, params.as_dict(), compute, refresh=refresh)


def issue_ids(store: Store, dataset: str) -> list[str]:
    """The ids of the label issues (default parameters), most likely mislabeled first."""
    return [item["id"] for item in load_label_issues(store, dataset)["issues"]]
