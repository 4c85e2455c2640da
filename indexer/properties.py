"""Cheap image properties, stored as typed metadata at ingest, and the near-duplicate count.

Per image (or object crop: what the model saw), computed in the decode threads of the ingest
(indexer/pipeline.py) with numpy and Pillow only, on a copy scaled so its longer side is at most
:data:`WORK_SIDE` pixels (so a 12-megapixel photo costs what a 512 px one does, and sharpness is
comparable across image sizes):

==================  =====  ==================================================================
field               type   meaning
==================  =====  ==================================================================
img_brightness      float  mean luma (ITU-R 601 ``L``), in [0, 1]
img_contrast        float  standard deviation of luma, in [0, 0.5]
img_sharpness       float  variance of the 4-neighbour Laplacian of luma (0-255 scale); low = blurred
img_saturation      float  mean HSV saturation, in [0, 1]
img_width           int    pixel width of the image (the crop for object rows)
img_height          int    pixel height
img_aspect          float  width / height
img_near_dups       int    other rows within :data:`NEAR_DUP_DISTANCE` cosine distance (after ingest)
==================  =====  ==================================================================

They are ordinary metadata fields (column ``meta_img_<name>``), so filters, ``stats --by`` and the
dashboard's metadata charts take them by their plain name. The ``img_`` prefix is reserved for them:
a source column of the same name keeps the user's values and that property is not computed
(:func:`property_fields` leaves it out). Datasets ingested before these existed have no such
columns: every reader treats them as absent.

The near-duplicate count needs every embedding, so it runs once at the end of an ingest that wrote rows
(:func:`update_near_duplicates`): exact blockwise cosine similarity up to :data:`EXACT_MAX_ROWS` rows,
above that within coarse k-means partitions (each row in its two nearest), so the cost grows like
``n * n / partitions`` and memory stays at the vectors plus one ``BLOCK x BLOCK`` block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgeminer.indexer.where import HAS_EMBEDDING, ok_and

__all__ = [
    "NEAR_DUP_DISTANCE",
    "PROPERTY_FIELDS",
    "PROPERTY_PREFIX",
    "image_properties",
    "near_duplicate_counts",
    "property_fields",
    "update_near_duplicates",
]

PROPERTY_PREFIX = "img_"
#: name (without ``meta_``) -> metadata type; the order is the order of the columns.
PROPERTY_FIELDS: dict[str, str] = {
    "img_brightness": "float",
    "img_contrast": "float",
    "img_sharpness": "float",
    "img_saturation": "float",
    "img_width": "int",
    "img_height": "int",
    "img_aspect": "float",
    "img_near_dups": "int",
}
#: the properties computed from pixels (the near-duplicate count comes from the embeddings).
PIXEL_FIELDS = tuple(f for f in PROPERTY_FIELDS if f != "img_near_dups")
#: longest side of the working copy the pixel statistics are measured on.
WORK_SIDE = 512
#: cosine distance (1 - cos) under which two rows count as near-duplicates.
NEAR_DUP_DISTANCE = 0.02
#: up to this many rows the near-duplicate pass is exact (every pair).
EXACT_MAX_ROWS = 20_000
#: rows per side of one similarity block.
BLOCK = 2048


def property_fields(user_fields: Mapping[str, str] | None = None) -> dict[str, str]:
    """The property fields a dataset gets: all of :data:`PROPERTY_FIELDS` except names the source
    already uses for its own metadata (the user's column wins)."""
    taken = set(user_fields or {})
    return {k: v for k, v in PROPERTY_FIELDS.items() if k not in taken}


def image_properties(img: Any) -> dict[str, Any]:
    """The pixel properties of a decoded PIL image, keyed by field name (``img_brightness``...).

    Returns an empty dict for an image with no pixels; never raises for a decodable image."""
    width, height = (int(v) for v in img.size)
    if width <= 0 or height <= 0:
        return {}
    work = img
    if max(width, height) > WORK_SIDE:
        scale = WORK_SIDE / max(width, height)
        work = img.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    rgb = work.convert("RGB")
    luma = np.asarray(rgb.convert("L"), dtype=np.float64)
    sat = np.asarray(rgb.convert("HSV"), dtype=np.float64)[..., 1]
    return {
        "img_brightness": float(luma.mean() / 255.0),
        "img_contrast": float(luma.std() / 255.0),
        "img_sharpness": laplacian_variance(luma),
        "img_saturation": float(sat.mean() / 255.0),
        "img_width": width,
        "img_height": height,
        "img_aspect": float(width / height),
    }


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (``[[0,1,0],[1,-4,1],[0,1,0]]``) over the interior pixels
    of a 2-D array: the usual "variance of the Laplacian" focus measure (low = blurred)."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    return float(lap.var())


def safe_properties(img: Any, wanted: Mapping[str, str] | None = None) -> dict[str, Any]:
    """:func:`image_properties` as ``meta_<field>`` row values, limited to ``wanted`` (default all);
    an image the statistics cannot be taken of gives no values (properties are optional, the row is
    still ingested)."""
    try:
        props = image_properties(img)
    except Exception:  # noqa: BLE001 - a property is never worth losing the row
        return {}
    keep = PIXEL_FIELDS if wanted is None else [f for f in PIXEL_FIELDS if f in wanted]
    return {"meta_" + k: props[k] for k in keep if k in props}


# ---------------------------------------------------------------------------------------------
# near-duplicates
# ---------------------------------------------------------------------------------------------


def near_duplicate_counts(
    vectors: np.ndarray,
    *,
    distance: float = NEAR_DUP_DISTANCE,
    exact_max_rows: int = EXACT_MAX_ROWS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    unit: bool = False,
) -> np.ndarray:
    """For each row, how many OTHER rows lie within cosine ``distance`` of it (``unit``: the rows are
    already L2-normalised float32, used as they are, no copy).

    Exact (blockwise ``X @ X.T``) up to ``exact_max_rows`` rows; above, rows are split into about
    ``sqrt(n)`` k-means partitions (fitted on a sample) and each row is compared with the rows of its
    two nearest partitions, so a pair is missed only when neither row has the other's partition among
    its two nearest (rare for pairs this close)."""
    x = np.asarray(vectors, dtype=np.float32)
    if not unit:
        x = _unit(x)
    n = x.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    threshold = np.float32(1.0 - distance)
    if n <= exact_max_rows:
        return _block_counts(x, np.arange(n), np.arange(n), threshold, progress)
    return _partitioned_counts(x, threshold, seed, progress)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def _block_counts(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    threshold: np.float32,
    progress: Callable[[int, int], None] | None,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Add to ``counts[rows[i]]`` the number of ``cols`` (other than itself) within the threshold."""
    if counts is None:
        counts = np.zeros(x.shape[0], dtype=np.int64)
    for start in range(0, len(rows), BLOCK):
        r = rows[start : start + BLOCK]
        xr = x[r]
        hits = np.zeros(len(r), dtype=np.int64)
        for cstart in range(0, len(cols), BLOCK):
            c = cols[cstart : cstart + BLOCK]
            sim = xr @ x[c].T
            close = sim >= threshold
            close &= r[:, None] != c[None, :]
            hits += close.sum(axis=1)
        counts[r] += hits
        if progress is not None:
            progress(min(start + BLOCK, len(rows)), len(rows))
    return counts


def _partitioned_counts(
    x: np.ndarray, threshold: np.float32, seed: int, progress: Callable[[int, int], None] | None
) -> np.ndarray:
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    k = int(np.clip(np.sqrt(n), 16, 4096))
    centroids = _kmeans(x[rng.choice(n, size=min(n, 50 * k), replace=False)], k, rng)
    nearest = np.zeros((n, 2), dtype=np.int64)
    for start in range(0, n, BLOCK * 8):
        sim = x[start : start + BLOCK * 8] @ centroids.T
        nearest[start : start + BLOCK * 8] = np.argpartition(-sim, 1, axis=1)[:, :2]
    counts = np.zeros(n, dtype=np.int64)
    # a row is compared with every row whose nearest partition is one of its own two nearest
    members = _groups(nearest[:, 0], k)
    seconds = _groups(nearest[:, 1], k)
    done = 0
    for a in range(k):
        if len(members[a]) == 0:
            continue
        rows = np.concatenate([members[a], seconds[a]])
        _block_counts(x, rows, members[a], threshold, None, counts)
        done += len(members[a])
        if progress is not None:
            progress(done, n)
    return counts


def _groups(assign: np.ndarray, k: int) -> list[np.ndarray]:
    """The row indices of each of ``k`` groups (one sort, not k scans)."""
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(k + 1))
    return [order[bounds[j] : bounds[j + 1]] for j in range(k)]


def _kmeans(sample: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 10) -> np.ndarray:
    """Spherical k-means centroids of ``sample`` (a few Lloyd steps: a coarse partition is enough)."""
    k = min(k, sample.shape[0])
    centroids = sample[rng.choice(sample.shape[0], size=k, replace=False)].copy()
    for _ in range(iterations):
        assign = np.argmax(sample @ centroids.T, axis=1)
        for j in range(k):
            members = sample[assign == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
        centroids = _unit(centroids)
    return centroids


def update_near_duplicates(store: Any, dataset: str, *, distance: float = NEAR_DUP_DISTANCE) -> int:
    """Recount ``img_near_dups`` of every ok row with an embedding and write the counts that changed.

    Does nothing (returns 0) when the dataset has no ``img_near_dups`` field (a dataset ingested
    before the properties existed, or one whose source owns the name). Returns the rows written."""
    info = store.get_dataset(dataset)
    if info.metadata_fields.get("img_near_dups") != "int":
        return 0
    column = "meta_img_near_dups"
    ids, x, old = _unit_vectors(store, dataset, info.dim, column)
    if not ids:
        return 0
    counts = near_duplicate_counts(x, distance=distance, unit=True)
    del x
    changed = np.flatnonzero(old != counts)
    if len(changed) == 0:
        return 0
    picked = pa.array(ids).take(pa.array(changed))
    store.update_columns(dataset, pa.table({"id": picked, column: pa.array(counts[changed], pa.int64())}))
    return int(len(changed))


def _unit_vectors(store: Any, dataset: str, dim: int, column: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """ids, L2-normalised float32 vectors and the stored counts of every ok row with an embedding, read in
    chunks into one preallocated matrix (one copy of the vectors in memory: at 1M x 512 reading the whole
    table at once held the Arrow column, its numpy copy and a normalised copy, three times 2 GB)."""
    from edgeminer.indexer.store import embeddings_to_numpy

    where = ok_and(HAS_EMBEDDING)
    n = store.count(dataset, where)
    x = np.empty((n, dim), dtype=np.float32)
    old = np.empty(n, dtype=np.int64)
    ids: list[str] = []
    at = 0
    for chunk in store.scan_chunks(dataset, columns=["id", "embedding", column], where=where, chunk_rows=65_536):
        m = chunk.num_rows
        if at + m > n:  # rows written since the count: the next ingest counts them
            m = n - at
            chunk = chunk.slice(0, m)
        x[at : at + m] = _unit(embeddings_to_numpy(chunk.column("embedding"), dim))
        old[at : at + m] = pc.fill_null(chunk.column(column), -1).to_numpy(zero_copy_only=False)
        ids.extend(chunk.column("id").to_pylist())
        at += m
    return ids, x[:at], old[:at]
