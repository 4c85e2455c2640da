"""Seeds: what to mine around, resolved into normalised vectors.

Seeds come from explicit ids, an issue (its ``sample_ids``), rows matching a seed selector (a cluster,
a confusion cell ``label X predicted Y``, a top-2 pair ``pred_label/pred_label2``, the failures of a
split), a metadata slice (its failures; indexer/analysis/metaslices.py), the likely label mistakes
(indexer/analysis/label_issues.py), a text query (the dataset's open_clip text tower) or an uploaded
image (the dataset's embedder).

A metadata slice also narrows the candidates to the slice's rows (:func:`seed_candidate_where`): mining
``--slice N`` returns the slice's unlabeled rows nearest its failures.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeminer.indexer.errors import NotSupported
from edgeminer.indexer.store import Dataset, Store, sql_quote
from edgeminer.service.mining.errors import EmbeddingUnavailable, MiningError, SeedsNotFound
from edgeminer.service.mining.search import as_dataset, normalize

__all__ = [
    "MAX_SEEDS",
    "ResolvedSeeds",
    "Seeds",
    "dataset_embedder",
    "embed_image",
    "embed_text",
    "issue_sample_ids",
    "resolve_seeds",
    "resolve_seeds_in",
    "seed_candidate_where",
    "seed_selector_where",
]

#: most seeds a selector (cluster, confusion cell, failures) may produce.
MAX_SEEDS = 5000


@dataclass
class Seeds:
    """What to mine around. Parts combine: ids + issue + selector rows + text + image."""

    ids: list[str] = field(default_factory=list)
    issue: str | None = None
    #: selector: rows matching ALL given parts become seeds
    cluster: int | None = None
    confusion: tuple[str, str] | None = None  # (label, pred_label): ground truth X predicted as Y
    pair: tuple[str, str] | None = None  # top-2 confusion pair (pred_label, pred_label2), either order
    failures: bool = False  # only rows the model got wrong (correct = false)
    split: str | None = None  # only rows of this split
    text: str | None = None
    image: bytes | None = None
    #: a metadata slice's number (``edgeminer slices``): its failures are seeds, its rows the candidates
    slice: int | None = None
    #: the likely label mistakes (``edgeminer label-issues``) are seeds
    label_issues: bool = False

    def has_selector(self) -> bool:
        return self.cluster is not None or self.confusion is not None or self.pair is not None or (
            self.failures or self.split is not None
        )

    def is_empty(self) -> bool:
        return not (
            self.ids or self.issue or self.has_selector() or self.text or self.image or self.slice is not None
        ) and not self.label_issues

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the spec (id count, not the ids; image size, not the bytes)."""
        out: dict[str, Any] = {}
        if self.ids:
            out["ids"] = len(self.ids)
        for name in ("issue", "cluster", "split", "text", "slice"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.confusion:
            out["confusion"] = {"label": self.confusion[0], "pred_label": self.confusion[1]}
        if self.pair:
            out["pair"] = list(self.pair)
        if self.failures:
            out["failures"] = True
        if self.label_issues:
            out["label_issues"] = True
        if self.image:
            out["image"] = f"{len(self.image)} bytes"
        return out


@dataclass
class ResolvedSeeds:
    """Seed vectors (normalised) with their ids (``text:<query>`` / ``image:upload`` for embedded
    seeds) and analysis clusters (None when unknown)."""

    ids: list[str]
    vectors: np.ndarray
    clusters: list[int | None]


def seed_selector_where(seeds: Seeds) -> str | None:
    """The where-clause of the selector part of ``seeds``.

    Parameters
    ----------
    seeds : Seeds

    Returns
    -------
    str or None
        The AND of the selector parts (values quoted), or None when the spec has no selector.
    """
    parts = []
    if seeds.cluster is not None:
        parts.append(f"cluster = {int(seeds.cluster)}")
    if seeds.confusion is not None:
        label, pred = seeds.confusion
        parts.append(f"label = {sql_quote(label)} AND pred_label = {sql_quote(pred)}")
    if seeds.pair is not None:
        a, b = seeds.pair
        qa, qb = sql_quote(a), sql_quote(b)
        parts.append(
            f"((pred_label = {qa} AND pred_label2 = {qb}) OR (pred_label = {qb} AND pred_label2 = {qa}))"
        )
    if seeds.failures:
        parts.append("correct = false")
    if seeds.split is not None:
        parts.append(f"split = {sql_quote(seeds.split)}")
    return " AND ".join(f"({p})" for p in parts) if parts else None


def issue_sample_ids(source: Dataset | Store, dataset: str | None, issue_id: str) -> list[str]:
    """The flagged sample ids of an issue document (kind ``issue``, field ``sample_ids``).

    Parameters
    ----------
    source : Dataset or Store
        The dataset's handle (``dataset`` None), or its store.
    dataset : str or None
        The dataset's name, with a Store.
    issue_id : str

    Returns
    -------
    list of str

    Raises
    ------
    DocNotFound
        No such issue.
    MiningError
        The issue has no sample ids.
    """
    doc = as_dataset(source, dataset).get_doc("issue", issue_id)
    ids = doc.get("sample_ids") or []
    if not ids:
        raise MiningError(f"issue {issue_id!r} has no sample ids yet: add failure examples to it first")
    return [str(i) for i in ids]


@functools.lru_cache(maxsize=8)
def _cached_embedder(config_json: str, device: str) -> Any:
    from edgeminer.indexer.embedders import load_embedder

    return load_embedder(json.loads(config_json), device=device)


def dataset_embedder(source: Dataset | Store, dataset: str | None = None, *, device: str = "cpu") -> Any:
    """The dataset's embedder, rebuilt from its recorded config once per process and config.

    Parameters
    ----------
    source : Dataset or Store
        The dataset's handle, or its store (with ``dataset``).
    dataset : str, optional
        The dataset's name, with a Store.
    device : str
        Torch device for the model.

    Returns
    -------
    Embedder
        An object with ``embed_images`` (and ``embed_text`` for open_clip).

    Raises
    ------
    EmbeddingUnavailable
        The embedder cannot be rebuilt (unsupported kind, missing weights...).
    """
    info = as_dataset(source, dataset).info
    name = info.name
    try:
        return _cached_embedder(json.dumps(info.embedder, sort_keys=True), device)
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild it means we cannot embed
        if isinstance(exc, NotSupported):
            raise EmbeddingUnavailable(str(exc)) from exc
        raise EmbeddingUnavailable(
            f"cannot load the embedder of dataset {name!r} ({info.embedder.get('kind', '?')}): {exc}"
        ) from exc


def embed_text(embedder: Any, text: str, *, dataset: str = "") -> np.ndarray:
    """A text query's vector from the embedder's text tower.

    Parameters
    ----------
    embedder : Embedder
    text : str
    dataset : str
        Named in the error message.

    Returns
    -------
    np.ndarray
        Shape ``(1, dim)``, not normalised.

    Raises
    ------
    EmbeddingUnavailable
        The embedder has no text tower (not open_clip).
    """
    try:
        out = embedder.embed_text([text])
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, NotSupported) or isinstance(exc, NotImplementedError):
            kind = getattr(embedder, "kind", "this")
            raise EmbeddingUnavailable(
                f"text seeds need a CLIP (open_clip) embedder; dataset {dataset!r} uses a {kind} embedder, "
                "which has no text tower: seed with ids, an issue, a cluster or an image instead"
            ) from exc
        raise
    return _as_matrix(out)


def embed_image(embedder: Any, data: bytes, *, what: str = "uploaded image") -> np.ndarray:
    """An image file's vector.

    Parameters
    ----------
    embedder : Embedder
    data : bytes
        The image file's bytes (PNG, JPEG...).
    what : str
        Names the image in the error message.

    Returns
    -------
    np.ndarray
        Shape ``(1, dim)``, not normalised.

    Raises
    ------
    MiningError
        The bytes are not a readable image.
    """
    from edgeminer.indexer.pipeline import ImageLoadError, decode_image_bytes

    try:
        img = decode_image_bytes(data)
    except ImageLoadError as exc:
        raise MiningError(f"{what} is not a readable image ({exc}); send a PNG or JPEG file") from exc
    out = embedder.embed_images([img])
    return _as_matrix(out)


def _as_matrix(out: Any) -> np.ndarray:
    emb = getattr(out, "embeddings", out)
    arr = np.asarray(emb, dtype=np.float32)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def resolve_seeds(
    store: Store,
    dataset: str,
    seeds: Seeds,
    *,
    embedder: Any = None,
    max_seeds: int = MAX_SEEDS,
    device: str = "cpu",
) -> ResolvedSeeds:
    """:func:`resolve_seeds_in` on ``store.dataset(dataset)``.

    Raises
    ------
    DatasetNotFound
        No such dataset; otherwise as :func:`resolve_seeds_in`.
    """
    return resolve_seeds_in(
        store.dataset(dataset), seeds, embedder=embedder, max_seeds=max_seeds, device=device
    )


def resolve_seeds_in(
    ds: Dataset,
    seeds: Seeds,
    *,
    embedder: Any = None,
    max_seeds: int = MAX_SEEDS,
    device: str = "cpu",
) -> ResolvedSeeds:
    """Turn a seed spec into normalised vectors.

    Parameters
    ----------
    ds : Dataset
    seeds : Seeds
        The spec; its parts combine (ids first, then the issue's, the selector's, text, image).
    embedder : Embedder, optional
        Embeds text / image seeds; default the dataset's own (:func:`dataset_embedder`).
    max_seeds : int
        Most seed rows a request may use.
    device : str
        Device for the dataset's embedder when it has to be loaded.

    Returns
    -------
    ResolvedSeeds

    Raises
    ------
    MiningError
        An empty spec, a selector matching no rows or too many, seed rows without an embedding (error
        rows), or an embedding whose size differs from the dataset's.
    SeedsNotFound
        Seed ids that are not in the dataset.
    EmbeddingUnavailable
        Text / image seeds the embedder cannot embed.
    """
    info = ds.info
    if seeds.is_empty():
        raise MiningError(
            "no seeds given: pass ids, an issue, a cluster, a confusion cell, a pair, failures/split, "
            "a metadata slice, label issues, a text query or an image"
        )
    row_ids = _seed_row_ids(ds, seeds, max_seeds)
    ids, parts, clusters = _row_seeds(ds, row_ids, info.dim, max_seeds)
    if seeds.text or seeds.image:
        emb = embedder if embedder is not None else dataset_embedder(ds, device=device)
        for seed_id, vec in _embedded_seeds(emb, seeds, ds.name):
            ids.append(seed_id)
            parts.append(vec)
            clusters.append(None)
    vectors = np.concatenate(parts, axis=0) if parts else np.zeros((0, info.dim), np.float32)
    if vectors.shape[1] != info.dim:
        raise MiningError(
            f"the seed embedding has {vectors.shape[1]} values but dataset {ds.name!r} stores {info.dim}: "
            "the dataset's embedder config does not match its vectors"
        )
    return ResolvedSeeds(ids, normalize(vectors), clusters)


def _seed_row_ids(ds: Dataset, seeds: Seeds, max_seeds: int) -> list[str]:
    """The seed rows' ids, in order: the explicit ids, the issue's, then the selector's (no repeats)."""
    row_ids: list[str] = list(dict.fromkeys(str(i) for i in seeds.ids))
    known = set(row_ids)
    if seeds.issue:
        _extend_new(row_ids, known, issue_sample_ids(ds, None, seeds.issue))
    if seeds.slice is not None:
        _extend_new(row_ids, known, slice_failure_ids(ds, seeds.slice, max_seeds))
    if seeds.label_issues:
        _extend_new(row_ids, known, label_issue_ids(ds, max_seeds))
    if row_ids:
        have = ds.get_samples(row_ids, columns=["id"])["id"].to_pylist()
        missing = sorted(set(row_ids) - set(have))
        if missing:
            raise SeedsNotFound(ds.name, missing)
    where = seed_selector_where(seeds)
    if where is not None:
        _extend_new(row_ids, known, _selector_ids(ds, seeds, where, max_seeds))
    return row_ids


def slice_failure_ids(ds: Dataset, slice_id: int, max_seeds: int = MAX_SEEDS) -> list[str]:
    """The labeled rows of metadata slice ``slice_id`` the model got wrong (at most ``max_seeds``).

    Raises
    ------
    NotFound
        The dataset has no such slice.
    MiningError
        The slice has no failures among its rows.
    """
    from edgeminer.indexer.analysis.metaslices import get_slice, slice_where
    from edgeminer.indexer.where import ok_and

    item = get_slice(ds.store, ds.name, int(slice_id))
    where = ok_and(slice_where(ds.info, item), "labeled = true", "correct = false")
    ids = ds.query(where=where, columns=["id"], limit=max_seeds)["id"].to_pylist()
    if not ids:
        raise MiningError(f"metadata slice {slice_id} ({item['description']}) has no failures to mine around")
    return [str(i) for i in ids]


def label_issue_ids(ds: Dataset, max_seeds: int = MAX_SEEDS) -> list[str]:
    """The likely label mistakes, most likely first (at most ``max_seeds``); MiningError when none."""
    from edgeminer.indexer.analysis.label_issues import issue_ids

    ids = issue_ids(ds.store, ds.name)[:max_seeds]
    if not ids:
        raise MiningError(f"dataset {ds.name!r} has no likely label mistakes to mine around")
    return ids


def seed_candidate_where(ds: Dataset, seeds: Seeds) -> str | None:
    """The where-clause that narrows the candidates for this spec: a metadata slice's rows (``slice``),
    else None. Callers AND it with their own filter before mining."""
    if seeds.slice is None:
        return None
    from edgeminer.indexer.analysis.metaslices import get_slice, slice_where

    return slice_where(ds.info, get_slice(ds.store, ds.name, int(seeds.slice)))


def _extend_new(row_ids: list[str], known: set[str], more: list[str]) -> None:
    for i in more:
        if i not in known:
            known.add(i)
            row_ids.append(i)


def _selector_ids(ds: Dataset, seeds: Seeds, where: str, max_seeds: int) -> list[str]:
    n = ds.count(where)
    if n == 0:
        why = _unknown_selector_values(ds, seeds)
        raise MiningError(
            why or f"no rows match the seed selector {json.dumps(seeds.describe())}: nothing to mine around"
        )
    if n > max_seeds:
        raise MiningError(
            f"the seed selector matches {n} rows, more than the {max_seeds} seeds a request may use: "
            "narrow it (add a split, a cluster or a confusion cell)"
        )
    return ds.query(where=where, columns=["id"])["id"].to_pylist()


def _unknown_selector_values(ds: Dataset, seeds: Seeds) -> str | None:
    """Why a selector matched nothing when it names a class or a cluster the dataset does not have (the
    message lists the valid ones), else None (the values exist, they just do not occur together)."""
    names = [n for pair in (seeds.confusion, seeds.pair) if pair for n in pair]
    classes = list(ds.info.classes)
    unknown = list(dict.fromkeys(n for n in names if n not in classes))
    if unknown:
        shown = ", ".join(classes[:50]) + (f" ... ({len(classes)} in all)" if len(classes) > 50 else "")
        names_shown = ", ".join(repr(n[:80]) for n in unknown)
        return f"unknown class {names_shown}: the dataset's classes are {shown or '(none)'}"
    if seeds.cluster is not None and "cluster" in ds.schema.names:
        have = ds.query(where="cluster IS NOT NULL", columns=["cluster"])["cluster"].to_pylist()
        ids = sorted({int(c) for c in have})
        if int(seeds.cluster) not in ids:
            if not ids:
                return f"no cluster {int(seeds.cluster)}: the dataset has no clusters yet (run edgeminer analyze)"
            shown = ", ".join(str(c) for c in ids[:100]) + (" ..." if len(ids) > 100 else "")
            noise = " (-1 = noise)" if -1 in ids else ""
            return f"no cluster {int(seeds.cluster)}: the valid cluster ids are {shown}{noise}"
    return None


def _row_seeds(
    ds: Dataset, row_ids: list[str], dim: int, max_seeds: int
) -> tuple[list[str], list[np.ndarray], list[int | None]]:
    """(ids, vector blocks, clusters) of seed rows, as stored."""
    if not row_ids:
        return [], [], []
    if len(row_ids) > max_seeds:
        raise MiningError(f"{len(row_ids)} seeds, more than the {max_seeds} a request may use")
    table = ds.get_samples(row_ids, columns=["id", "embedding", "cluster", "status"])
    got_ids = table["id"].to_pylist()
    embs = table["embedding"].to_pylist()
    bad = [i for i, e in zip(got_ids, embs, strict=True) if e is None]
    if bad:
        raise MiningError(
            f"seed rows without an embedding (failed at ingest): {', '.join(bad[:10])}; "
            "fix or drop them, or seed with other rows"
        )
    vectors = np.asarray(embs, dtype=np.float32).reshape(len(got_ids), dim)
    return list(got_ids), [vectors], list(table["cluster"].to_pylist())


def _embedded_seeds(embedder: Any, seeds: Seeds, dataset: str) -> list[tuple[str, np.ndarray]]:
    """(seed id, vector) of the text and image parts of the spec."""
    out: list[tuple[str, np.ndarray]] = []
    if seeds.text:
        out.append((f"text:{seeds.text}", embed_text(embedder, seeds.text, dataset=dataset)))
    if seeds.image:
        out.append(("image:upload", embed_image(embedder, seeds.image)))
    return out
