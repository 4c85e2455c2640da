"""`analyze`: project, cluster and summarise a dataset, and remember the result.

What an analysis writes
    * samples: ``x``, ``y``, ``cluster`` of every ok row with an embedding (``store.update_columns``);
    * the ``analysis`` document ``current``: parameters, the run id, table versions, the cluster
      summaries (failure clusters ranked first, see clustering.py) and, when the dataset has a ``slice``
      metadata field (the demo's planted slices) or a ``truth_field`` is given, the per-slice quality
      check (best cluster's precision / recall and its failure rank);
    * the fitted state (PCA + UMAP + the clusterer, pickled) in a file under the data directory,
      ``<data_dir>/_analysis/<dataset>/state-<run_id>.pkl``; for a remote LanceDB URI it is stored
      base64-encoded in the ``analysis`` document ``state`` instead;
    * a ``run`` document (``indexer.documents.RunDoc``, kind ``analyze``: params, counts, result with
      the mode, versions read / written, duration_s), unless a job runner records the run
      (``record_run=False``).

The ``analysis`` documents are typed in indexer/documents.py (``AnalysisDoc``, ``AnalysisStateDoc``).

Steps of :func:`analyze`: ``_begin`` (parameters, previous analysis), ``_reusable`` / ``_reuse``,
``_load_rows`` (every column but the vectors), ``_saved_state`` (keep the map or fit), ``_fit`` or
``_keep_map``, ``_summarize``, ``_write_map`` (map columns, compaction, fitted state), ``_record_analysis``
(the ``analysis`` document) and ``_record_run``.

Sampled fit (issue 11)
    The map (UMAP) and the clusters (HDBSCAN, failure walk with the sample's errors) are fitted on a seeded
    sample of ``sample_rows`` rows (every row when the table is not larger); every other row is placed:
    its coordinates and cluster come from its nearest fitted rows (placement.py), computed in parallel
    chunks by local processes or Ray tasks while UMAP runs; summaries are computed over every row. The
    vectors are streamed from the store twice (sampling.py), never held all at once.

Modes (chosen in this order)
    ``reuse``      same parameters and the samples table unchanged since the last analysis: nothing
                   is recomputed.
    ``transform``  same projection parameters and a saved state, no ``refit``: rows without
                   coordinates (ingested since) are placed from their nearest fitted rows (coordinates
                   and cluster, as in a sampled fit); summaries are recomputed over
                   all rows (labels that came back count). If only the clustering parameters
                   changed, the map is kept, its fitted rows are clustered again and every other row
                   takes the cluster of its nearest fitted rows.
    ``fit``        otherwise (first run, ``refit=True``, projection parameters or embedder changed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa

from edgeminer.indexer.analysis.clustering import (
    CLUSTER_MODES,
    Clusterer,
    absorb_stray_errors,
    failure_scores,
    slice_quality,
    summarize_clusters,
)
from edgeminer.indexer.analysis.placement import NeighbourIndex, PlacementState, knn_graph, place_xy, vote_labels
from edgeminer.indexer.analysis.projection import PCA_CHOICES, UMAP_SMALL_ROWS, Projector, load_own_pickle
from edgeminer.indexer.analysis.sampling import (
    Neighbours,
    Source,
    chunk_rows_for,
    read_sample,
    sample_positions,
    stream_neighbours,
)
from edgeminer.indexer.documents import RUN, AnalysisDoc, AnalysisStateDoc, AnalysisStateRef, new_run_doc, now_iso
from edgeminer.indexer.errors import ValidationFailed
from edgeminer.indexer.store import UNCERTAINTY_COLUMNS, DatasetInfo, DocNotFound, Store, now_utc
from edgeminer.indexer.where import HAS_EMBEDDING, ok_and

__all__ = [
    "AnalysisReport",
    "AnalyzeParams",
    "analyze",
    "format_clusters",
    "format_slices",
    "get_cluster",
    "load_analysis",
]

#: rows the map (UMAP) and the clusters (HDBSCAN) are fitted on; every other row is placed (README "Beyond
#: one machine"). Chosen by measurement: the demo (1,797 rows) and any table up to this size is fitted whole,
#: exactly as before; at 100k rows the fit costs about half of a whole fit; at 1M the placement of the other
#: rows (faiss HNSW search, parallel) costs about what the fit does.
DEFAULT_SAMPLE_ROWS = 50_000
MIN_SAMPLE_ROWS = 16
#: rows per chunk read from the store and placed by one worker (whole placement.BLOCKs)
CHUNK_ROWS = 32_768
#: rows per update_columns call when the map is written back
WRITE_ROWS = 65_536
ENGINES = ("local", "ray")

ANALYSIS_KIND = "analysis"
CURRENT_ID = "current"
STATE_ID = "state"
DEFAULT_TRUTH_FIELD = "slice"
STAGES = 5

ProgressFn = Callable[[int, int, str], None]


@dataclass
class AnalyzeParams:
    """Everything that shapes an analysis (recorded with the run; equal params + unchanged data
    -> the previous result is reused)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    pca: str = "auto"
    pca_components: int = 50
    n_epochs: int | None = None
    min_cluster_size: int | None = None  # None: auto_min_cluster_size(rows)
    min_samples: int | None = None
    backend: str = "hdbscan"
    clusters: str = "failure"  # failure: density clusters refined where errors concentrate; density: plain HDBSCAN
    min_errors: int = 3
    seed: int = 0
    sample_rows: int = DEFAULT_SAMPLE_ROWS  # the map and clusters are fitted on this many rows (seeded sample)

    def check(self) -> None:
        if self.pca not in PCA_CHOICES:
            raise ValidationFailed(f"pca must be one of {', '.join(PCA_CHOICES)}, not {self.pca!r}")
        if self.clusters not in CLUSTER_MODES:
            raise ValidationFailed(f"clusters must be one of {', '.join(CLUSTER_MODES)}, not {self.clusters!r}")
        if self.min_errors < 1:
            raise ValidationFailed(f"min_errors must be at least 1, not {self.min_errors}")
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise ValidationFailed(f"min_cluster_size must be at least 2, not {self.min_cluster_size}")
        if int(self.sample_rows) < MIN_SAMPLE_ROWS:
            raise ValidationFailed(f"sample_rows must be at least {MIN_SAMPLE_ROWS}, not {self.sample_rows}")

    def projector(self) -> Projector:
        return Projector(
            n_neighbors=self.n_neighbors,
            min_dist=self.min_dist,
            metric=self.metric,
            pca=self.pca,
            pca_components=self.pca_components,
            n_epochs=self.n_epochs,
            seed=self.seed,
        )

    def clusterer(self) -> Clusterer:
        return Clusterer(
            min_cluster_size=self.min_cluster_size,
            min_samples=self.min_samples,
            backend=self.backend,
            mode=self.clusters,
            min_errors=self.min_errors,
            seed=self.seed,
        )

    def projection_key(self, dim: int, embedder: Mapping[str, Any], rows: int = 0) -> str:
        """The projection's identity; the sample size counts only when the table is larger than it (a
        table fitted whole keeps the key it had before sampling existed)."""
        keys = ("n_neighbors", "min_dist", "metric", "pca", "pca_components", "n_epochs", "seed")
        p = {k: getattr(self, k) for k in keys}
        if rows > int(self.sample_rows):
            p["sample_rows"] = int(self.sample_rows)
        return _digest({"p": p, "dim": dim, "embedder": dict(embedder)})

    def clustering_key(self) -> str:
        keys = ("min_cluster_size", "min_samples", "backend", "seed")
        key = {k: getattr(self, k) for k in keys}
        if self.clusters != "density":  # density keys stay those of analyses made before the failure mode
            key.update(clusters=self.clusters, min_errors=self.min_errors)
        return _digest(key)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AnalyzeParams:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationFailed(
                f"unknown analysis parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class AnalysisReport:
    dataset: str
    run_id: str
    mode: str  # fit | transform | recluster | reuse
    rows: int = 0
    fitted: int = 0
    transformed: int = 0
    placed: int = 0  # rows placed from their nearest fitted rows (not in the sample / new since the fit)
    n_clusters: int = 0
    n_failure_clusters: int = 0
    base_error_rate: float = 0.0
    version_read: int = 0
    version_written: int = 0
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    method: str = ""
    pca_used: bool = False
    truth_field: str | None = None
    slices: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    strays_moved: int = 0  # labeled errors that joined their failure mode's cluster (clusters=failure)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        placed = f" and placed the other {self.placed} from their nearest fitted rows" if self.placed else ""
        what = {
            "fit": f"fitted the map on {self.fitted} rows{placed}",
            "transform": f"placed {self.transformed} new rows on the saved map (no refit)"
            if self.transformed
            else "no new rows: kept the map and recomputed the summaries",
            "recluster": f"kept the map, re-clustered {self.rows} rows",
            "reuse": "data and parameters unchanged: reused the previous analysis",
        }[self.mode]
        line = (
            f"analyze {self.dataset}: {what}; {self.rows} rows, {self.n_clusters} clusters, "
            f"{self.n_failure_clusters} failure clusters, base error rate {self.base_error_rate:.1%}, "
            f"version {self.version_read} -> {self.version_written}, {self.duration_s:.1f}s"
        )
        if self.strays_moved:
            line += f"; {self.strays_moved} labeled errors away from their failure mode joined its cluster"
        return line


# ----------------------------------------------------------------------------------------------
# State persistence
# ----------------------------------------------------------------------------------------------


def _is_local(store: Store) -> bool:
    return "://" not in store.uri


def _state_path(store: Store, dataset: str, run_id: str) -> Path:
    return Path(store.uri) / "_analysis" / dataset / f"state-{run_id}.pkl"


def _save_state(
    store: Store, dataset: str, run_id: str, projector: Projector, clusterer: Clusterer
) -> AnalysisStateRef:
    payload = pickle.dumps(
        {"format": 1, "projector": projector.dumps(), "clusterer": clusterer}, protocol=pickle.HIGHEST_PROTOCOL
    )
    if _is_local(store):
        path = _state_path(store, dataset, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        return {"file": str(path.relative_to(store.uri)), "bytes": len(payload)}
    state_doc: AnalysisStateDoc = {"run_id": run_id, "b64": base64.b64encode(payload).decode()}
    store.put_doc(dataset, ANALYSIS_KIND, STATE_ID, state_doc)
    return {"doc": STATE_ID, "bytes": len(payload)}


def _load_state(store: Store, dataset: str, ref: Mapping[str, Any] | None) -> tuple[Projector, Clusterer] | None:
    """The saved (projector, clusterer), or None when it is missing or unreadable (-> refit)."""
    if not ref:
        return None
    try:
        if "file" in ref:
            data = (Path(store.uri) / ref["file"]).read_bytes()
        else:
            data = base64.b64decode(store.get_doc(dataset, ANALYSIS_KIND, STATE_ID)["b64"])
        payload = load_own_pickle(data)
        if payload.get("format") != 1:
            return None
        return Projector.loads(payload["projector"]), payload["clusterer"]
    except (
        OSError, DocNotFound, KeyError, ValueError, pickle.UnpicklingError, AttributeError, EOFError, ImportError
    ):
        return None


def _drop_old_state(store: Store, dataset: str, ref: Mapping[str, Any] | None, keep: Mapping[str, Any]) -> None:
    if ref and "file" in ref and ref.get("file") != keep.get("file"):
        try:
            (Path(store.uri) / ref["file"]).unlink()
        except OSError:
            pass


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def load_analysis(store: Store, dataset: str) -> dict[str, Any] | None:
    """The current analysis document (an ``AnalysisDoc`` as stored, with the store's ``_``-keys).

    Parameters
    ----------
    store, dataset: the dataset.

    Returns
    -------
    dict | None: the document (cluster summaries included), or None before the first analyze.

    Raises
    ------
    DatasetNotFound: ``dataset`` does not exist.
    """
    try:
        return store.get_doc(dataset, ANALYSIS_KIND, CURRENT_ID)
    except DocNotFound:
        return None


def get_cluster(store: Store, dataset: str, cluster_id: int) -> dict[str, Any] | None:
    """One cluster summary of the current analysis.

    Parameters
    ----------
    store, dataset: the dataset.
    cluster_id: the cluster (``-1``: the noise points).

    Returns
    -------
    dict | None: the summary, or None when there is no analysis or no such cluster.

    Raises
    ------
    DatasetNotFound: ``dataset`` does not exist.
    """
    doc = load_analysis(store, dataset)
    if doc is None:
        return None
    for c in doc.get("clusters", []):
        if c["id"] == int(cluster_id):
            return c
    return None


def _truth_field(info: Any, truth_field: str | None) -> str | None:
    if truth_field:
        name = truth_field[5:] if truth_field.startswith("meta_") else truth_field
        if name not in info.metadata_fields:
            known = ", ".join(sorted(info.metadata_fields)) or "none"
            raise ValidationFailed(
                f"truth field {truth_field!r} is not a metadata field of {info.name!r} (fields: {known})"
            )
        return name
    return DEFAULT_TRUTH_FIELD if DEFAULT_TRUTH_FIELD in info.metadata_fields else None


# ----------------------------------------------------------------------------------------------
# analyze
# ----------------------------------------------------------------------------------------------


def analyze(
    store: Store,
    dataset: str,
    params: AnalyzeParams | Mapping[str, Any] | None = None,
    *,
    refit: bool = False,
    truth_field: str | None = None,
    progress: ProgressFn | None = None,
    record_run: bool = True,
    run_id: str | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> AnalysisReport:
    """Analyze ``dataset``: project, cluster and summarise it, and remember the result (the module
    docstring says what is written and how the mode is chosen).

    Parameters
    ----------
    store, dataset: the dataset to analyze.
    params: :class:`AnalyzeParams`, or a dict of its fields (None: the defaults).
    refit: fit a new map even when the saved one could be kept.
    truth_field: the metadata field of the per-slice check (default: ``slice`` when the dataset has it).
    progress: ``progress(done, total, message)``, over ``STAGES`` steps.
    record_run: write a ``run`` document of kind ``analyze`` (False when a job runner records the run).
    run_id: the run id (default ``analyze-<time>-<hex>``); a job passes its own.
    engine: where rows are placed on the map: ``local`` (worker processes) or ``ray`` (Ray tasks; a local
        Ray unless ``ray_address``). The result is the same.
    workers: local worker processes (default: the machine's cores; 1: in this process).
    chunk_rows: rows read and placed per chunk (rounded up to whole ``placement.BLOCK`` s); memory holds
        the sample plus a few chunks, never every vector. The result does not depend on it.

    Returns
    -------
    AnalysisReport: the mode (fit | transform | recluster | reuse), counts, versions and timings.

    Raises
    ------
    ValueError: invalid or unknown parameters, an unknown ``truth_field``, or no row with an embedding.
    DatasetNotFound: ``dataset`` does not exist.
    """
    if engine not in ENGINES:
        raise ValidationFailed(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    run = _begin(store, dataset, params, refit=refit, truth_field=truth_field, progress=progress, run_id=run_id)
    run.exec = _Exec(engine, ray_address, max(1, int(workers or os.cpu_count() or 1)), chunk_rows_for(chunk_rows))
    if _reusable(run):
        _reuse(run)
    else:
        rows = _load_rows(run)
        state = _saved_state(run, rows)
        if state is None:
            projector, clusterer, xy, labels, changed = _fit(run, rows)
        else:
            projector, clusterer, xy, labels, changed = _keep_map(run, rows, state)
        summary = _summarize(run, rows, xy, labels)
        labels, summary = _absorb_strays(run, rows, xy, labels, changed, summary)
        state_ref = _write_map(run, rows, xy, labels, changed, (projector, clusterer))
        _record_analysis(run, summary, state_ref, clusterer)
    if record_run:
        _record_run(store, dataset, run.report, run.started_at)
    return run.report


@dataclass
class _Run:
    """One ``analyze`` call: its inputs, the previous analysis and what the steps fill in."""

    store: Store
    dataset: str
    params: AnalyzeParams
    info: DatasetInfo
    truth: str | None
    refit: bool
    current: AnalysisDoc | None  # the previous analysis document
    report: AnalysisReport
    progress: ProgressFn | None
    started: float  # time.perf_counter() at the start
    started_at: str  # ISO time at the start
    proj_key: str
    clus_key: str
    rows_hint: int = 0  # rows with an embedding when the run began
    timings: dict[str, float] = field(default_factory=dict)
    exec: _Exec = field(default_factory=lambda: _Exec())

    def step(self, n: int, message: str) -> None:
        if self.progress:
            self.progress(n, STAGES, message)


@dataclass
class _Exec:
    """How the placement runs (no effect on the result)."""

    engine: str = "local"
    ray_address: str | None = None
    workers: int = 1
    chunk_rows: int = CHUNK_ROWS


@dataclass
class _Rows:
    """The rows an analysis works on (ok rows with an embedding), as loaded: every column but the vectors
    (those are streamed, see sampling.py); ``features`` are filled in by the placement pass."""

    table: pa.Table  # every loaded column but the embedding
    addresses: np.ndarray  # uint64 row addresses in the version read (Store.set_columns_at)
    ids: list[str]
    xs: np.ndarray  # the previous map's coordinates, NaN where a row has none
    ys: np.ndarray
    clusters: np.ndarray  # the previous clusters, -1 where a row has none
    features: np.ndarray | None = None  # (n, c) float32: every row as the map sees it (summaries)

    @property
    def n(self) -> int:
        return int(self.table.num_rows)

    @property
    def new(self) -> np.ndarray:
        """Rows not on the previous map (ingested since)."""
        return np.isnan(self.xs) | np.isnan(self.ys)


def _begin(
    store: Store,
    dataset: str,
    params: AnalyzeParams | Mapping[str, Any] | None,
    *,
    refit: bool,
    truth_field: str | None,
    progress: ProgressFn | None,
    run_id: str | None,
) -> _Run:
    """Check the parameters and read what the run starts from (the dataset, table version, previous
    analysis)."""
    started = time.perf_counter()
    p = params if isinstance(params, AnalyzeParams) else AnalyzeParams.from_dict(params)
    p.check()
    info = store.get_dataset(dataset)
    truth = _truth_field(info, truth_field)
    run_id = run_id or f"analyze-{now_utc().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    started_at = now_utc().isoformat()
    version_read = store.version(dataset)
    rows_hint = store.count(dataset, where=ok_and(HAS_EMBEDDING))
    current = cast("AnalysisDoc | None", load_analysis(store, dataset))
    report = AnalysisReport(
        dataset=dataset, run_id=run_id, mode="fit", version_read=version_read, params=asdict(p), truth_field=truth
    )
    return _Run(
        store=store,
        dataset=dataset,
        params=p,
        info=info,
        truth=truth,
        refit=refit,
        current=current,
        report=report,
        progress=progress,
        started=started,
        started_at=started_at,
        proj_key=p.projection_key(info.dim, info.embedder, rows_hint),
        clus_key=p.clustering_key(),
        rows_hint=rows_hint,
    )


def _reusable(run: _Run) -> bool:
    """Decide reuse: no refit, the same parameters and truth field as the previous analysis, and the
    samples table unchanged since that analysis wrote it (its ``version_written`` is the version read)."""
    cur = run.current
    return (
        not run.refit
        and cur is not None
        and cur.get("projection_key") == run.proj_key
        and cur.get("clustering_key") == run.clus_key
        and cur.get("min_errors") == run.params.min_errors
        and cur.get("version_written") == run.report.version_read
        and cur.get("truth_field") == run.truth
    )


def _reuse(run: _Run) -> None:
    """Mode ``reuse``: the report says what the previous analysis found; nothing is written."""
    cur = run.current
    assert cur is not None  # _reusable checked
    report = run.report
    report.mode = "reuse"
    report.rows = int(cur.get("rows", 0))
    report.n_clusters = int(cur.get("n_clusters", 0))
    report.n_failure_clusters = int(cur.get("n_failure_clusters", 0))
    report.base_error_rate = float(cur.get("base_error_rate", 0.0))
    report.version_written = report.version_read
    report.method = cur.get("method", "")
    report.pca_used = bool(cur.get("pca_used"))
    report.slices = list(cur.get("slices", []))
    report.duration_s = time.perf_counter() - run.started
    run.step(STAGES, "reused the previous analysis")


def _load_rows(run: _Run) -> _Rows:
    """Load the ok rows with an embedding, without their vectors (streamed later): ids, previous map
    columns, labels, scores, metadata; read chunk by chunk at the version the run began with. Raises
    ValueError when there is none."""
    run.step(0, "loading rows")
    t = time.perf_counter()
    meta_cols = ["meta_" + f for f in run.info.metadata_fields]
    schema_names = set(run.store.schema(run.dataset).names)
    columns = [
        "id",
        "x",
        "y",
        "cluster",
        "labeled",
        "correct",
        "label",
        "pred_label",
        "confidence",
        *[c for c in UNCERTAINTY_COLUMNS if c in schema_names],
        *[c for c in meta_cols if c in schema_names],
    ]
    parts = list(
        run.store.scan_chunks(
            run.dataset, columns=columns, where=ok_and(HAS_EMBEDDING), chunk_rows=run.exec.chunk_rows,
            version=run.report.version_read, with_row_address=True,  # small batches: Lance's buffers scale with them
        )
    )
    if not parts:
        raise ValidationFailed(f"dataset {run.dataset!r} has no rows with an embedding: ingest images first")
    table = pa.concat_tables(parts)
    addresses = table.column("_rowaddr").to_numpy()
    table = table.drop_columns(["_rowaddr"])
    rows = _Rows(
        table=table,
        addresses=addresses,
        ids=table.column("id").to_pylist(),
        xs=_float_col(table, "x"),
        ys=_float_col(table, "y"),
        clusters=np.array([-1 if v is None else int(v) for v in table.column("cluster").to_pylist()], dtype=np.int32),
    )
    run.report.rows = rows.n
    run.timings["load"] = time.perf_counter() - t
    return rows


def _source(run: _Run, rows: _Rows) -> Source:
    return Source(
        store=run.store,
        dataset=run.dataset,
        where=ok_and(HAS_EMBEDDING),
        version=run.report.version_read,
        dim=run.info.dim,
        ids=np.asarray(rows.ids, dtype=object),
        chunk_rows=run.exec.chunk_rows,
    )


def _saved_state(run: _Run, rows: _Rows) -> tuple[Projector, Clusterer] | None:
    """Decide fit or keep the map: the saved (projector, clusterer) when the map can be kept (no refit, the
    same projection parameters, a readable saved state whose clusters match its fitted rows, some rows
    already on the map, and for new clustering parameters the fitted rows' ids), else None."""
    cur = run.current
    if run.refit or cur is None or cur.get("projection_key") != run.proj_key:
        return None
    state = _load_state(run.store, run.dataset, cur.get("state"))
    if state is None or rows.new.all():
        return None
    projector, clusterer = state
    if len(getattr(clusterer, "labels_", ())) != len(getattr(projector, "train_", ())):
        return None
    if cur.get("clustering_key") != run.clus_key and getattr(projector, "train_ids_", None) is None:
        return None  # re-clustering needs to know which rows the map was fitted on (states before sampling)
    return state


Fitted = tuple[Projector, Clusterer, np.ndarray, np.ndarray, np.ndarray]


def _fit(run: _Run, rows: _Rows) -> Fitted:
    """Mode ``fit``: fit the map and the clusters on the seeded sample, place every other row (its
    coordinates and cluster from its nearest sampled rows). Returns (projector, clusterer, xy, labels,
    changed rows)."""
    t = time.perf_counter()
    p, report = run.params, run.report
    report.mode = "fit"
    source = _source(run, rows)
    pos = sample_positions(rows.n, int(p.sample_rows), p.seed)
    run.step(1, f"reading the {pos.size} sampled rows' vectors" if pos.size < rows.n else "reading vectors")
    projector = p.projector()
    reduced = projector.fit_reduce(read_sample(source, pos), n_total=rows.n, progress=lambda m: run.step(1, m))
    projector.train_ids_ = [rows.ids[i] for i in pos]
    k = int(p.n_neighbors)
    graph: tuple[np.ndarray, np.ndarray] | None = None
    if reduced.shape[0] >= UMAP_SMALL_ROWS:
        run.step(1, f"neighbour graph of {reduced.shape[0]} rows")
        gi, gd, index = knn_graph(reduced, k)
        graph = (gi, gd)
    else:
        index = NeighbourIndex(reduced)
    place = np.ones(rows.n, dtype=bool)
    place[pos] = False
    judged, error = _judged_errors(rows.table)

    def fit_map_and_clusters() -> Clusterer:
        projector.fit_map(reduced, knn=graph, progress=lambda m: run.step(1, m))
        run.timings["project"] = time.perf_counter() - t
        run.step(2, f"clustering {pos.size} points")
        return p.clusterer().fit(projector.embedding_, error=error[pos], judged=judged[pos])

    if place.any():
        clusterer, nb = _overlapped(run, rows, source, _state_for(projector, index), place, fit_map_and_clusters)
    else:
        clusterer, nb = fit_map_and_clusters(), None
        rows.features = reduced
    xy = np.empty((rows.n, 2), dtype=np.float32)
    labels = np.empty(rows.n, dtype=np.int32)
    xy[pos], labels[pos] = projector.embedding_, clusterer.labels_
    if nb is not None:
        xy[place] = place_xy(projector.embedding_, nb.idx[place], nb.dist[place])
        labels[place] = vote_labels(clusterer.labels_, nb.idx[place], nb.dist[place])
    report.fitted, report.placed = int(pos.size), int(place.sum())
    _method(run, projector)
    run.timings["fit_and_place"] = time.perf_counter() - t
    return projector, clusterer, xy, labels, np.ones(rows.n, dtype=bool)


def _state_for(projector: Projector, index: NeighbourIndex) -> PlacementState:
    return PlacementState(
        normalize=projector.metric == "cosine", pca=projector.pca_, index=index, k=int(projector.n_neighbors)
    )


def _overlapped(
    run: _Run,
    rows: _Rows,
    source: Source,
    state: PlacementState,
    place: np.ndarray,
    fit: Callable[[], Clusterer],
) -> tuple[Clusterer, Neighbours]:
    """Run the placement pass (neighbours need only the PCA and the index) in a thread feeding the
    workers while this thread fits UMAP (single-threaded when seeded) and HDBSCAN: both cores work."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="edgeminer-place") as feeder:
        future = feeder.submit(_neighbours, run, rows, source, state, place)
        try:
            clusterer = fit()
        finally:
            nb = future.result()
    return clusterer, nb


def _neighbours(run: _Run, rows: _Rows, source: Source, state: PlacementState, need: np.ndarray) -> Neighbours:
    """Pass 2 over every row (sampling.stream_neighbours); sets ``rows.features``."""
    t = time.perf_counter()
    dims = int(state.pca.n_components_) if state.pca is not None else run.info.dim
    nb = stream_neighbours(
        source,
        state,
        need,
        dims=dims,
        workers=run.exec.workers if rows.n > run.exec.chunk_rows else 1,
        engine=run.exec.engine,
        ray_address=run.exec.ray_address,
        progress=lambda done: run.step(2, f"placed {done}/{rows.n} rows (features and nearest fitted rows)"),
    )
    rows.features = nb.features
    run.timings["place"] = time.perf_counter() - t
    return nb


def _method(run: _Run, projector: Projector) -> None:
    run.report.method = getattr(projector, "method_", "")
    run.report.pca_used = getattr(projector, "pca_", None) is not None


def _keep_map(run: _Run, rows: _Rows, state: tuple[Projector, Clusterer]) -> Fitted:
    """Modes ``transform`` (same clustering parameters: new rows get coordinates and a cluster from their
    nearest fitted rows, the others keep theirs) and ``recluster`` (other clustering parameters: the
    fitted rows are clustered again, every other row takes the cluster of its nearest fitted rows)."""
    t = time.perf_counter()
    projector, clusterer = state
    cur, report = run.current, run.report
    recluster = cur is None or cur.get("clustering_key") != run.clus_key
    report.mode = "recluster" if recluster else "transform"
    new = rows.new
    train_pos = _train_positions(rows, projector) if recluster else None
    if recluster:
        assert train_pos is not None
        run.step(2, f"clustering {int((train_pos >= 0).sum())} fitted points")
        judged, error = _judged_errors(rows.table)
        tj, te = np.zeros(len(projector.train_), bool), np.zeros(len(projector.train_), bool)
        on = train_pos >= 0
        tj[train_pos[on]], te[train_pos[on]] = judged[on], error[on]
        clusterer = run.params.clusterer().fit(projector.embedding_, error=te, judged=tj)
    need = (train_pos < 0) if train_pos is not None else new
    if new.any():
        run.step(1, f"placing {int(new.sum())} new rows on the saved map")
    nb = _neighbours(run, rows, _source(run, rows), _state_for(projector, NeighbourIndex(projector.train_)), need | new)
    xy = np.stack([rows.xs, rows.ys], axis=1).astype(np.float32)
    xy[new] = place_xy(projector.embedding_, nb.idx[new], nb.dist[new])
    labels = rows.clusters.copy()
    labels[need] = vote_labels(clusterer.labels_, nb.idx[need], nb.dist[need])
    if train_pos is not None:
        labels[train_pos >= 0] = clusterer.labels_[train_pos[train_pos >= 0]]
    report.transformed = report.placed = int(new.sum())
    report.fitted = int(getattr(projector, "n_fit_", 0))
    _method(run, projector)
    run.timings["place_and_cluster"] = time.perf_counter() - t
    changed = np.ones(rows.n, dtype=bool) if recluster else new
    return projector, clusterer, xy, labels, changed


def _train_positions(rows: _Rows, projector: Projector) -> np.ndarray:
    """Each row's position among the map's fitted rows (by id), -1 for the others."""
    where = {i: j for j, i in enumerate(getattr(projector, "train_ids_", None) or [])}
    return np.array([where.get(i, -1) for i in rows.ids], dtype=np.int64)


def _judged_errors(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(judged, error) per row: labeled with a prediction; judged and wrong."""
    labeled = np.asarray([bool(v) for v in table.column("labeled").to_pylist()], dtype=np.bool_)
    correct = table.column("correct").to_pylist()
    judged = labeled & np.asarray([c is not None for c in correct], dtype=np.bool_)
    error = judged & np.asarray([c is False for c in correct], dtype=np.bool_)
    return judged, error


def _summarize(run: _Run, rows: _Rows, xy: np.ndarray, labels: np.ndarray) -> Mapping[str, Any]:
    """Cluster summaries over every row (clustering.summarize_clusters) and the per-slice quality check
    (into the report) when there is a truth field."""
    run.step(3, "summarising clusters")
    t = time.perf_counter()
    table = rows.table
    cols = {c: table.column(c).to_pylist() for c in table.column_names if c not in ("x", "y", "cluster")}
    cols["x"] = xy[:, 0].tolist()
    cols["y"] = xy[:, 1].tolist()
    summary = summarize_clusters(
        labels,
        cols,
        embeddings=rows.features,
        min_errors=run.params.min_errors,
        metadata_fields=run.info.metadata_fields,
    )
    ranks = {c["id"]: c["failure_rank"] for c in summary["clusters"]}
    if run.truth is not None:
        failing = [cid for cid, r in ranks.items() if r is not None]
        _, error = _judged_errors(table)
        conf = np.array([np.nan if v is None else float(v) for v in cols["confidence"]], dtype=np.float64)
        assert rows.features is not None
        scores = failure_scores(labels, failing, rows.features, error, conf)
        run.report.slices = slice_quality(
            labels,
            cols["meta_" + run.truth],
            failure_rank=ranks,
            scores={cid: scores[:, j] for j, cid in enumerate(failing)},
        )
    run.timings["summarise"] = time.perf_counter() - t
    return summary


def _absorb_strays(
    run: _Run, rows: _Rows, xy: np.ndarray, labels: np.ndarray, changed: np.ndarray, summary: Mapping[str, Any]
) -> tuple[np.ndarray, Mapping[str, Any]]:
    """Failure clusters (``clusters="failure"``) take in their class's stray labeled errors
    (clustering.absorb_stray_errors); the moved rows join ``changed`` and the clusters are summarised
    again. Returns the labels and the summary to write."""
    failing = [c["id"] for c in summary["clusters"] if c.get("failure_rank") is not None]
    if run.params.clusters != "failure" or not failing or rows.features is None:
        return labels, summary
    t = time.perf_counter()
    _, error = _judged_errors(rows.table)
    moved_to = absorb_stray_errors(labels, failing, rows.features, error, rows.table.column("label").to_pylist())
    moved = moved_to != labels
    run.timings["strays"] = time.perf_counter() - t
    run.report.strays_moved = int(moved.sum())
    if not moved.any():
        return labels, summary
    changed |= moved
    return moved_to, _summarize(run, rows, xy, moved_to)


def _write_map(
    run: _Run,
    rows: _Rows,
    xy: np.ndarray,
    labels: np.ndarray,
    changed: np.ndarray,
    fitted: tuple[Projector, Clusterer],
) -> AnalysisStateRef:
    """Write ``x``, ``y``, ``cluster`` of the changed rows, then compact the table (the reuse rule
    compares the version after that), and save the fitted state unless the run kept it. Returns where
    the state is."""
    run.step(4, "writing coordinates and clusters")
    t = time.perf_counter()
    store, dataset, report = run.store, run.dataset, run.report
    changed_idx = np.flatnonzero(changed)
    report.version_written = report.version_read
    if changed_idx.size:
        _write_columns(run, rows, changed_idx, xy, labels)
        store.compact(dataset)  # the map's columns were rewritten in pieces: reads stay one-fragment fast
        report.version_written = store.version(dataset)
    old_ref = run.current.get("state") if run.current is not None else None
    if report.mode == "transform":  # the saved state was loaded and kept
        state_ref = AnalysisStateRef(**(old_ref or {}))
    else:
        state_ref = _save_state(store, dataset, report.run_id, *fitted)
        _drop_old_state(store, dataset, old_ref, state_ref)
    run.timings["write"] = time.perf_counter() - t
    return state_ref


def _write_columns(run: _Run, rows: _Rows, idx: np.ndarray, xy: np.ndarray, labels: np.ndarray) -> None:
    """Write x, y, cluster of the rows ``idx``: only those columns' files, by row address in the version
    read (Store.set_columns_at); if the table was rewritten since (a compaction elsewhere), by id in
    bounded merges (Store.update_columns, which reads the whole table)."""
    cols = {
        "x": pa.array(xy[idx, 0], pa.float32()),
        "y": pa.array(xy[idx, 1], pa.float32()),
        "cluster": pa.array(labels[idx].astype(np.int32), pa.int32()),
    }
    try:
        run.store.set_columns_at(run.dataset, rows.addresses[idx], cols, read_version=run.report.version_read)
        return
    except (OSError, RuntimeError, ValueError):  # Lance's commit conflict: the rows moved since the read
        pass
    for start in range(0, idx.size, WRITE_ROWS):
        part = idx[start : start + WRITE_ROWS]
        update = pa.table({"id": pa.array([rows.ids[i] for i in part], pa.string())})
        for name, values in cols.items():
            update = update.append_column(name, values.take(pa.array(np.arange(start, start + part.size))))
        run.store.update_columns(run.dataset, update)


def _record_analysis(run: _Run, summary: Mapping[str, Any], state_ref: AnalysisStateRef, clusterer: Clusterer) -> None:
    """Fill the report and write the ``analysis`` document ``current``."""
    p, report = run.params, run.report
    report.n_clusters = summary["n_clusters"]
    report.n_failure_clusters = summary["n_failure_clusters"]
    report.base_error_rate = summary["base_error_rate"]
    report.timings = {k: round(v, 3) for k, v in run.timings.items()}
    report.duration_s = time.perf_counter() - run.started
    doc: AnalysisDoc = {
        "run_id": report.run_id,
        "mode": report.mode,
        "params": asdict(p),
        "seed": p.seed,
        "projection_key": run.proj_key,
        "clustering_key": run.clus_key,
        "min_errors": p.min_errors,
        "method": report.method,
        "pca_used": report.pca_used,
        "min_cluster_size": int(getattr(clusterer, "min_cluster_size_", 0)),
        "fitted_rows": report.fitted,
        "transformed_rows": report.transformed,
        "version_read": report.version_read,
        "version_written": report.version_written,
        "state": state_ref,
        "truth_field": run.truth,
        "slices": report.slices,
        "duration_s": report.duration_s,
        "timings": report.timings,
        "analyzed_at": now_utc().isoformat(),
        # clustering.summarize_clusters'
        "base_error_rate": summary["base_error_rate"],
        "rows": summary["rows"],
        "judged": summary["judged"],
        "errors": summary["errors"],
        "n_clusters": summary["n_clusters"],
        "n_failure_clusters": summary["n_failure_clusters"],
        "clusters": summary["clusters"],
    }
    run.store.put_doc(run.dataset, ANALYSIS_KIND, CURRENT_ID, doc)
    run.step(STAGES, "done")


def _float_col(table: pa.Table, name: str) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in table.column(name).to_pylist()], dtype=np.float64)


def report_result(report: AnalysisReport) -> dict[str, Any]:
    """The dict an analyze job returns (also the ``result`` of the run document ``analyze`` records).

    Parameters
    ----------
    report: what :func:`analyze` returned.

    Returns
    -------
    dict: run id, mode, ``counts``, versions, duration, base error rate, slices and timings; the job
    runner lifts ``counts`` and the versions to the run document. Raises nothing.
    """
    return {
        "run_id": report.run_id,
        "mode": report.mode,
        "counts": {
            "rows": report.rows,
            "fitted": report.fitted,
            "transformed": report.transformed,
            "placed": report.placed,
            "clusters": report.n_clusters,
            "failure_clusters": report.n_failure_clusters,
        },
        "version_read": report.version_read,
        "version_written": report.version_written,
        "duration_s": round(report.duration_s, 3),
        "base_error_rate": report.base_error_rate,
        "slices": report.slices,
        "timings": report.timings,
    }


def _record_run(store: Store, dataset: str, report: AnalysisReport, started_at: str) -> None:
    """Record the analysis as a ``run`` document of kind ``analyze`` (status succeeded)."""
    result = report_result(report)
    doc = new_run_doc(
        "analyze",
        dataset,
        report.params,
        run_id=report.run_id,
        status="succeeded",
        created_at=started_at,
        version_read=report.version_read,
    )
    doc.update(
        {
            "progress": {"done": STAGES, "total": STAGES, "message": "done"},
            "counts": result["counts"],
            "result": result,
            "version_written": report.version_written,
            "finished_at": now_iso(),
            "duration_s": round(report.duration_s, 3),
        }
    )
    store.put_doc(dataset, RUN, report.run_id, doc, name=doc["kind"])


# ----------------------------------------------------------------------------------------------
# Text output (CLI)
# ----------------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def format_clusters(doc: Mapping[str, Any], *, top: int = 15, include_all: bool = False) -> str:
    """The CLI's cluster table.

    Parameters
    ----------
    doc: an analysis document (``load_analysis``).
    top: at most this many clusters.
    include_all: every cluster, not only the failure clusters.

    Returns
    -------
    str: a header line, then one line per cluster (rank, size, errors, lift, main confusion, trait).
    Raises nothing.
    """
    clusters = [c for c in doc.get("clusters", []) if include_all or c.get("is_failure")]
    lines = [
        f"{doc.get('rows', 0)} rows, {doc.get('n_clusters', 0)} clusters, {doc.get('n_failure_clusters', 0)} "
        f"failure clusters; base error rate {_pct(doc.get('base_error_rate'))} "
        f"({doc.get('errors', 0)} errors / {doc.get('judged', 0)} judged); run {doc.get('run_id')}",
    ]
    if not clusters:
        lines.append("no failure clusters (no cluster has more errors than the dataset's rate suggests)")
        return "\n".join(lines)
    head = (
        f"{'rank':>4} {'cluster':>7} {'size':>6} {'unlab':>6} {'errors':>6} {'err%':>5} {'lift':>5}  "
        f"{'main confusion':<22} common trait"
    )
    lines.append(head)
    for c in clusters[:top]:
        conf = c["top_confusions"][0] if c["top_confusions"] else None
        conf_txt = f"{conf['label']} -> {conf['pred']} ({conf['count']})" if conf else "-"
        lift = "-" if c["lift"] is None else f"{c['lift']:.1f}"
        rank = "-" if c["failure_rank"] is None else str(c["failure_rank"])
        lines.append(
            f"{rank:>4} {c['id']:>7} {c['size']:>6} {c['unlabeled']:>6} {c['errors']:>6} "
            f"{_pct(c['error_rate']):>5} {lift:>5}  {conf_txt:<22} {_trait(c)}"
        )
    if len(clusters) > top:
        lines.append(f"... {len(clusters) - top} more (--top N or --json)")
    return "\n".join(lines)


def common_trait(cluster: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metadata value most over-represented in the cluster, held by at least half of it and at more
    than 1.5x its dataset share: ``{field, value, share, dataset_share}``, or None. The CLI prints it and
    the API serves it (``common_trait`` of each cluster), so the dashboard shows the same one."""
    best: dict[str, Any] | None = None
    best_lift = 1.5
    for name, m in (cluster.get("metadata") or {}).items():
        if not m or "value" not in m or m["share"] < 0.5:
            continue
        lift = m["share"] / max(m["dataset_share"], 1e-9)
        if lift > best_lift:
            best = {"field": name, "value": m["value"], "share": m["share"], "dataset_share": m["dataset_share"]}
            best_lift = lift
    return best


def _trait(cluster: Mapping[str, Any]) -> str:
    t = common_trait(cluster)
    return "-" if t is None else f"{t['field']}={t['value']} {t['share']:.0%} (dataset {t['dataset_share']:.0%})"


def _num(v: float | None) -> str:
    return f"{'-':>5}" if v is None else f"{v:>5.2f}"


def format_slices(slices: Sequence[Mapping[str, Any]], truth_field: str | None) -> str:
    """The CLI's per-slice quality table.

    Parameters
    ----------
    slices: the ``slices`` of an analysis (clustering.slice_quality).
    truth_field: the metadata field they are slices of (for the header).

    Returns
    -------
    str: one line per slice (best cluster, precision, recall, failure rank, and the precision@10 / @25
    and AUROC of that cluster's failure score over every row), "" when there are none.
    Raises nothing.
    """
    if not slices:
        return ""
    lines = [
        f"per-slice check ({truth_field}): best cluster per slice",
        f"{'slice':<12} {'rows':>5} {'cluster':>7} {'precision':>9} {'recall':>6} {'rank':>5} {'p@10':>5} "
        f"{'p@25':>5} {'auroc':>5}  majority clusters",
    ]
    for s in slices:
        rank = "-" if s["failure_rank"] is None else str(s["failure_rank"])
        cl = "-" if s["cluster"] is None else str(s["cluster"])
        maj = ",".join(str(c) for c in s["majority_clusters"]) or "-"
        ranking = " ".join(_num(s.get(k)) for k in ("p_at_10", "p_at_25", "auroc"))
        lines.append(
            f"{str(s['slice']):<12} {s['rows']:>5} {cl:>7} {s['precision']:>9.2f} {s['recall']:>6.2f} {rank:>5} "
            f"{ranking}  {maj} (recall {s['majority_recall']:.2f})"
        )
    return "\n".join(lines)
