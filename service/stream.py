"""Stream decisions: should this new production sample be labeled now? (stream-based selective sampling)

A new sample (an uploaded image, an image uri under the media roots, or a vector for datasets with
precomputed embeddings) plus the model's class probabilities is embedded with the dataset's embedder,
scored (``indexer.scores.score_all``), stored in the unlabeled pool (``Store.upsert_samples``) and
decided on. It is a candidate for labeling when

- its confidence (top probability) is below ``confidence_below``, or
- its uncertainty score (``uncertainty``: entropy, margin...; higher = less certain) is at or above
  ``uncertainty_above``, or
- it lies within ``issue_distance`` (cosine distance) of an example flagged in an issue: a new frame
  that looks like a known failure.

A candidate is sent to labeling only while the label budget of the current period (hour / day / week,
or any number of seconds, aligned to the Unix epoch) lasts. :class:`StreamBudget` spends the budget
under a lock, so concurrent requests never overspend it, and it starts each period from the decisions
already recorded, so a restart does not reset it. Every decision is recorded (docs kind ``decision``)
and listable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgeminer.indexer.documents import DECISION, DecisionDoc, DecisionReason, NearestIssue
from edgeminer.indexer.errors import MediaNotFound, MediaOutsideRoots
from edgeminer.indexer.roots import root_pairs
from edgeminer.indexer.store import UNCERTAINTY_COLUMNS, DatasetInfo, Store
from edgeminer.service.media import safe_local_path
from edgeminer.service.mining import MiningError, dataset_embedder, normalize

PERIODS = {"hour": 3600, "day": 86400, "week": 7 * 86400}
#: the folder under a local data dir that keeps uploaded stream images, one subfolder per dataset.
STREAM_UPLOADS = "_stream"
#: one-row fragments the stream leaves before the samples table is compacted (Store.compact).
STREAM_COMPACT_FRAGMENTS = 64
REASONS = ("low_confidence", "high_uncertainty", "near_issue")


class StreamError(MiningError):
    """A stream sample or policy that cannot be decided as sent (a bad probability vector, an unreadable
    image, a uri outside the media roots...)."""


@dataclass
class StreamPolicy:
    """When to send a sample to labeling. Thresholds set to None are not checked."""

    confidence_below: float | None = 0.5
    uncertainty: str = "entropy"
    uncertainty_above: float | None = None
    issue_distance: float | None = 0.1
    issues: list[str] | None = None  # None: every issue of the dataset
    budget: int = 100  # labels per period
    period: str | int = "day"

    def period_seconds(self) -> int:
        if isinstance(self.period, str):
            if self.period in PERIODS:
                return PERIODS[self.period]
            if self.period.isdigit():
                return int(self.period)
            raise StreamError(f"period must be one of {', '.join(PERIODS)} or a number of seconds, not {self.period!r}")
        if int(self.period) < 1:
            raise StreamError(f"period must be at least 1 second, not {self.period!r}")
        return int(self.period)

    def check(self) -> None:
        if self.uncertainty not in UNCERTAINTY_COLUMNS:
            raise StreamError(f"uncertainty must be one of {', '.join(UNCERTAINTY_COLUMNS)}, not {self.uncertainty!r}")
        if self.budget < 0:
            raise StreamError(f"budget (labels per period) must be >= 0, not {self.budget}")
        for name in ("confidence_below", "uncertainty_above", "issue_distance"):
            value = getattr(self, name)
            if value is not None and not (0.0 <= float(value) <= 2.0):
                raise StreamError(f"{name} must be between 0 and 1 (2 for a distance), not {value}")
        self.period_seconds()


def period_start(now: dt.datetime, seconds: int) -> dt.datetime:
    ts = int(now.timestamp())
    return dt.datetime.fromtimestamp(ts - ts % seconds, dt.UTC)


class StreamBudget:
    """Labels sent per (dataset, period). ``try_spend`` is atomic: check and increment under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[tuple[str, str], int] = {}

    def used(self, key: tuple[str, str], load: Callable[[], int]) -> int:
        with self._lock:
            if key not in self._used:
                self._used[key] = int(load())
            return self._used[key]

    def try_spend(self, key: tuple[str, str], budget: int, load: Callable[[], int]) -> tuple[bool, int]:
        """Spend one label if ``used < budget``; returns (spent, used after)."""
        with self._lock:
            if key not in self._used:
                self._used[key] = int(load())
            if self._used[key] < budget:
                self._used[key] += 1
                return True, self._used[key]
            return False, self._used[key]

    def refund(self, key: tuple[str, str]) -> None:
        with self._lock:
            if self._used.get(key, 0) > 0:
                self._used[key] -= 1


@dataclass
class StreamSample:
    """One incoming sample: exactly one of image / uri / embedding, plus probs (or the embedder's)."""

    image: bytes | None = None
    uri: str | None = None
    embedding: Sequence[float] | None = None
    probs: Sequence[float] | None = None
    mc_probs: Sequence[Sequence[float]] | None = None
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    image_field: str = "the uploaded image"  # what error messages call ``image`` (the API: image_base64)


def _array(values: Any, field: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise StreamError(f"{field} must be a list of numbers (a rectangular one for mc_probs): {exc}") from exc


def _sent_in_period(store: Store, dataset: str, start: str) -> int:
    docs = store.list_docs(dataset, DECISION)
    return sum(1 for d in docs if d.get("send") and d.get("period_start") == start)


def _resolve_uri(uri: str, roots: Sequence[str]) -> Path:
    """The image file ``uri`` names, if it lies under one of the dataset's media roots: the rule of the
    media route (service/media.py; a relative uri is looked up under each root). A uri outside the roots
    gets the same answer whether it exists or not (no probing the server's files through this route)."""
    try:
        return safe_local_path(uri, root_pairs(roots))
    except MediaOutsideRoots as exc:
        raise MediaOutsideRoots(
            f"uri {uri!r} is outside the dataset's media roots ({exc.detail}); upload the image or add its "
            "folder as a media root"
        ) from None
    except MediaNotFound:
        raise StreamError(f"uri {uri!r} is not an image file under the media roots; upload the image instead") from None


def decide(
    store: Store,
    dataset: str,
    sample: StreamSample,
    policy: StreamPolicy,
    budget: StreamBudget,
    *,
    embedder: Any = None,
    media_roots: Sequence[str] = (),
    upload_dir: str | Path | None = None,
    now: dt.datetime | None = None,
    device: str = "cpu",
) -> DecisionDoc:
    """Embed, score, store and decide on one sample.

    Parameters
    ----------
    store, dataset, sample
        The store, the dataset the sample joins, the sample (exactly one of image / uri / embedding).
    policy, budget
        When to send a sample for labelling; the labels already spent per period.
    embedder, media_roots, upload_dir, now, device
        The model (default: the dataset's); extra roots a ``uri`` may point into; where an upload is
        saved (None: not saved); the decision time (default: now, UTC); the embedder's device.

    Returns
    -------
    DecisionDoc
        The recorded decision document.

    Raises
    ------
    StreamError
        The input or the policy is invalid.
    MediaOutsideRoots
        ``uri`` lies outside the media roots.
    """
    policy.check()
    info = store.get_dataset(dataset)
    given = [x is not None for x in (sample.image, sample.uri, sample.embedding)]
    if sum(given) != 1:
        raise StreamError("send exactly one of: an image file, a uri on the server, or an embedding vector")
    now = now or dt.datetime.now(dt.UTC)
    uri, data = _read_sample(sample, [*info.media_roots, *media_roots])
    probs, mc = _given_probs(sample)
    vec, content, probs, mc = _sample_vector(store, dataset, info, sample, data, probs, mc, embedder, device)
    scored = _score(dataset, info, vec, probs, mc)
    sample_id = sample.id or "stream-" + hashlib.sha1(content).hexdigest()[:16]
    if sample.image is not None and upload_dir is not None:
        uri = _save_upload(store, dataset, Path(upload_dir), sample_id, sample.image)
    _store_row(store, dataset, info, sample, sample_id, uri, vec, content, scored)
    reasons, near = _reasons(store, dataset, policy, scored.scores, vec)
    return _record_decision(store, dataset, policy, budget, now, sample_id, scored, reasons, near)


@dataclass
class _Scored:
    """A sample's probabilities, scores and top two predictions."""

    probs: np.ndarray
    scores: dict[str, float]
    pred1: str
    pred2: str | None


def _read_sample(sample: StreamSample, roots: Sequence[str]) -> tuple[str | None, bytes | None]:
    """The resolved uri (if the sample names one) and the image bytes (uploaded or read from the uri)."""
    uri: str | None = None
    data: bytes | None = sample.image
    if sample.uri is not None:
        path = _resolve_uri(sample.uri, roots)
        uri = str(path)
        data = path.read_bytes()
    return uri, data


def _given_probs(sample: StreamSample) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The sample's probs (1 x classes) and MC-dropout passes (T x classes), checked, if sent."""
    probs = None if sample.probs is None else _array(sample.probs, "probs").reshape(1, -1)
    mc = None if sample.mc_probs is None else _array(sample.mc_probs, "mc_probs")
    if mc is not None and (mc.ndim != 2 or probs is None or mc.shape[1] != probs.shape[1]):
        raise StreamError("mc_probs must be a list of passes, each as long as probs (shape T x classes)")
    return probs, mc


def _sample_vector(
    store: Store,
    dataset: str,
    info: DatasetInfo,
    sample: StreamSample,
    data: bytes | None,
    probs: np.ndarray | None,
    mc: np.ndarray | None,
    embedder: Any,
    device: str,
) -> tuple[np.ndarray, bytes, np.ndarray | None, np.ndarray | None]:
    """The embedding (given, or computed from the image), the content it hashes, and the probs / MC passes
    (the embedder's, aligned with the dataset's classes, when the sample sent none)."""
    if sample.embedding is not None:
        vec = _array(sample.embedding, "embedding").reshape(1, -1)
        if not np.isfinite(vec).all() or not np.any(vec):
            raise StreamError("embedding must be finite numbers, not all zero")
        return vec, vec.tobytes(), probs, mc
    assert data is not None
    emb = embedder if embedder is not None else dataset_embedder(store, dataset, device=device)
    what = sample.image_field if sample.image is not None else f"uri {sample.uri!r}"
    out = _embed(emb, data, what)
    vec = np.asarray(getattr(out, "embeddings", out), np.float32).reshape(1, -1)
    if probs is None and getattr(out, "probs", None) is not None:
        probs = _align(np.asarray(out.probs, np.float32), getattr(emb, "classes", None), info.classes)
        if mc is None and getattr(out, "mc_probs", None) is not None:
            mc = _align_mc(np.asarray(out.mc_probs, np.float32), getattr(emb, "classes", None), info.classes)
    return vec, data, probs, mc


def _score(
    dataset: str, info: DatasetInfo, vec: np.ndarray, probs: np.ndarray | None, mc: np.ndarray | None
) -> _Scored:
    """Check the embedding's size and the probs against the dataset, then score them."""
    from edgeminer.indexer.scores import classes_for_probs, score_all, top2

    if vec.shape[1] != info.dim:
        raise StreamError(f"the embedding has {vec.shape[1]} values, dataset {dataset!r} stores {info.dim}")
    if probs is None:
        raise StreamError(
            "probs missing: send the model's class probabilities (aligned with the dataset's classes: "
            f"{', '.join(info.classes)})"
        )
    classes = [str(i) for i in range(probs.shape[1])]
    if info.classes:  # a prefix of the classes: added classes (probability 0) may be left out
        try:
            classes = classes_for_probs(probs.shape[1], info.classes, info.model_classes)
        except ValueError as exc:
            raise StreamError(f"{exc} (dataset {dataset!r})") from None
    if mc is not None and mc.ndim == 2:
        mc = mc[:, None, :]
    try:
        scores = {k: float(v[0]) for k, v in score_all(probs, mc).items()}
        pred1, pred2 = top2(probs, classes)
    except ValueError as exc:
        raise StreamError(f"probs: {exc}") from exc
    return _Scored(probs, scores, pred1[0], pred2[0])


def _store_row(
    store: Store,
    dataset: str,
    info: DatasetInfo,
    sample: StreamSample,
    sample_id: str,
    uri: str | None,
    vec: np.ndarray,
    content: bytes,
    scored: _Scored,
) -> None:
    """Upsert the sample's row (tagged ``stream``) and compact now and then."""
    probs = scored.probs
    row: dict[str, Any] = {
        "id": sample_id,
        "uri": uri or sample.uri or f"stream://{sample_id}",
        "split": "unlabeled",
        "labeled": False,
        "probs": probs[0].tolist(),
        "pred_label": scored.pred1,
        "pred_label2": scored.pred2,
        "model_version": sample.model_version,
        "embedding": vec[0].tolist(),
        "tags": ["stream"],
        "status": "ok",
        "fingerprint": hashlib.sha1(content + probs.tobytes()).hexdigest(),
        **scored.scores,
    }
    for name, value in (sample.metadata or {}).items():
        if name in info.metadata_fields:
            row[f"meta_{name}"] = value
    store.upsert_samples(dataset, [row])
    store.compact(dataset, min_fragments=STREAM_COMPACT_FRAGMENTS)  # one fragment per sample otherwise


def _reasons(
    store: Store, dataset: str, policy: StreamPolicy, scores: dict[str, float], vec: np.ndarray
) -> tuple[list[DecisionReason], NearestIssue | None]:
    """Why the policy makes the sample a candidate (empty: it does not), and the nearest issue example."""
    reasons: list[DecisionReason] = []
    if policy.confidence_below is not None and scores["confidence"] < policy.confidence_below:
        reasons.append(
            {"reason": "low_confidence", "value": scores["confidence"], "threshold": policy.confidence_below}
        )
    unc = scores.get(policy.uncertainty)
    if policy.uncertainty_above is not None and unc is not None and unc >= policy.uncertainty_above:
        reasons.append(
            {
                "reason": "high_uncertainty",
                "score": policy.uncertainty,
                "value": unc,
                "threshold": policy.uncertainty_above,
            }
        )
    near = _nearest_issue_example(store, dataset, normalize(vec)[0], policy.issues)
    if policy.issue_distance is not None and near is not None and near["distance"] <= policy.issue_distance:
        reasons.append({"reason": "near_issue", **near, "threshold": policy.issue_distance})
    return reasons, near


def _record_decision(
    store: Store,
    dataset: str,
    policy: StreamPolicy,
    budget: StreamBudget,
    now: dt.datetime,
    sample_id: str,
    scored: _Scored,
    reasons: list[DecisionReason],
    near: NearestIssue | None,
) -> DecisionDoc:
    """Spend the period's budget on a candidate (atomically) and store the decision; a failed write
    refunds the label."""
    seconds = policy.period_seconds()
    start = period_start(now, seconds).isoformat()
    key = (dataset, start)
    loader = lambda: _sent_in_period(store, dataset, start)  # noqa: E731
    send = False
    if reasons:
        send, used = budget.try_spend(key, policy.budget, loader)
    else:
        used = budget.used(key, loader)
    decision_id = uuid.uuid4().hex[:16]
    doc: DecisionDoc = {
        "id": decision_id,
        "sample_id": sample_id,
        "send": send,
        "candidate": bool(reasons),
        "reasons": reasons,
        "why": _why(reasons, send, policy.budget),
        "scores": scored.scores,
        "pred_label": scored.pred1,
        "nearest_issue": near,
        "period_start": start,
        "period_seconds": seconds,
        "budget": policy.budget,
        "budget_used": used,
        "budget_left": max(0, policy.budget - used),
        "decided_at": now.isoformat(),
    }
    try:
        store.put_doc(dataset, DECISION, decision_id, doc, name=sample_id)
    except Exception:
        if send:
            budget.refund(key)
        raise
    return doc


def _why(reasons: list[DecisionReason], send: bool, budget: int) -> str:
    if not reasons:
        return "confident and unlike every flagged issue: not sent"
    parts = []
    for r in reasons:
        if r["reason"] == "low_confidence":
            parts.append(f"confidence {r['value']:.3f} below {r['threshold']}")
        elif r["reason"] == "high_uncertainty":
            parts.append(f"{r['score']} {r['value']:.3f} at or above {r['threshold']}")
        else:
            parts.append(f"within {r['distance']:.3f} of issue {r['issue']!r} example {r['example']!r}")
    text = "; ".join(parts)
    if send:
        return f"send to labeling: {text}"
    return f"would be sent ({text}) but this period's label budget of {budget} is spent"


def _embed(embedder: Any, data: bytes, what: str = "the image") -> Any:
    from edgeminer.indexer.pipeline import ImageLoadError, decode_image_bytes

    try:
        img = decode_image_bytes(data)
    except ImageLoadError as exc:
        raise StreamError(f"{what} is not readable as an image (PNG, JPEG, WebP...): {exc}") from exc
    return embedder.embed_images([img])


def _align(probs: np.ndarray, emb_classes: Sequence[str] | None, classes: Sequence[str]) -> np.ndarray:
    if not emb_classes or list(emb_classes) == list(classes) or not classes:
        return probs
    idx = {c: n for n, c in enumerate(emb_classes)}
    if any(c not in idx for c in classes):
        return probs
    return probs[:, [idx[c] for c in classes]]


def _align_mc(mc: np.ndarray, emb_classes: Sequence[str] | None, classes: Sequence[str]) -> np.ndarray:
    if not emb_classes or list(emb_classes) == list(classes) or not classes:
        return mc
    idx = {c: n for n, c in enumerate(emb_classes)}
    if any(c not in idx for c in classes):
        return mc
    return mc[..., [idx[c] for c in classes]]


def _nearest_issue_example(
    store: Store, dataset: str, vec: np.ndarray, issues: Sequence[str] | None
) -> NearestIssue | None:
    docs = store.list_docs(dataset, "issue")
    if issues is not None:
        known = {d["id"] for d in docs}
        missing = [i for i in issues if i not in known]
        if missing:
            from edgeminer.indexer.errors import IssueNotFound

            raise IssueNotFound(dataset, missing[0])
        docs = [d for d in docs if d["id"] in set(issues)]
    owner: dict[str, str] = {}
    for d in docs:
        for sid in d.get("sample_ids") or []:
            owner.setdefault(str(sid), d["id"])
    if not owner:
        return None
    ids, vecs = store.vectors(dataset, ids=list(owner))
    if not ids:
        return None
    dist = 1.0 - normalize(vecs) @ vec
    n = int(np.argmin(dist))
    return {"issue": owner[ids[n]], "example": ids[n], "distance": round(float(dist[n]), 6)}


#: image formats Pillow reports -> the extension an upload is saved with (anything else: ``.img``)
UPLOAD_EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "MPO": "jpg",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
    "WEBP": "webp",
}


def upload_name(sample_id: str, data: bytes) -> str:
    """The file name an uploaded image is saved under: a hash of the sample id (never the id itself,
    which is client text: ``../x`` or an absolute path must not become a path), plus an extension
    from the image's own format."""
    from edgeminer.indexer.pipeline import ImageLoadError, identify_image_bytes

    try:
        fmt = identify_image_bytes(data)
    except ImageLoadError:  # decoded already; an odd format just gets a neutral extension
        fmt = ""
    digest = hashlib.sha256(sample_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{digest}.{UPLOAD_EXTENSIONS.get(fmt.upper(), 'img')}"


def _save_upload(store: Store, dataset: str, folder: Path, sample_id: str, data: bytes) -> str:
    """Keep the uploaded image next to the data so the dashboard can show it (its folder becomes a
    media root of the dataset). Uploads land only in ``<folder>/<dataset>/`` under a hashed name,
    written to a temp file there and renamed into place (a rename replaces a symlink, never follows it);
    a dataset folder that is a symlink, or resolves outside ``folder``, is refused."""
    from edgeminer.indexer.store import DATASET_NAME_RE

    if not DATASET_NAME_RE.match(dataset):  # the store checks this too; the path must never depend on it
        raise StreamError(f"invalid dataset name {dataset!r}")
    base = folder.resolve()
    target = folder / dataset
    target.mkdir(parents=True, exist_ok=True)
    real = target.resolve()
    if target.is_symlink() or not real.is_relative_to(base) or real == base:
        raise StreamError(f"the upload folder of dataset {dataset!r} is not a plain folder under {str(base)!r}")
    path = real / upload_name(sample_id, data)
    fd, tmp = tempfile.mkstemp(dir=real, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    info = store.get_dataset(dataset)
    if str(real) not in info.media_roots:
        store.update_dataset(dataset, media_roots=[str(real)])
    return str(path)


def list_decisions(
    store: Store, dataset: str, *, send: bool | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[DecisionDoc], int]:
    """Recorded decisions, newest first: (page, total matching)."""
    stored = store.list_docs(dataset, DECISION)
    docs = [cast(DecisionDoc, d) for d in stored if send is None or bool(d.get("send")) == send]
    docs.sort(key=lambda d: (d.get("decided_at", ""), d.get("_created_at", "")), reverse=True)
    return docs[offset : offset + limit], len(docs)
