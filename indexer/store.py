"""The store: the ONLY module that imports lancedb.

Layout inside one LanceDB database (a local directory by default, any LanceDB URI works)::

    _catalog              one row per dataset: name + JSON info (embedder, dim, classes, task, metadata fields)
    <dataset>__samples    one row per image, or per object patch for detection data (schema below)
    <dataset>__docs       small JSON documents of the dataset: runs (jobs), issues, exports, clusters,
                          analysis state, stream decisions. One table instead of one per kind: they are
                          all tiny, keyed by id, and read whole, so one merge_insert path serves them all.

Writes go through ``merge_insert`` on the stable ``id``; nothing rewrites a table. Every write returns
the table version it produced, and jobs record the version they read, so an export can be reproduced
with ``query(..., version=v)`` (LanceDB time travel).

Score columns all point the same way: **higher = less certain**, except ``confidence`` (the top
probability, higher = more certain), kept because people filter on it ("score below 0.5").
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("RUST_LOG", "error")

import lancedb  # noqa: E402  (after the log level is set)
import orjson  # noqa: E402

from edgeminer.indexer.errors import (  # noqa: E402
    DatasetExists,
    DatasetNotFound,
    DatasetUnreadable,
    DocNotFound,
    EdgeminerError,
    InvalidDatasetName,
    NotSupported,
    SchemaMismatch,
    Unavailable,
    UnknownField,
    ValidationFailed,
)
from edgeminer.indexer.roots import is_remote_uri  # noqa: E402
from edgeminer.indexer.where import HAS_EMBEDDING, ids_in, ok_and, sql_quote  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------

DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,62}$")
META_PREFIX = "meta_"
SCORE_COLUMNS = ("confidence", "least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald")
UNCERTAINTY_COLUMNS = ("least_confidence", "margin", "ratio", "entropy", "mc_variance", "bald")
OUTCOMES = ("correct", "wrong_class", "false_positive", "false_negative")
TASKS = ("classification", "detection")
STATUSES = ("ok", "error")

#: metadata type name -> Arrow type. Sources infer these; the dataset records them.
META_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

TS = pa.timestamp("us", tz="UTC")

#: Columns written by analysis / exports / tagging that an ingest of the same id must not clobber.
DERIVED_COLUMNS = ("x", "y", "cluster", "tags", "exported")


def core_fields(dim: int) -> list[pa.Field]:
    """The fixed part of the samples schema (metadata columns are appended per dataset)."""
    return [
        pa.field("id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("parent_id", pa.string()),
        pa.field("bbox", pa.list_(pa.float32(), 4)),  # x, y, w, h in pixels of the parent image
        pa.field("area", pa.float32()),
        pa.field("width", pa.int32()),  # pixel size of the image (the parent's for object rows)
        pa.field("height", pa.int32()),
        pa.field("split", pa.string()),
        pa.field("labeled", pa.bool_()),
        pa.field("label", pa.string()),
        pa.field("pred_label", pa.string()),
        pa.field("pred_label2", pa.string()),  # second most likely class (top-2 confusion pairs)
        pa.field("probs", pa.list_(pa.float32())),  # aligned with the dataset's classes
        *[pa.field(c, pa.float32()) for c in SCORE_COLUMNS],
        pa.field("correct", pa.bool_()),
        pa.field("outcome", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), dim)),
        pa.field("x", pa.float32()),
        pa.field("y", pa.float32()),
        pa.field("cluster", pa.int32()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("exported", pa.list_(pa.string())),
        pa.field("ingested_at", TS),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("fingerprint", pa.string()),  # hash of what the source said about the row
    ]


CORE_COLUMNS = tuple(f.name for f in core_fields(1))


def sample_schema(dim: int, metadata_fields: Mapping[str, str] | None = None) -> pa.Schema:
    fields = core_fields(dim)
    for name, type_name in (metadata_fields or {}).items():
        fields.append(pa.field(META_PREFIX + name, META_TYPES[type_name]))
    return pa.schema(fields)


DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("kind", pa.string()),
        pa.field("name", pa.string()),
        pa.field("doc", pa.string()),
        pa.field("created_at", TS),
        pa.field("updated_at", TS),
    ]
)
CATALOG_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("info", pa.string()),
        pa.field("created_at", TS),
    ]
)


# ----------------------------------------------------------------------------------------------
# Errors: the store raises classes of the one tree in indexer/errors.py (documented there); the names it
# imports from there stay importable from here.
# ----------------------------------------------------------------------------------------------

#: what older callers catch as "anything the store refuses": every error the store raises is one.
StoreError = EdgeminerError


# ----------------------------------------------------------------------------------------------
# Dataset info
# ----------------------------------------------------------------------------------------------


@dataclass
class DatasetInfo:
    name: str
    dim: int
    embedder: dict[str, Any]
    classes: list[str] = field(default_factory=list)
    task: str = "classification"
    metadata_fields: dict[str, str] = field(default_factory=dict)
    media_roots: list[str] = field(default_factory=list)
    created_at: str = ""
    #: how many leading ``classes`` the model's probabilities cover (None: all of them). Classes only
    #: ever grow at the end (a label import with add_classes, an ingest bringing new labels), so the probs
    #: of older rows, and those the unchanged model sends, are aligned with that prefix; the classes after
    #: it have probability 0 there. Set by :meth:`Store.update_dataset` the first time classes are added;
    #: ``indexer.scores.classes_for_probs`` names the classes of a probability vector.
    model_classes: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DatasetInfo:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    version: int = 0


# ----------------------------------------------------------------------------------------------
# Integrity check (Store.check, `edgeminer check`)
# ----------------------------------------------------------------------------------------------

#: ids (and row offsets) a check problem lists at most; ``count`` has them all.
CHECK_MAX_IDS = 100


@dataclass
class CheckProblem:
    """One thing wrong with a table. ``kind``: unreadable_table, missing_file, file_size, unreadable_fragment,
    row_count, schema, non_finite_vector, vector_overflow, wrong_dimension, missing_vector, null_id,
    duplicate_id, bad_document, index."""

    kind: str
    message: str
    fragment: int | None = None
    count: int = 0  # rows affected (0 when the problem is not about rows)
    ids: list[str] = field(default_factory=list)  # the first CHECK_MAX_IDS affected ids
    rows: list[int] = field(default_factory=list)  # their offsets inside the fragment

    def add(self, ids: Sequence[Any] | np.ndarray, rows: Sequence[int] | np.ndarray) -> None:
        self.count += len(rows)
        room = CHECK_MAX_IDS - len(self.rows)
        if room > 0:
            self.ids.extend(str(i) for i in list(ids)[:room])
            self.rows.extend(int(r) for r in list(rows)[:room])


@dataclass
class TableCheck:
    table: str  # "samples" or "docs"
    version: int = 0
    fragments: int = 0  # fragments in the table version checked
    fragments_read: int = 0  # read to the end without an error
    rows: int = 0  # rows read
    expected_rows: int = 0  # rows the table's manifest says it has
    indexes: list[str] = field(default_factory=list)  # indexes that opened and answered a query
    problems: list[CheckProblem] = field(default_factory=list)


@dataclass
class CheckReport:
    dataset: str
    dim: int
    tables: list[TableCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(t.problems for t in self.tables)

    def problems(self) -> list[tuple[str, CheckProblem]]:
        return [(t.table, p) for t in self.tables for p in t.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}

    def summary(self) -> str:
        lines = []
        for t in self.tables:
            idx = f", indexes ok: {', '.join(t.indexes)}" if t.indexes else ""
            lines.append(
                f"{self.dataset} {t.table} (version {t.version}): {t.fragments_read}/{t.fragments} fragments read, "
                f"{t.rows}/{t.expected_rows} rows{idx}"
            )
        problems = self.problems()
        if not problems:
            lines.append(f"ok: no problems found in {self.seconds:.1f}s (vectors finite, dimension {self.dim})")
            return "\n".join(lines)
        lines.append(f"{len(problems)} problem(s) found in {self.seconds:.1f}s:")
        for table, p in problems:
            where = f" fragment {p.fragment}" if p.fragment is not None else ""
            lines.append(f"  [{table}{where}] {p.kind}: {p.message}")
            if p.ids:
                more = f" (+{p.count - len(p.ids)} more)" if p.count > len(p.ids) else ""
                lines.append(f"      ids: {', '.join(p.ids[:20])}{' ...' if len(p.ids) > 20 else ''}{more}")
        return "\n".join(lines)


def usable_vectors(m: np.ndarray) -> np.ndarray:
    """Row mask of an (n, dim) float32 matrix: True where every value is finite and the squared norm
    does not overflow float32 (values ~1e19 and up make every cosine distance NaN)."""
    if m.size == 0:
        return np.ones(m.shape[0], dtype=bool)
    m32 = np.asarray(m, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", m32, m32)  # NaN for a NaN value, inf for an infinite one or an overflow
    return np.asarray(np.isfinite(sq), dtype=bool)


def unusable_vector_ids(table: pa.Table, dim: int) -> list[str]:
    """Ids of the rows of ``table`` (columns id, embedding) whose vector is non-finite or overflows."""
    if "embedding" not in table.column_names or table.num_rows == 0:
        return []
    emb = table.column("embedding")
    valid = pc.is_valid(emb)
    sub = table.filter(valid) if not pc.all(valid).as_py() else table
    if sub.num_rows == 0:
        return []
    bad = ~usable_vectors(embeddings_to_numpy(sub.column("embedding"), dim))
    if not bad.any():
        return []
    ids = sub.column("id").to_pylist()
    return [str(ids[n]) for n in np.flatnonzero(bad)]


def _refuse_unusable_vectors(table: pa.Table, dim: int) -> None:
    bad = unusable_vector_ids(table, dim)
    if bad:
        shown = ", ".join(repr(i) for i in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise SchemaMismatch(
            f"{len(bad)} vector(s) with NaN or infinite values (or too large to compare) refused: ids {shown}; "
            "nothing was written"
        )


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ----------------------------------------------------------------------------------------------
# Store
# ----------------------------------------------------------------------------------------------

#: rows at which a vector index is worth building; below it exact search is fast enough.
VECTOR_INDEX_MIN_ROWS = 50_000
#: fewest IVF partitions an index search probes, and the matching rows it wants the probed partitions
#: to hold (a selective filter probes more partitions, see probes_for); the re-rank depth (x k, on the
#: full vectors) of an IVF_PQ index (built before IVF_SQ became the default, see VECTOR_INDEX_TYPE).
SEARCH_NPROBES = 20
SEARCH_PROBE_MATCHES = 500
SEARCH_REFINE_FACTOR = 20
#: the vector index ensure_indexes builds: IVF with 8-bit scalar quantization (one byte a dimension). Its
#: distances are close to exact, so a re-rank of 2 x k full vectors recovers the true order, where IVF_PQ
#: (dim/8 sub-vectors, 1/32 of the bytes) needed 20 x k: at 1M x 512 with k = 30 (what one seed's mine asks)
#: that was 600 random reads of 2 KiB vectors a query, most of the index path's time (bench/search.py).
#: The price is the index's size: ~0.5 KiB a row (495 MB at 1M x 512) against IVF_PQ's 64 bytes.
VECTOR_INDEX_TYPE = "IVF_SQ"
#: re-rank depth (x k) by the index type found on the table (a table indexed before keeps its IVF_PQ).
REFINE_FACTORS = {"IVF_PQ": SEARCH_REFINE_FACTOR, "IVF_HNSW_PQ": SEARCH_REFINE_FACTOR, "IVF_SQ": 2, "IVF_HNSW_SQ": 2}
#: unindexed rows (appended since the index was built) that get folded into it (refresh_indexes).
REINDEX_UNINDEXED_ROWS = 20_000
#: small fragments (below LanceDB's target size) that make a samples table worth compacting. Every read
#: opens every fragment: the demo's table in 17 fragments of ~128 rows (one per ingest batch) answered a
#: column read in 7.9 ms of CPU and a 50-row page in 13.8 ms; compacted to 2 fragments, 2.9 and 4.1 ms.
COMPACT_MIN_FRAGMENTS = 8
#: a fragment under this many rows is "small" (LanceDB's own cut in ``stats()``), and compaction merges small
#: neighbours into fragments of about this size. Never Lance's default target (1M rows): with it a table
#: bulk-written in 100k-row fragments counts as all small, and one compaction rewrites every byte of it
#: (20 GB at 10M x 512 filled the disk, bench/search.py).
COMPACT_TARGET_ROWS = 100_000
#: how long old versions stay readable (`labels import` prints the version that holds the previous labels);
#: a compaction prunes older ones and the files only they use (LanceDB's default too).
VERSION_RETENTION = dt.timedelta(days=7)
#: a scalar index is refreshed (the rows it misses folded in) once it misses this many rows or this share of
#: the table, whichever is more. Filters stay exact on the rows it misses (Lance scans them), only slower.
SCALAR_REFRESH_MIN_ROWS = 1_000
SCALAR_REFRESH_SHARE = 0.01
#: the vector index is retrained (k-means anew, index_partitions(n) partitions) once the table holds more than
#: this times the vectors it was trained on: optimize only files new rows into the old partitions, which
#: fill up, so a probe reads ever more rows.
RETRAIN_GROWTH = 2.0
#: the Lance table config key recording how many vectors the vector index was trained on
TRAINED_ROWS_KEY = "edgeminer.vector_index.trained_rows"
#: how ensure_indexes builds scalar indexes and compacts: in this process, or as Ray tasks (lance-ray)
INDEX_ENGINES = ("local", "ray")
#: Ray workers (index segments, compaction tasks) when the caller does not say
RAY_INDEX_WORKERS = 4
#: columns that get a scalar index (filters on them are common and slow without one).
SCALAR_INDEXES = {
    "id": "BTREE",
    "split": "BITMAP",
    "labeled": "BITMAP",
    "label": "BITMAP",
    "pred_label": "BITMAP",
    "status": "BITMAP",
    "cluster": "BTREE",
    "outcome": "BITMAP",
}


class Store:
    """LanceDB-backed storage of datasets. Thread-safe for one process: writes to a dataset's
    tables are serialised by a per-dataset lock (the jobs module keeps one writer per dataset)."""

    def __init__(self, uri: str | os.PathLike[str], storage_options: Mapping[str, str] | None = None):
        """Open (or create) the store at ``uri``: a local directory or object storage (``s3://bucket/prefix``,
        ``gs://``, ``az://``). For object storage, ``storage_options`` (LanceDB's / Lance's keys such as
        ``aws_endpoint``) go over the options :func:`storage_options_for` reads from the environment; the
        store is probed once (a listing), and an endpoint that does not answer, a missing bucket or refused
        credentials raise :class:`Unavailable` with one line saying which."""
        self.uri = str(uri)
        if "://" not in self.uri:
            os.makedirs(self.uri, exist_ok=True)
        remote = is_remote_uri(self.uri)
        self.storage_options: dict[str, str] = storage_options_for(self.uri, storage_options) if remote else {}
        if remote:
            self._db = self._connect_remote()
        else:
            self._db = lancedb.connect(self.uri)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._tables: dict[str, Any] = {}
        self._info_cache: dict[str, DatasetInfo] = {}
        #: dataset -> pylance dataset of its samples table: the read path (see _read_ds)
        self._readers: dict[str, Any] = {}
        self._files_cache: dict[str, tuple[int, list[tuple[str, str, int]]]] = {}  # unreadable_reason

    # -- plumbing -----------------------------------------------------------------------------

    def _connect_remote(self) -> Any:
        """Connect to object storage and list it once, so a wrong endpoint, bucket or key fails here, as one
        line (:class:`Unavailable`)."""
        try:
            db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
            db.list_tables(limit=1)
        except Exception as exc:  # noqa: BLE001 - classified into one line for the user
            raise Unavailable(remote_failure(self.uri, self.storage_options, exc)) from None
        return db

    def lock(self, dataset: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(dataset, threading.RLock())

    def _table_names(self) -> set[str]:
        names: list[str] = []
        page_token = None
        while True:
            resp = self._db.list_tables(page_token=page_token, limit=1000)
            names.extend(resp.tables)
            page_token = getattr(resp, "page_token", None)
            if not page_token:
                break
        return set(names)

    def _open(self, name: str, schema: pa.Schema | None = None) -> Any:
        tbl = self._tables.get(name)
        if tbl is not None:
            return tbl
        if name in self._table_names():
            tbl = self._db.open_table(name)
        elif schema is not None:
            tbl = self._db.create_table(name, schema=schema, exist_ok=True)
        else:
            raise DatasetUnreadable(name.partition("__")[0], reason=f"table {name!r} is missing from {self.uri}")
        self._tables[name] = tbl
        return tbl

    def _catalog(self) -> Any:
        return self._open("_catalog", CATALOG_SCHEMA)

    def _samples(self, dataset: str) -> Any:
        self.get_dataset(dataset)
        tbl = self._open(f"{dataset}__samples")
        tbl.checkout_latest()
        return tbl

    def _docs(self, dataset: str) -> Any:
        self.get_dataset(dataset)
        tbl = self._open(f"{dataset}__docs", DOC_SCHEMA)
        # a handle left at an old version would match a merge_insert against that version: a document
        # another process wrote since would be inserted a second time instead of updated
        tbl.checkout_latest()
        return tbl

    # -- datasets -----------------------------------------------------------------------------

    def list_datasets(self) -> list[DatasetInfo]:
        tbl = self._catalog()
        tbl.checkout_latest()
        rows = tbl.to_arrow().to_pylist()
        return sorted((DatasetInfo.from_json(r["info"]) for r in rows), key=lambda d: d.name)

    def has_dataset(self, name: str) -> bool:
        try:
            self.get_dataset(name)
            return True
        except DatasetNotFound:
            return False

    def dataset(self, name: str) -> Dataset:
        """A handle on dataset ``name`` (its info, schema, tables), checked to exist once here.

        Raises
        ------
        DatasetNotFound
        """
        self.get_dataset(name)
        return Dataset(self, name)

    def get_dataset(self, name: str) -> DatasetInfo:
        cached = self._info_cache.get(name)
        if cached is not None:
            return cached
        if not isinstance(name, str) or not DATASET_NAME_RE.match(name):
            raise DatasetNotFound(str(name), [d.name for d in self.list_datasets()])
        tbl = self._catalog()
        tbl.checkout_latest()
        rows = tbl.search().where(f"name = {sql_quote(name)}").limit(1).to_arrow().to_pylist()
        if not rows:
            raise DatasetNotFound(name, [d.name for d in self.list_datasets()])
        info = DatasetInfo.from_json(rows[0]["info"])
        self._info_cache[name] = info
        return info

    def create_dataset(
        self,
        name: str,
        *,
        dim: int,
        embedder: Mapping[str, Any],
        classes: Sequence[str] = (),
        task: str = "classification",
        metadata_fields: Mapping[str, str] | None = None,
        media_roots: Sequence[str] = (),
        exist_ok: bool = False,
    ) -> DatasetInfo:
        if not isinstance(name, str) or not DATASET_NAME_RE.match(name):
            raise InvalidDatasetName(str(name))
        if task not in TASKS:
            raise ValidationFailed(f"task must be one of {', '.join(TASKS)}, not {task!r}", field="task")
        if int(dim) <= 0:
            raise ValidationFailed(f"embedding dimension must be positive, not {dim}", field="dim")
        for fname, ftype in (metadata_fields or {}).items():
            _check_meta_field(fname, ftype)
        with self.lock(name):
            if self.has_dataset(name):
                if exist_ok:
                    return self.get_dataset(name)
                raise DatasetExists(name)
            info = DatasetInfo(
                name=name,
                dim=int(dim),
                embedder=dict(embedder),
                classes=list(classes),
                task=task,
                metadata_fields=dict(metadata_fields or {}),
                media_roots=[str(r) for r in media_roots],
                created_at=now_utc().isoformat(),
            )
            self._db.create_table(
                f"{name}__samples", schema=sample_schema(info.dim, info.metadata_fields), exist_ok=True
            )
            self._open(f"{name}__docs", DOC_SCHEMA)
            self._catalog().merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(
                pa.table(
                    {"name": [name], "info": [info.to_json()], "created_at": [now_utc()]},
                    schema=CATALOG_SCHEMA,
                )
            )
            self._info_cache[name] = info
            return info

    def update_dataset(
        self,
        name: str,
        *,
        classes: Sequence[str] | None = None,
        metadata_fields: Mapping[str, str] | None = None,
        embedder: Mapping[str, Any] | None = None,
        media_roots: Sequence[str] | None = None,
    ) -> DatasetInfo:
        """Extend a dataset: new classes are appended (existing order is kept, since probs are
        aligned with it), new metadata fields become new nullable columns."""
        with self.lock(name):
            info = self.get_dataset(name)
            if classes is not None:
                missing = [c for c in dict.fromkeys(classes) if c not in info.classes]
                if missing and info.classes and info.model_classes is None:
                    info.model_classes = len(info.classes)  # probs so far cover the classes before these
                info.classes = info.classes + missing
            if metadata_fields:
                new_cols = {}
                for fname, ftype in metadata_fields.items():
                    _check_meta_field(fname, ftype)
                    have = info.metadata_fields.get(fname)
                    if have is None:
                        new_cols[fname] = ftype
                    elif have != ftype:
                        raise SchemaMismatch(
                            f"metadata field {fname!r} is {have} in dataset {name!r}, the new source "
                            f"has {ftype}: rename the column or convert it to {have}"
                        )
                if new_cols:
                    tbl = self._samples(name)
                    tbl.add_columns(
                        [pa.field(META_PREFIX + f, META_TYPES[t]) for f, t in new_cols.items()]
                    )
                    info.metadata_fields.update(new_cols)
            if embedder is not None:
                info.embedder = dict(embedder)
            if media_roots is not None:
                info.media_roots = sorted({*info.media_roots, *(str(r) for r in media_roots)})
            self._catalog().merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(
                pa.table(
                    {"name": [name], "info": [info.to_json()], "created_at": [now_utc()]},
                    schema=CATALOG_SCHEMA,
                )
            )
            self._info_cache[name] = info
            return info

    def drop_dataset(self, name: str) -> None:
        with self.lock(name):
            self.get_dataset(name)
            for suffix in ("samples", "docs", "predictions"):  # predictions: model versions (issue 14)
                tname = f"{name}__{suffix}"
                self._tables.pop(tname, None)
                if tname in self._table_names():
                    self._db.drop_table(tname)
            self._catalog().delete(f"name = {sql_quote(name)}")
            self._info_cache.pop(name, None)
            for suffix in ("samples", "docs", "predictions"):
                self._readers.pop(f"{name}__{suffix}", None)

    # -- samples: reads -----------------------------------------------------------------------

    def schema(self, dataset: str) -> pa.Schema:
        return self._read_ds(dataset).schema  # type: ignore[no-any-return]

    def version(self, dataset: str) -> int:
        return int(self._read_ds(dataset).version)

    def list_versions(self, dataset: str) -> list[dict[str, Any]]:
        out = []
        for v in self._samples(dataset).list_versions():
            ts = v.get("timestamp")
            out.append(
                {
                    "version": int(v["version"]),
                    "timestamp": ts.isoformat() if hasattr(ts, "isoformat") else str(ts),
                    "rows": int(v.get("metadata", {}).get("total_rows", 0) or 0),
                }
            )
        return out

    def _read_ds(self, dataset: str) -> Any:
        """The samples table's latest version as a pylance dataset: opened once, moved forward only when
        the table's latest version moves (a 0.02 ms check of the version hint, where LanceDB's
        ``checkout_latest`` costs 0.2 ms and queues behind every other call on its one event loop).

        Reads (query, count, schema, version) go straight to Lance rather than through LanceDB's sync
        API, which hands every call to that single background asyncio loop: on the demo table a filtered
        column read plus a 50-id lookup ran 104 pairs/s on one thread and 150/s on eight that way,
        240/s and 378/s through pylance (a thread pool over one Store). Writes keep LanceDB's handle."""
        self.get_dataset(dataset)
        return self._reader(f"{dataset}__samples")

    def _reader(self, table_name: str, schema: pa.Schema | None = None) -> Any:
        """A pylance dataset of ``table_name`` at its latest version (see :meth:`_read_ds`)."""
        lds = self._readers.get(table_name)
        if lds is None:
            lds = self._open(table_name, schema).to_lance()
        latest = int(lds.latest_version)
        if latest != lds.version:
            lds = lds.checkout_version(latest)
        self._readers[table_name] = lds
        return lds

    def count(self, dataset: str, where: str | None = None) -> int:
        lds = self._read_ds(dataset)
        return int(lds.count_rows(filter=where) if where else lds.count_rows())

    def query(
        self,
        dataset: str,
        *,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        version: int | None = None,
    ) -> pa.Table:
        """Rows matching ``where`` (a clause built by trusted code: service/filters.py escapes
        user values). ``version`` reads an older table version (time travel)."""
        if version is None:
            lds = self._read_ds(dataset)
            return lds.to_table(  # type: ignore[no-any-return]
                columns=None if columns is None else list(columns),
                filter=where or None,
                limit=limit,
                offset=int(offset) or None,
            )
        tbl = self._db.open_table(f"{dataset}__samples")
        tbl.checkout(int(version))
        q = tbl.search()
        if where:
            q = q.where(where)
        if columns is not None:
            q = q.select(list(columns))
        q = q.limit(limit if limit is not None else max(tbl.count_rows(), 1))
        if offset:
            q = q.offset(int(offset))
        return q.to_arrow()

    def get_samples(
        self, dataset: str, ids: Sequence[str], columns: Sequence[str] | None = None, version: int | None = None
    ) -> pa.Table:
        """Rows for ``ids``, in the order of ``ids`` (missing ids are absent)."""
        ids = [str(i) for i in ids]
        if not ids:
            schema = self.schema(dataset)
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.empty_table()
        cols = None if columns is None else list(dict.fromkeys(["id", *columns]))
        parts = []
        for start in range(0, len(ids), 2000):
            chunk = ids[start : start + 2000]
            parts.append(self.query(dataset, where=ids_in(chunk), columns=cols, version=version))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return _in_id_order(table, ids, columns)

    def vectors(
        self, dataset: str, *, where: str | None = None, ids: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """(ids, float32 matrix) of ok rows with an embedding."""
        info = self.get_dataset(dataset)
        clause = ok_and(HAS_EMBEDDING, where)
        if ids is not None:
            table = self.get_samples(dataset, ids, columns=["id", "embedding", "status"])
            mask = pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["embedding"]))
            table = table.filter(mask)
        else:
            table = self.query(dataset, where=clause, columns=["id", "embedding"])
        return table.column("id").to_pylist(), embeddings_to_numpy(table.column("embedding"), info.dim)

    # -- samples: chunked reads (added for issue 11's scaled analysis; additive) ----------------

    def scan_chunks(
        self,
        dataset: str,
        *,
        columns: Sequence[str],
        where: str | None = None,
        chunk_rows: int = 65_536,
        version: int | None = None,
        with_row_address: bool = False,
    ) -> Any:
        """Read the rows matching ``where`` in order, as Arrow tables of exactly ``chunk_rows`` rows (the
        last one may be shorter): memory stays at about one chunk, whatever the table's size.

        ``version`` pins the table version (every scan of one version returns the same rows in the same
        order, so two passes over a table line up row by row). ``with_row_address`` adds ``_rowaddr``
        (uint64, the row's place in that version: what :meth:`set_columns_at` takes). Returns an iterator
        of ``pa.Table``. Raises DatasetNotFound for an unknown dataset, ValueError for ``chunk_rows`` < 1."""
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        lds = self._read_ds(dataset)
        if version is not None and int(version) != int(lds.version):
            lds = lds.checkout_version(int(version))
        batches = lds.to_batches(
            columns=list(columns),
            filter=where or None,
            batch_size=int(chunk_rows),
            scan_in_order=True,
            with_row_address=bool(with_row_address),
        )
        return _exact_chunks(batches, int(chunk_rows))

    def set_columns_at(
        self, dataset: str, addresses: np.ndarray, columns: Mapping[str, Any], *, read_version: int
    ) -> int:
        """Overwrite some columns (not ``id`` nor ``embedding``) of existing rows given by their row
        addresses in ``read_version`` (``scan_chunks(..., with_row_address=True)``). Only those columns'
        new data files are written, fragment by fragment (Lance's fragment ``update_columns`` and one
        ``Update`` commit naming the modified fields, so indexes on them stop covering the rewritten
        fragments): :meth:`update_columns`' merge_insert reads the whole table instead (measured at 200k x
        512: +1.1 GB for any number of updated rows, against +60 MB here). Added for the analysis of issue
        11 (additive). Returns the new version. Raises SchemaMismatch for unknown or protected columns or
        misaligned values; Lance's commit conflict error if the table was rewritten since ``read_version``."""
        import lance

        addr = np.asarray(addresses, dtype=np.uint64)
        with self.lock(dataset):
            lds = self._read_ds(dataset)
            if int(read_version) != int(lds.version):
                lds = lds.checkout_version(int(read_version))
            schema = lds.schema
            bad = [c for c in columns if c not in schema.names or c in ("id", "embedding")]
            if bad:
                raise SchemaMismatch(f"set_columns_at cannot write column(s) {', '.join(bad)} of {dataset!r}")
            values = {c: pa.array(v).cast(schema.field(c).type) for c, v in columns.items()}
            if any(len(v) != addr.size for v in values.values()):
                raise SchemaMismatch("set_columns_at: every column needs one value per address")
            if addr.size == 0:
                return int(lds.version)
            frag_of = addr >> np.uint64(32)
            updated = []
            for fid in np.unique(frag_of).tolist():
                rows = np.flatnonzero(frag_of == fid)
                part = pa.table(
                    {"_rowaddr": pa.array(addr[rows], pa.uint64()), **{c: v.take(rows) for c, v in values.items()}}
                )
                updated.append(lds.get_fragment(int(fid)).update_columns(part, left_on="_rowaddr")[0])
            fields = [lds.lance_schema.field(c).id() for c in values]
            op = lance.LanceOperation.Update(updated_fragments=updated, fields_modified=fields)
            return int(lance.LanceDataset.commit(lds, op, read_version=int(read_version)).version)

    # -- samples: writes ----------------------------------------------------------------------

    def existing(self, dataset: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """id -> (fingerprint, status) for the ids already stored."""
        if not ids:
            return {}
        table = self.get_samples(dataset, ids, columns=["id", "fingerprint", "status"])
        return {
            i: (f, s)
            for i, f, s in zip(
                table["id"].to_pylist(), table["fingerprint"].to_pylist(), table["status"].to_pylist(), strict=True
            )
        }

    def upsert_samples(self, dataset: str, rows: pa.Table | Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Insert new rows, update changed ones, skip unchanged ones (same fingerprint and status).

        Columns written by analysis and exports (x, y, cluster, tags, exported) are kept for rows that
        already exist, so re-ingesting a source never forgets a cluster or an export tag. Returns the
        counts and the table version after the write (unchanged if nothing needed writing). A batch with
        a NaN / infinite vector is refused whole (SchemaMismatch naming the ids): the ingest pipeline turns
        such rows into error rows before they get here.
        """
        with self.lock(dataset):
            info = self.get_dataset(dataset)
            tbl = self._samples(dataset)
            schema = tbl.schema
            if isinstance(rows, pa.Table):
                table = rows
            else:  # rows may differ in their keys: take the union (from_pylist reads the first row's)
                rows = list(rows)
                keys = list(dict.fromkeys(k for r in rows for k in r))
                table = pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys})
            if table.num_rows == 0:
                return UpsertResult(version=int(tbl.version))
            table = conform(table, schema, info.dim)
            _refuse_unusable_vectors(table, info.dim)  # a NaN vector would poison every search it enters
            ids = table.column("id").to_pylist()
            if len(set(ids)) != len(ids):
                raise SchemaMismatch("duplicate ids inside one upsert batch; the sources dedupe before this")
            have = self.existing(dataset, ids)
            keep = []
            inserted = updated = unchanged = 0
            fps = table.column("fingerprint").to_pylist()
            sts = table.column("status").to_pylist()
            for n, (i, fp, st) in enumerate(zip(ids, fps, sts, strict=True)):
                old = have.get(i)
                if old is None:
                    inserted += 1
                    keep.append(n)
                elif old[0] == fp and old[1] == st and fp is not None:
                    unchanged += 1
                else:
                    updated += 1
                    keep.append(n)
            if not keep:
                return UpsertResult(0, 0, unchanged, int(tbl.version))
            table = table.take(pa.array(keep, pa.int64()))
            if updated:
                table = self._carry_derived(dataset, table, schema)
            else:  # every row is new: a plain append, no join against the whole table's ids (10M rows:
                # merge_insert of 50k new rows cost ~9 s, most of it the join). Through Lance, not LanceDB's
                # add(), which takes every float list column for a vector and refuses a NaN in ``bbox``.
                lds = self._read_ds(dataset)
                lds.insert(table)
                return UpsertResult(inserted, updated, unchanged, int(self._read_ds(dataset).version))
            (
                tbl.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table, on_bad_vectors="null")  # error rows carry no vector
            )
            return UpsertResult(inserted, updated, unchanged, int(tbl.version))

    def _carry_derived(self, dataset: str, table: pa.Table, schema: pa.Schema) -> pa.Table:
        ids = table.column("id").to_pylist()
        old = self.get_samples(dataset, ids, columns=["id", *DERIVED_COLUMNS])
        old_by_id = {r["id"]: r for r in old.to_pylist()}
        for col in DERIVED_COLUMNS:
            new_vals = table.column(col).to_pylist()
            merged = []
            for i, v in zip(ids, new_vals, strict=True):
                prev = old_by_id.get(i)
                if prev is not None and (v is None or v == []) and prev[col] not in (None, []):
                    merged.append(prev[col])
                else:
                    merged.append(v)
            pos = table.schema.get_field_index(col)
            table = table.set_column(pos, schema.field(col), pa.array(merged, type=schema.field(col).type))
        return table

    def update_columns(self, dataset: str, table: pa.Table) -> int:
        """Set some columns of existing rows: ``table`` holds ``id`` plus the columns to write
        (partial merge_insert; rows whose id is unknown are ignored). Returns the new version."""
        with self.lock(dataset):
            tbl = self._samples(dataset)
            schema = tbl.schema
            if "id" not in table.column_names:
                raise SchemaMismatch("update_columns needs an 'id' column")
            unknown = [c for c in table.column_names if c not in schema.names]
            if unknown:
                raise SchemaMismatch(f"unknown columns for dataset {dataset!r}: {', '.join(unknown)}")
            if table.num_rows == 0:
                return int(tbl.version)
            cast = pa.table(
                {c: table.column(c).cast(schema.field(c).type) for c in table.column_names},
                schema=pa.schema([schema.field(c) for c in table.column_names]),
            )
            if "embedding" in cast.column_names:
                _refuse_unusable_vectors(cast, self.get_dataset(dataset).dim)
            tbl.merge_insert("id").when_matched_update_all().execute(cast)
            return int(tbl.version)

    def update_where(self, dataset: str, where: str, values: Mapping[str, Any]) -> int:
        """SQL UPDATE of literal values on the rows matching ``where``. Returns the new version."""
        with self.lock(dataset):
            tbl = self._samples(dataset)
            tbl.update(where=where, values=dict(values))
            return int(tbl.version)

    def append_to_list(self, dataset: str, ids: Sequence[str], column: str, value: str) -> int:
        """Add ``value`` to a list<string> column (tags, exported) of the given rows, once."""
        if column not in ("tags", "exported"):
            raise SchemaMismatch(f"{column!r} is not a list column")
        with self.lock(dataset):
            current = self.get_samples(dataset, list(ids), columns=["id", column])
            new_ids, new_vals = [], []
            for i, vals in zip(current["id"].to_pylist(), current[column].to_pylist(), strict=True):
                vals = list(vals or [])
                if value not in vals:
                    new_ids.append(i)
                    new_vals.append([*vals, value])
            if not new_ids:
                return self.version(dataset)
            return self.update_columns(
                dataset, pa.table({"id": new_ids, column: pa.array(new_vals, pa.list_(pa.string()))})
            )

    def delete_samples(self, dataset: str, where: str) -> int:
        with self.lock(dataset):
            tbl = self._samples(dataset)
            tbl.delete(where)
            return int(tbl.version)

    def compact(self, dataset: str, *, min_fragments: int = COMPACT_MIN_FRAGMENTS) -> bool:
        """End of a write session: merge the samples table's small fragments once it has ``min_fragments``
        of them, and fold the rows its indexes miss into them where enough are missing (see
        :meth:`refresh_indexes`). Writers call it when a session ends: ingest, analysis, a label import, an
        export's tags, every so many stream samples. Cheap when nothing is due (fragment and index metadata
        of the open reader). Only fragments under COMPACT_TARGET_ROWS rows are rewritten, so a big table is
        never rewritten whole. The rows and their values are unchanged; after a compaction, versions older
        than VERSION_RETENTION are pruned. Returns whether it compacted."""
        with self.lock(dataset):
            compacted = self._compact_fragments(dataset, min_fragments)
            self.refresh_indexes(dataset)
            if compacted:
                self._prune_versions(dataset)
            return compacted

    def _compact_fragments(self, dataset: str, min_fragments: int, engine: str = "local", workers: int = 0) -> bool:
        """Merge neighbouring fragments under COMPACT_TARGET_ROWS rows into fragments of about that size
        (and rewrite fragments with many deleted rows), once ``min_fragments`` are small; with ``engine``
        "ray", the rewrite tasks run as Ray tasks (``lance_ray.compact_files``). Returns whether it did."""
        lds = self._read_ds(dataset)
        small = sum(1 for f in lds.get_fragments() if int(f.metadata.physical_rows) < COMPACT_TARGET_ROWS)
        if small < max(2, min_fragments):
            return False
        if engine == "ray":
            lance_ray = _import_lance_ray()
            metrics = lance_ray.compact_files(
                lds.uri,
                compaction_options={"target_rows_per_fragment": COMPACT_TARGET_ROWS},
                num_workers=workers or RAY_INDEX_WORKERS,
                storage_options=self.storage_options or None,
            )
        else:
            metrics = lds.optimize.compact_files(target_rows_per_fragment=COMPACT_TARGET_ROWS)
        return metrics is not None and int(metrics.fragments_removed) > 0  # no plan: small ones not adjacent

    def _prune_versions(self, dataset: str) -> None:
        """Delete the versions older than VERSION_RETENTION (and the files only they use); the latest
        version is always kept."""
        self._read_ds(dataset).cleanup_old_versions(older_than=VERSION_RETENTION, error_if_tagged_old_versions=False)

    def unindexed_rows(self, dataset: str) -> dict[str, int]:
        """Index name -> rows of the samples table it does not cover (appended or rewritten since it was
        built or refreshed). Searches and filters still see those rows: Lance scans them exactly."""
        lds = self._read_ds(dataset)
        n = int(lds.count_rows())
        return {str(ix.name): _rows_outside(ix, n) for ix in lds.describe_indices()}

    def refresh_indexes(self, dataset: str, *, force: bool = False) -> dict[str, int]:
        """Fold the rows the indexes miss into them (Lance's ``optimize_indices``: the vector index files
        new rows into its trained partitions, a scalar index merges them in) for each index that misses
        enough: the vector index REINDEX_UNINDEXED_ROWS rows, a scalar index SCALAR_REFRESH_MIN_ROWS or
        SCALAR_REFRESH_SHARE of the table (an analysis rewrites ``cluster`` on every row: its index then
        covers none); with ``force``, any. Returns index name -> rows folded in."""
        with self.lock(dataset):
            lds = self._read_ds(dataset)
            n = int(lds.count_rows())
            due: dict[str, int] = {}
            for ix in lds.describe_indices():
                missing = _rows_outside(ix, n)
                vector = "embedding" in list(ix.field_names)
                limit = REINDEX_UNINDEXED_ROWS if vector else max(SCALAR_REFRESH_MIN_ROWS, SCALAR_REFRESH_SHARE * n)
                if missing and (force or missing >= limit):
                    due[str(ix.name)] = missing
            if due:
                # merge into the existing index (1): with Lance's default (None), and with LanceDB's optimize(),
                # the IVF index came back retrained with other partitions (234 partitions at 60k rows became 2)
                lds.optimize.optimize_indices(index_names=sorted(due), num_indices_to_merge=1)
            return due

    # -- search ---------------------------------------------------------------------------------

    def prefer_exact(self, dataset: str, candidates: int, *, n_queries: int = 1) -> bool:
        """Whether to search ``candidates`` rows exactly rather than through the vector index.

        This is where the exact-vs-index decision is made, the only place: :meth:`search` asks it when
        called with ``exact=None``, and service/mining/search.py's ``NeighbourSearch`` asks it once per
        search and then runs that mode (passing ``exact=`` to :meth:`search`).

        Exact when the dataset has no vector index, or the filter leaves at most
        EXACT_SEARCH_MAX_CANDIDATES rows (ranking that many vectors costs about one index query). A
        caller ranking ``n_queries`` > FEW_QUERIES vectors at once against the same candidates loads their
        vectors once, so exact search pays up to ``n_queries`` x MATRIX_ROWS_PER_QUERY candidates (at most
        MATRIX_MAX_ROWS).

        Parameters
        ----------
        dataset : str
        candidates : int
            Rows the filter leaves.
        n_queries : int
            Query vectors ranked at once against those rows.

        Returns
        -------
        bool
            True for the exact path, False for the index.
        """
        small = EXACT_SEARCH_MAX_CANDIDATES
        if n_queries > FEW_QUERIES:
            small = min(MATRIX_MAX_ROWS, max(small, n_queries * MATRIX_ROWS_PER_QUERY))
        return candidates <= small or not self.has_vector_index(dataset)

    def search(
        self,
        dataset: str,
        vector: Sequence[float] | np.ndarray,
        *,
        k: int,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        exact: bool | None = None,
        nprobes: int | None = None,
        refine_factor: int | str | None = "auto",
        candidates: int | None = None,
        lancedb_defaults: bool = False,
    ) -> pa.Table:
        """Nearest ok rows to ``vector`` by cosine distance (``_distance`` = 1 - cos), the filter applied
        *before* the search so ``k`` rows come back whenever ``k`` rows match. A row whose stored vector is
        NaN / infinite / too large to compare (damaged on disk) is never a result; `edgeminer check` lists them.

        Parameters
        ----------
        dataset : str
        vector : array-like
        k : int
        where : str or None
            A trusted filter clause (``where.OK`` is added: ok rows carry an embedding; testing
            ``embedding IS NOT NULL`` would read every vector).
        columns : sequence of str or None
            Columns besides ``id`` and ``_distance`` (None: all, ``embedding`` included).
        exact : bool or None
            The mode to run: True ranks the matching rows' vectors in numpy (LanceDB's flat search scans
            every vector whatever the filter); False searches the vector index (IVF_SQ, or the IVF_PQ of a
            table indexed before), prefiltered, probing ``nprobes`` partitions (default :func:`probes_for`),
            re-ranking ``refine_factor`` x k on the full vectors, redone exactly when the probed partitions
            hold fewer than ``k`` matching rows. None: :meth:`prefer_exact` decides (the one place that does).
        nprobes, refine_factor, candidates, lancedb_defaults
            Index query settings (``refine_factor="auto"``: REFINE_FACTORS of the table's index type, None:
            no re-rank); the filter's row count when the caller knows it (saves a count); Lance's default
            query settings (a benchmark peer).

        Returns
        -------
        pa.Table
            Up to ``k`` rows, nearest first, with ``_distance``.

        Raises
        ------
        SchemaMismatch
            The query vector has NaN or infinite values (or values too large to compare).
        """
        return self.search_many(
            dataset, np.asarray(vector, dtype=np.float32).reshape(1, -1), k=k, where=where, columns=columns,
            exact=exact, nprobes=nprobes, refine_factor=refine_factor, candidates=candidates,
            lancedb_defaults=lancedb_defaults,
        )[0]

    def search_many(
        self,
        dataset: str,
        vectors: Sequence[Sequence[float]] | np.ndarray,
        *,
        k: int,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        exact: bool | None = None,
        nprobes: int | None = None,
        refine_factor: int | str | None = "auto",
        candidates: int | None = None,
        lancedb_defaults: bool = False,
    ) -> list[pa.Table]:
        """:meth:`search` for several query vectors against the same filter, each answer the one
        :meth:`search` gives for that vector alone. The index path runs one Lance query for all of them
        (the filter's row set is built once, not once a vector); the exact path reads the candidates'
        vectors once and ranks every query against each batch. ``exact=None`` asks :meth:`prefer_exact`
        with ``n_queries=len(vectors)``.

        Returns
        -------
        list of pa.Table
            One table per query vector, in order.

        Raises
        ------
        SchemaMismatch
            A query vector has NaN or infinite values (or values too large to compare).
        """
        lds, clause, qs = self._search_input(dataset, vectors, where)
        k = int(k)
        if len(qs) == 0:
            return []
        if candidates is None and (exact is None or (not exact and nprobes is None and not lancedb_defaults)):
            candidates = int(lds.count_rows(filter=clause))
        if exact is None:
            exact = self.prefer_exact(dataset, candidates or 0, n_queries=len(qs))
        cols = None if columns is None else list(dict.fromkeys(["id", *columns]))
        if exact:
            return self._exact_search(dataset, lds, qs, k, clause, cols)
        settings: tuple[int, int | None] | None = None
        if not lancedb_defaults:
            if nprobes is None:
                nprobes = probes_for(int(lds.count_rows()), candidates)
            rf = REFINE_FACTORS.get(_vector_index_type(lds) or "", SEARCH_REFINE_FACTOR)
            settings = (int(nprobes), rf if refine_factor == "auto" else _opt_int(refine_factor))
        return self._index_search(dataset, lds, qs, k, clause, cols, settings)

    def _search_input(
        self, dataset: str, vectors: Sequence[Sequence[float]] | np.ndarray, where: str | None
    ) -> tuple[Any, str, np.ndarray]:
        """(samples reader, the filter with ``where.OK``, the queries as a float32 matrix), the queries checked."""
        lds = self._read_ds(dataset)
        clause = ok_and(where)
        qs = np.asarray(vectors, dtype=np.float32)
        if qs.ndim == 1 and qs.size:  # one vector
            qs = qs[None, :]
        qs = qs.reshape(len(qs), -1) if qs.size else np.zeros((0, self.get_dataset(dataset).dim), np.float32)
        if not usable_vectors(qs).all():
            raise SchemaMismatch("the query vector has NaN or infinite values (or values too large to compare)")
        return lds, clause, qs

    def _index_search(
        self,
        dataset: str,
        lds: Any,
        qs: np.ndarray,
        k: int,
        clause: str,
        cols: list[str] | None,
        settings: tuple[int, int | None] | None,
    ) -> list[pa.Table]:
        """The index search of :meth:`search_many` (exact instead for a query whose probed partitions hold
        too few rows). ``settings``: (nprobes, refine factor), None for Lance's defaults."""
        # the vectors come back too, so a row whose stored vector went bad after the index was built
        # (NaN, overflow: corruption on disk) is dropped instead of served with a made-up distance
        want = None if cols is None else list(dict.fromkeys([*cols, "embedding"]))
        dim = self.get_dataset(dataset).dim
        got: dict[int, tuple[pa.Table, pa.Table]] = {}
        todo, limit = list(range(len(qs))), k
        for _attempt in range(3):
            again, short = [], 0
            for j, raw in zip(todo, _nearest(lds, qs[todo], limit, clause, want, settings), strict=True):
                result = _usable_results(raw, dim)
                got[j] = (raw, result)
                if result.num_rows < k and raw.num_rows >= limit:
                    again.append(j)
                    short = max(short, raw.num_rows - result.num_rows)
            if not again:
                break
            todo, limit = again, limit + max(2 * short, 16)  # ask past the dropped rows
        out, matching = [], None
        for j in range(len(qs)):
            raw, result = got[j]
            result = result.slice(0, k) if result.num_rows > k else result
            if cols is not None and "embedding" not in cols:
                result = result.drop_columns(["embedding"])
            if result.num_rows < k:
                matching = int(lds.count_rows(filter=clause)) if matching is None else matching
                if matching > raw.num_rows:  # too few rows in the probed partitions
                    result = self._exact_search(dataset, lds, qs[j : j + 1], k, clause, cols)[0]
            out.append(result)
        return out

    def _exact_search(
        self, dataset: str, lds: Any, qs: np.ndarray, k: int, clause: str, cols: list[str] | None
    ) -> list[pa.Table]:
        """Brute force over the rows matching ``clause``: read their vectors once (in batches), rank every
        query in numpy against each batch, keep each query's ``k`` best."""
        info = self.get_dataset(dataset)
        q = qs / np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-12)
        best: list[tuple[np.ndarray, pa.Table | None]] = [(np.zeros(0, np.float32), None)] * len(q)
        want = list(lds.schema.names) if cols is None else list(dict.fromkeys([*cols, "embedding"]))
        for batch in lds.to_batches(columns=want, filter=clause, batch_size=EXACT_BATCH_ROWS):
            part, m = _usable_part(pa.Table.from_batches([batch]), info.dim)
            if part.num_rows == 0:
                continue
            d_all = 1.0 - (m @ q.T) / np.maximum(np.linalg.norm(m, axis=1), 1e-12)[:, None]
            best = [_merge_best(best_d, best_rows, part, d_all[:, j], k) for j, (best_d, best_rows) in enumerate(best)]
        names = want if cols is None else cols
        out = []
        for best_d, best_rows in best:
            if best_rows is None:
                best_rows = pa.schema([lds.schema.field(c) for c in names]).empty_table()
            elif cols is not None and "embedding" not in cols:
                best_rows = best_rows.drop_columns(["embedding"])
            out.append(best_rows.append_column("_distance", pa.array(best_d, pa.float32())))
        return out

    # -- indexes --------------------------------------------------------------------------------

    def has_vector_index(self, dataset: str) -> bool:
        return _vector_index_type(self._read_ds(dataset)) is not None

    def prewarm_vector_index(self, dataset: str) -> int:
        """Load the whole vector index into this Store's reader of the table (kept across requests), so no
        search reads a partition from disk first: without it, a query's probed partitions are loaded on
        first use (~0.5 MB each at 1M x 512), which makes the first queries of a process several times
        slower. Costs the index's size in memory (see :meth:`vector_index_info`). Returns the bytes the
        reader's index cache holds."""
        lds = self._read_ds(dataset)
        for ix in lds.describe_indices():
            if "embedding" in list(ix.field_names):
                lds.prewarm_index(ix.name)
        session = lds.session()
        return int(session.index_cache_size_bytes()) if session is not None else 0

    def vector_index_info(self, dataset: str) -> dict[str, Any] | None:
        """The vector index's type, size on disk, rows indexed, and the bytes this process's reader of the
        table holds in its index cache (what searching has loaded so far); None without an index."""
        lds = self._read_ds(dataset)
        for ix in lds.describe_indices():
            if "embedding" in list(ix.field_names):
                session = lds.session()
                return {
                    "type": str(ix.index_type or "").upper(),
                    "disk_bytes": int(ix.total_size_bytes or 0),
                    "rows_indexed": int(ix.num_rows_indexed or 0),
                    "cache_bytes": int(session.index_cache_size_bytes()) if session is not None else 0,
                }
        return None

    def ensure_indexes(
        self,
        dataset: str,
        *,
        force: bool = False,
        vector_index: Mapping[str, Any] | None = None,
        engine: str = "local",
        workers: int = 0,
    ) -> dict[str, Any]:
        """Build the vector index once the table is large enough, retrain it when the table has grown past
        RETRAIN_GROWTH x the vectors it was trained on, keep scalar indexes on the common filter columns,
        fold the rows the indexes miss into them (:meth:`refresh_indexes`) and compact small fragments.
        Cheap when nothing is due. ``force``: build the vector index from 256 rows, the scalar indexes from
        any size, and fold every missing row in.

        The vector index is VECTOR_INDEX_TYPE (IVF_SQ) with ~sqrt(n) partitions. ``vector_index`` overrides
        it: ``{"type": "IVF_PQ" | "IVF_SQ" | "IVF_HNSW_SQ" | ..., **parameters}``, the type IVF_PQ when not
        named (``{}`` = LanceDB's default IVF_PQ; bench/search.py compares them).

        ``engine="ray"`` builds the missing scalar indexes with ``lance_ray.create_scalar_index`` (each
        index's fragments split into ``workers`` segments built by Ray tasks, then committed as one index)
        and compacts with ``lance_ray.compact_files``; it runs in the caller's Ray session
        (indexer/ray_engine.py's ``ray_session``) or, without one, in a local Ray that lance-ray starts.
        The vector index is trained in this process either way."""
        if engine not in INDEX_ENGINES:
            raise ValidationFailed(f"unknown index engine {engine!r}: use one of {', '.join(INDEX_ENGINES)}")
        with self.lock(dataset):
            info = self.get_dataset(dataset)
            compacted = self._compact_fragments(dataset, COMPACT_MIN_FRAGMENTS, engine, workers)
            tbl = self._samples(dataset)
            n = int(tbl.count_rows())
            done: dict[str, Any] = {"rows": n, "scalar_indexes": [], "compacted": compacted, "engine": engine}
            vector = self._ensure_vector_index(dataset, tbl, force=force, override=vector_index)
            if n >= 1000 or force:
                done["scalar_indexes"] = self._add_scalar_indexes(dataset, tbl, info, engine=engine, workers=workers)
            folded = self.refresh_indexes(dataset, force=force)
            vname = _vector_index_name(self._read_ds(dataset))
            if vector is None:
                vector = "none" if vname is None else "up to date"
                if vname in folded:
                    vector = f"optimized ({folded[vname]} new rows folded in)"
            done["vector_index"] = vector
            done["refreshed"] = sorted(k for k in folded if k != vname)
            if compacted:
                self._prune_versions(dataset)
            return done

    def _ensure_vector_index(
        self, dataset: str, tbl: Any, *, force: bool, override: Mapping[str, Any] | None
    ) -> str | None:
        """Build the vector index when due, or retrain it when the table outgrew it; what was done, None
        when neither was due."""
        lds = self._read_ds(dataset)
        n_vectors = int(lds.count_rows(filter=ok_and()))  # ok rows carry a vector; testing it reads every one
        kind_now = _vector_index_type(lds)
        if kind_now is None:
            if n_vectors >= VECTOR_INDEX_MIN_ROWS or (force and n_vectors >= 256):
                kind, params = _vector_index_config(n_vectors, override)
                self._build_vector_index(dataset, tbl, kind, params, n_vectors)
                return f"built {kind} ({params or 'LanceDB defaults'})"
            return None
        trained = _trained_rows(lds)
        if not trained or n_vectors <= RETRAIN_GROWTH * trained or kind_now not in _VECTOR_INDEX_CONFIGS:
            return None
        if override is None:  # the same type, partitions for today's size
            kind, params = kind_now, {"num_partitions": index_partitions(n_vectors)}
        else:
            kind, params = _vector_index_config(n_vectors, override)
        self._build_vector_index(dataset, tbl, kind, params, n_vectors)
        return f"retrained {kind} ({params or 'LanceDB defaults'}) on {n_vectors} vectors (trained on {trained})"

    def _build_vector_index(self, dataset: str, tbl: Any, kind: str, params: dict[str, Any], n_vectors: int) -> None:
        """Train the vector index (replacing one there), then record on the table how many vectors it was
        trained on (the retrain rule reads it back)."""
        config = _VECTOR_INDEX_CONFIGS[kind](distance_type="cosine", **params)
        tbl.create_index("embedding", config=config, replace=True)
        self._read_ds(dataset).update_config({TRAINED_ROWS_KEY: str(int(n_vectors))})

    def _add_scalar_indexes(self, dataset: str, tbl: Any, info: DatasetInfo, *, engine: str, workers: int) -> list[str]:
        """Create the scalar indexes the table lacks (SCALAR_INDEXES plus the metadata columns); the
        columns indexed."""
        wanted = dict(SCALAR_INDEXES)
        # metadata columns are what people filter on ("weather = rain", "area between"): a
        # prefiltered vector search over 1M rows takes ~8 ms with a BTREE on the column, ~18 without
        for fname, ftype in info.metadata_fields.items():
            wanted.setdefault(META_PREFIX + fname, "BITMAP" if ftype == "bool" else "BTREE")
        indexed = {tuple(getattr(ix, "columns", [])) for ix in tbl.list_indices()}
        missing = {c: k for c, k in wanted.items() if (c,) not in indexed and c in tbl.schema.names}
        if engine == "ray" and missing:
            self.build_scalar_indexes_distributed(dataset, missing, workers=workers)
            return list(missing)
        from lancedb.index import Bitmap, BTree

        for col, kind in missing.items():
            tbl.create_index(col, config=BTree() if kind == "BTREE" else Bitmap())
        return list(missing)

    def build_scalar_indexes_distributed(
        self, dataset: str, columns: Mapping[str, str], *, workers: int = 0
    ) -> list[str]:
        """Build (or rebuild) scalar indexes on the samples table with Ray: for each ``column -> "BTREE" |
        "BITMAP"``, ``lance_ray.create_scalar_index`` splits the table's fragments into ``workers`` (default
        RAY_INDEX_WORKERS) segments, Ray tasks build one index segment each, and the driver commits them as
        the index ``<column>_idx`` (the name LanceDB gives it, so the local path sees the same index).
        Runs in the current Ray session, or a local Ray lance-ray starts. Returns the index names.

        Raises
        ------
        NotSupported
            lance-ray (and Ray) are not installed.
        UnknownField
            A column is not in the samples table.
        """
        lance_ray = _import_lance_ray()
        with self.lock(dataset):
            lds = self._read_ds(dataset)
            names = []
            for col, kind in columns.items():
                if col not in lds.schema.names:
                    raise UnknownField(col, list(lds.schema.names), what="column", dataset=dataset)
                name = f"{col}_idx"
                lance_ray.create_scalar_index(
                    lds.uri,
                    column=col,
                    index_type=str(kind).upper(),
                    name=name,
                    replace=True,
                    num_workers=workers or RAY_INDEX_WORKERS,
                    storage_options=self.storage_options or None,
                )
                names.append(name)
            self._samples(dataset)  # LanceDB's handle moves to the version with the indexes
            return names

    # -- integrity ------------------------------------------------------------------------------

    def check(
        self,
        dataset: str,
        *,
        progress: Callable[[int, int, str], None] | None = None,
        batch_rows: int = 8192,
    ) -> CheckReport:
        """Read every fragment of the dataset's tables to the end and report what is wrong: data files
        missing or not the size the table recorded, fragments that fail to read (a truncated or
        overwritten file), rows read vs the row count the table's manifest records, vectors that are
        NaN / infinite / overflowing or of the wrong dimension, ok rows without a vector, null or
        duplicate ids, documents that are not JSON, and indexes that do not open and answer a query.

        Problems are reported, never raised (one per kind and fragment, with the first CHECK_MAX_IDS
        ids and row offsets). Reads one table version: concurrent writes are not seen.

        Parameters: ``progress(done, total, message)`` is called after each fragment; ``batch_rows``
        is the read batch size.
        Returns: the :class:`CheckReport` (samples and docs tables, their problems, seconds taken).
        Raises: :class:`DatasetNotFound` for an unknown dataset; ``NotSupported`` when pylance is missing.
        """
        t0 = time.perf_counter()
        info = self.get_dataset(dataset)
        report = CheckReport(dataset, info.dim)
        opened: list[tuple[TableCheck, Any, Any, list[Any]]] = []
        for suffix in ("samples", "docs"):
            tc = TableCheck(suffix)
            report.tables.append(tc)
            handles = self._open_for_check(dataset, tc, info)
            if handles is not None:
                opened.append((tc, *handles))
        total = sum(len(frags) for *_, frags in opened)
        done = 0
        for tc, tbl, lds, frags in opened:
            done = self._check_table(tc, tbl, lds, frags, info.dim, batch_rows, progress, (done, total))
        report.seconds = time.perf_counter() - t0
        return report

    def _open_for_check(self, dataset: str, tc: TableCheck, info: DatasetInfo) -> tuple[Any, Any, list[Any]] | None:
        """Open ``tc``'s table at its latest version: (table, lance dataset, fragments), or None (with the
        problem on ``tc``) when it cannot be opened. Also checks its row count and (samples) its schema."""
        try:
            tbl = self._open(f"{dataset}__{tc.table}")
            tbl.checkout_latest()
            lds = _lance_dataset(tbl)
            tc.version = int(lds.version)
            frags = list(lds.get_fragments())
            tc.fragments = len(frags)
        except _LanceMissing:
            raise
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            tc.problems.append(CheckProblem("unreadable_table", f"the table cannot be opened: {_one_line(exc)}"))
            return None
        try:
            tc.expected_rows = int(tbl.count_rows())
        except Exception as exc:  # noqa: BLE001
            tc.problems.append(CheckProblem("row_count", f"the table cannot count its rows: {_one_line(exc)}"))
        if tc.table == "samples":
            tc.problems.extend(_schema_problems(lds.schema, sample_schema(info.dim, info.metadata_fields)))
        return tbl, lds, frags

    def _check_table(
        self,
        tc: TableCheck,
        tbl: Any,
        lds: Any,
        frags: list[Any],
        dim: int,
        batch_rows: int,
        progress: Callable[[int, int, str], None] | None,
        done_total: tuple[int, int],
    ) -> int:
        """Check an opened table's fragments, row count, ids and indexes; returns fragments done so far."""
        done, total = done_total
        ids: list[pa.Array] = []
        for frag in frags:
            self._check_fragment(tc, lds, frag, dim, batch_rows, ids)
            done += 1
            if progress is not None:
                progress(done, total, f"{tc.table} fragment {frag.fragment_id}")
        if tc.fragments_read == tc.fragments and tc.rows != tc.expected_rows:
            tc.problems.append(
                CheckProblem(
                    "row_count",
                    f"{tc.rows} rows read from the fragments, the table records {tc.expected_rows}",
                )
            )
        tc.problems.extend(_duplicate_ids(ids))
        self._check_indexes(tc, tbl, dim)
        return done

    def _check_fragment(
        self, tc: TableCheck, lds: Any, frag: Any, dim: int, batch_rows: int, ids: list[pa.Array]
    ) -> None:
        fid = int(frag.fragment_id)
        found: dict[str, CheckProblem] = {}

        def problem(kind: str) -> CheckProblem:
            if kind not in found:
                found[kind] = CheckProblem(kind, "", fragment=fid)
            return found[kind]

        tc.problems.extend(self._fragment_file_problems(lds, frag, fid))
        try:
            expected: int | None = int(frag.count_rows())
        except Exception as exc:  # noqa: BLE001
            expected = None
            tc.problems.append(
                CheckProblem("unreadable_fragment", f"cannot count its rows: {_one_line(exc)}", fragment=fid)
            )
        tc.rows += self._read_fragment(tc, frag, expected, dim, batch_rows, ids, problem)
        for kind, p in found.items():
            p.message = CHECK_MESSAGES[kind].format(n=p.count, dim=dim)
            tc.problems.append(p)

    @staticmethod
    def _fragment_file_problems(lds: Any, frag: Any, fid: int) -> list[CheckProblem]:
        """A fragment's data files that are missing or not the size the table recorded."""
        problems: list[CheckProblem] = []
        for rel, path, size in _fragment_files(lds, frag):
            try:
                on_disk = os.stat(path).st_size
            except FileNotFoundError:
                problems.append(CheckProblem("missing_file", f"{rel} is missing", fragment=fid))
                continue
            except OSError as exc:
                problems.append(CheckProblem("missing_file", f"{rel}: {_one_line(exc)}", fragment=fid))
                continue
            if size and on_disk != size:
                problems.append(
                    CheckProblem(
                        "file_size",
                        f"{rel} is {on_disk} bytes, the table recorded {size} (truncated or overwritten)",
                        fragment=fid,
                    )
                )
        return problems

    @staticmethod
    def _read_fragment(
        tc: TableCheck,
        frag: Any,
        expected: int | None,
        dim: int,
        batch_rows: int,
        ids: list[pa.Array],
        problem: Callable[[str], CheckProblem],
    ) -> int:
        """Read a fragment to the end, checking each batch (``problem(kind)`` collects the row findings)
        and keeping a copy of its ids; a read failure or a row count off ``expected`` goes on ``tc``.
        Returns the rows read."""
        fid = int(frag.fragment_id)
        read = 0
        try:
            for batch in frag.to_batches(batch_size=batch_rows, with_row_address=True, batch_readahead=2):
                offsets = (batch.column("_rowaddr").to_numpy(zero_copy_only=False) & 0xFFFFFFFF).astype(np.int64)
                if tc.table == "samples":
                    _check_sample_batch(batch, offsets, dim, problem)
                else:
                    _check_doc_batch(batch, offsets, problem)
                if "id" in batch.schema.names:  # a copy: the column would keep the whole batch's memory alive
                    ids.append(pa.concat_arrays([batch.column("id")]))
                read += batch.num_rows
        except Exception as exc:  # noqa: BLE001 - a fragment that cannot be read is the finding
            of = f" of {expected}" if expected is not None else ""
            tc.problems.append(
                CheckProblem(
                    "unreadable_fragment",
                    f"reading failed after {read}{of} rows: {_one_line(exc)}",
                    fragment=fid,
                    count=max(0, (expected or 0) - read),
                )
            )
        else:
            tc.fragments_read += 1
            if expected is not None and read != expected:
                tc.problems.append(
                    CheckProblem("row_count", f"{read} rows read, the fragment records {expected}", fragment=fid)
                )
        return read

    @staticmethod
    def _check_indexes(tc: TableCheck, tbl: Any, dim: int) -> None:
        try:
            indices = list(tbl.list_indices())
        except Exception as exc:  # noqa: BLE001
            tc.problems.append(CheckProblem("index", f"the indexes cannot be listed: {_one_line(exc)}"))
            return
        for ix in indices:
            name = str(getattr(ix, "name", "?"))
            cols = list(getattr(ix, "columns", []))
            try:
                tbl.index_stats(name)
                if "embedding" in cols:
                    probe = np.full(dim, 1.0 / math.sqrt(dim), np.float32)
                    q = tbl.search(probe, vector_column_name="embedding").distance_type("cosine").nprobes(1)
                    q.select(["id", "_distance"]).limit(1).to_arrow()
                elif cols:
                    tbl.search().where(f"{cols[0]} IS NULL").select(["id"]).limit(1).to_arrow()
                tc.indexes.append(name)
            except Exception as exc:  # noqa: BLE001
                tc.problems.append(
                    CheckProblem("index", f"index {name} on {', '.join(cols)} does not answer: {_one_line(exc)}")
                )

    def unreadable_reason(self, dataset: str) -> str | None:
        """A cheap probe for /health: None when the dataset's tables open, count their rows and every
        data / deletion file they reference is on disk at the size the table recorded; else why not.
        Reads no rows: the file list is cached per table version, only the sizes are re-read (stat).
        A file overwritten in place at the same size is found by :meth:`check` only. The reason names
        no absolute path (it is shown on the unauthenticated health endpoint)."""
        for suffix in ("samples", "docs"):
            reason = self._probe_table(f"{dataset}__{suffix}", suffix)
            if reason is not None:
                return reason
        return None

    def catalog_unreadable_reason(self) -> str | None:
        """:meth:`unreadable_reason` for the catalog (the list of datasets)."""
        return self._probe_table("_catalog", "catalog")

    def _probe_table(self, name: str, label: str) -> str | None:
        try:
            tbl = self._open(name)
            tbl.checkout_latest()
            tbl.count_rows()
            files = self._table_files(name, tbl)
        except Exception as exc:  # noqa: BLE001 - the reason is the answer
            return f"{label} table cannot be opened: {self.public_reason(exc)}"
        for rel, path, size in files:
            try:
                on_disk = os.stat(path).st_size
            except OSError:
                return f"{label} table: {rel} is missing"
            if size and on_disk != size:
                return f"{label} table: {rel} is {on_disk} bytes, the table recorded {size} (truncated?)"
        return None

    def _table_files(self, name: str, tbl: Any) -> list[tuple[str, str, int]]:
        version = int(tbl.version)
        cached = self._files_cache.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            lds = _lance_dataset(tbl)
        except _LanceMissing:
            files: list[tuple[str, str, int]] = []  # without pylance: open + count only
        else:
            files = [f for frag in lds.get_fragments() for f in _fragment_files(lds, frag)]
        self._files_cache[name] = (version, files)
        return files

    def public_reason(self, exc: BaseException) -> str:
        """``exc`` as one short line without the store's location (for unauthenticated answers)."""
        text = _one_line(exc)
        root = os.path.abspath(self.uri) if "://" not in self.uri else self.uri
        for form in (root, root.lstrip("/"), self.uri):  # lance also prints paths without the leading '/'
            if form:
                text = text.replace(form, "<data_dir>")
        return text

    # -- docs (runs, issues, exports, clusters, analysis state, decisions) ----------------------

    def put_doc(self, dataset: str, kind: str, doc_id: str, doc: Mapping[str, Any], *, name: str = "") -> None:
        with self.lock(dataset):
            tbl = self._docs(dataset)
            now = now_utc()
            created = now
            existing = (
                tbl.search().where(f"id = {sql_quote(doc_id)}").select(["created_at"]).limit(1).to_arrow()
            )
            if existing.num_rows:
                created = existing["created_at"][0].as_py()
            row = pa.table(
                {
                    "id": [doc_id],
                    "kind": [kind],
                    "name": [name],
                    "doc": [json.dumps(doc, default=_json_default)],
                    "created_at": [created],
                    "updated_at": [now],
                },
                schema=DOC_SCHEMA,
            )
            tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(row)
            self._maybe_compact_docs(tbl)

    def _docs_reader(self, dataset: str) -> Any:
        self.get_dataset(dataset)
        return self._reader(f"{dataset}__docs", DOC_SCHEMA)

    def get_doc(self, dataset: str, kind: str, doc_id: str) -> dict[str, Any]:
        where = f"id = {sql_quote(doc_id)} AND kind = {sql_quote(kind)}"
        rows = self._docs_reader(dataset).to_table(filter=where, limit=1).to_pylist()
        if not rows:
            raise DocNotFound(kind, doc_id)
        return _doc_row(rows[0])

    def list_docs(self, dataset: str, kind: str) -> list[dict[str, Any]]:
        rows = self._docs_reader(dataset).to_table(filter=f"kind = {sql_quote(kind)}").to_pylist()
        return sorted((_doc_row(r) for r in rows), key=lambda d: d["_created_at"])

    def delete_doc(self, dataset: str, kind: str, doc_id: str) -> None:
        with self.lock(dataset):
            self.get_doc(dataset, kind, doc_id)
            self._docs(dataset).delete(f"id = {sql_quote(doc_id)} AND kind = {sql_quote(kind)}")

    @staticmethod
    def _maybe_compact_docs(tbl: Any) -> None:
        # Small frequent writes (job progress) leave many tiny fragments; fold them now and then.
        if int(tbl.version) % 200 == 0:
            tbl.optimize(cleanup_older_than=dt.timedelta(days=7))

    # ==========================================================================================
    # Model versions (issue 14): the <dataset>__predictions table. Logic in indexer/versions.py.
    #
    # One row per (version, id): a model version's prediction for a sample. The samples table keeps
    # the *current* version's values (probs, pred_label, scores...) so every reader works unchanged;
    # indexer/versions.py copies a version's rows over when it becomes current. Correctness is not
    # stored here: it follows from the labels, which live only in the samples table.
    # ==========================================================================================

    #: the predictions table's schema (probabilities aligned with the dataset's classes)
    PREDICTIONS_SCHEMA = pa.schema(
        [
            pa.field("version", pa.string(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("probs", pa.list_(pa.float32())),
            pa.field("pred_label", pa.string()),
            pa.field("pred_label2", pa.string()),
            *[pa.field(c, pa.float32()) for c in SCORE_COLUMNS],
            pa.field("outcome", pa.string()),  # detection rows: the detector's outcome for this object
            pa.field("model_version", pa.string()),  # what the samples table's model_version becomes
            pa.field("written_at", TS),
        ]
    )

    def _predictions_name(self, dataset: str) -> str:
        self.get_dataset(dataset)
        return f"{dataset}__predictions"

    def has_predictions(self, dataset: str) -> bool:
        """Whether the dataset has a predictions table yet (created by the first version recorded)."""
        name = self._predictions_name(dataset)
        return name in self._tables or name in self._table_names()

    def upsert_predictions(self, dataset: str, table: pa.Table) -> int:
        """Insert or replace predictions keyed by (version, id); ``table`` holds ``version``, ``id`` and
        any of the other columns (missing ones are null). Returns the predictions table's version."""
        schema = self.PREDICTIONS_SCHEMA
        unknown = [c for c in table.column_names if c not in schema.names]
        if unknown or "version" not in table.column_names or "id" not in table.column_names:
            raise SchemaMismatch(f"predictions need 'version' and 'id'; unknown columns: {', '.join(unknown)}")
        with self.lock(dataset):
            tbl = self._open(self._predictions_name(dataset), schema)
            tbl.checkout_latest()
            if table.num_rows == 0:
                return int(tbl.version)
            n = table.num_rows
            cols = {
                f.name: (table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type))
                for f in schema
            }
            if "written_at" not in table.column_names:
                cols["written_at"] = pa.array([now_utc()] * n, TS)
            data = pa.table(cols, schema=schema)
            tbl.merge_insert(["version", "id"]).when_matched_update_all().when_not_matched_insert_all().execute(data)
            return int(tbl.version)

    def query_predictions(
        self,
        dataset: str,
        version: str,
        *,
        columns: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> pa.Table:
        """The predictions of model version ``version`` (all its rows, or those of ``ids``), sorted by id."""
        schema = self.PREDICTIONS_SCHEMA
        cols = list(dict.fromkeys(["id", *(columns or [f.name for f in schema if f.name != "version"])]))
        if not self.has_predictions(dataset):
            return pa.schema([schema.field(c) for c in cols]).empty_table()
        lds = self._reader(self._predictions_name(dataset), schema)
        where = f"version = {sql_quote(version)}"
        if ids is not None:
            parts = [
                lds.to_table(columns=cols, filter=f"{where} AND {ids_in(list(ids[i : i + 2000]))}")
                for i in range(0, len(ids), 2000)
            ]
            table = pa.concat_tables(parts) if parts else pa.schema([schema.field(c) for c in cols]).empty_table()
        else:
            table = lds.to_table(columns=cols, filter=where)
        return table.sort_by("id")

    def prediction_counts(self, dataset: str) -> dict[str, int]:
        """Rows stored per model version."""
        if not self.has_predictions(dataset):
            return {}
        lds = self._reader(self._predictions_name(dataset), self.PREDICTIONS_SCHEMA)
        versions = lds.to_table(columns=["version"])["version"]
        counts = pc.value_counts(versions).to_pylist()
        return {str(c["values"]): int(c["counts"]) for c in counts}

    def delete_predictions(self, dataset: str, version: str) -> int:
        """Remove every prediction of ``version``; returns the predictions table's version."""
        with self.lock(dataset):
            tbl = self._open(self._predictions_name(dataset), self.PREDICTIONS_SCHEMA)
            tbl.checkout_latest()
            tbl.delete(f"version = {sql_quote(version)}")
            return int(tbl.version)


class Dataset:
    """One dataset of a :class:`Store`, like LanceDB's ``connect()`` -> ``Table``: get it with
    :meth:`Store.dataset` (which raises DatasetNotFound), then read and write through it instead of
    passing ``(store, name)`` around. Thin: the store keeps the caches, locks and readers; ``info`` and
    ``schema`` are read live (an update is seen at once).

    The name is checked once, by :meth:`Store.dataset`: the reads (info, schema, version, count, query,
    get_samples, vectors) go straight to the store's cached info and samples reader
    (:meth:`Store._reader`) instead of through the Store methods, which check the name again on every
    call for their direct callers. A handle on a dataset dropped since (through this store) raises
    DatasetNotFound."""

    __slots__ = ("store", "name", "_samples_table")

    def __init__(self, store: Store, name: str):
        self.store = store
        self.name = name
        self._samples_table = f"{name}__samples"

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, uri={self.store.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dataset) and other.store is self.store and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.store), self.name))

    # -- description ---------------------------------------------------------------------------

    def _reader(self) -> Any:
        """The samples table's pylance reader at its latest version (the store's cached one)."""
        if self.name not in self.store._info_cache:  # dropped since (or not cached): DatasetNotFound
            self.store.get_dataset(self.name)
        return self.store._reader(self._samples_table)

    @property
    def info(self) -> DatasetInfo:
        cached = self.store._info_cache.get(self.name)
        return cached if cached is not None else self.store.get_dataset(self.name)

    @property
    def schema(self) -> pa.Schema:
        return self._reader().schema  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        return int(self._reader().version)

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def task(self) -> str:
        return self.info.task

    def list_versions(self) -> list[dict[str, Any]]:
        return self.store.list_versions(self.name)

    def lock(self) -> threading.RLock:
        return self.store.lock(self.name)

    # -- samples -------------------------------------------------------------------------------

    def count(self, where: str | None = None) -> int:
        lds = self._reader()
        return int(lds.count_rows(filter=where) if where else lds.count_rows())

    def query(
        self,
        *,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        version: int | None = None,
    ) -> pa.Table:
        """:meth:`Store.query`; the latest version is read from the store's cached reader."""
        if version is not None:  # time travel: rare, through the store
            return self.store.query(
                self.name, where=where, columns=columns, limit=limit, offset=offset, version=version
            )
        return self._reader().to_table(  # type: ignore[no-any-return]
            columns=None if columns is None else list(columns),
            filter=where or None,
            limit=limit,
            offset=int(offset) or None,
        )

    def get_samples(
        self, ids: Sequence[str], columns: Sequence[str] | None = None, version: int | None = None
    ) -> pa.Table:
        """:meth:`Store.get_samples`: rows for ``ids``, in the order of ``ids`` (missing ids are absent)."""
        ids = [str(i) for i in ids]
        if not ids:
            schema = self.schema
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.empty_table()
        cols = None if columns is None else list(dict.fromkeys(["id", *columns]))
        parts = [
            self.query(where=ids_in(ids[start : start + 2000]), columns=cols, version=version)
            for start in range(0, len(ids), 2000)
        ]
        return _in_id_order(pa.concat_tables(parts) if len(parts) > 1 else parts[0], ids, columns)

    def vectors(self, *, where: str | None = None, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """:meth:`Store.vectors`: (ids, float32 matrix) of ok rows with an embedding."""
        if ids is not None:
            table = self.get_samples(ids, columns=["id", "embedding", "status"])
            table = table.filter(pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["embedding"])))
        else:
            table = self.query(where=ok_and(HAS_EMBEDDING, where), columns=["id", "embedding"])
        return table.column("id").to_pylist(), embeddings_to_numpy(table.column("embedding"), self.info.dim)

    def search(self, vector: Sequence[float] | np.ndarray, *, k: int, **options: Any) -> pa.Table:
        """:meth:`Store.search` (same keyword options: where, columns, exact, nprobes...)."""
        return self.store.search(self.name, vector, k=k, **options)

    def search_many(self, vectors: Sequence[Sequence[float]] | np.ndarray, *, k: int, **options: Any) -> list[pa.Table]:
        """:meth:`Store.search_many`: several query vectors, one query (same keyword options as search)."""
        return self.store.search_many(self.name, vectors, k=k, **options)

    def prefer_exact(self, candidates: int, *, n_queries: int = 1) -> bool:
        return self.store.prefer_exact(self.name, candidates, n_queries=n_queries)

    def upsert_samples(self, rows: pa.Table | Sequence[Mapping[str, Any]]) -> UpsertResult:
        return self.store.upsert_samples(self.name, rows)

    def update_columns(self, table: pa.Table) -> int:
        return self.store.update_columns(self.name, table)

    def update_where(self, where: str, values: Mapping[str, Any]) -> int:
        return self.store.update_where(self.name, where, values)

    def delete_samples(self, where: str) -> int:
        return self.store.delete_samples(self.name, where)

    # -- documents -----------------------------------------------------------------------------

    def put_doc(self, kind: str, doc_id: str, doc: Mapping[str, Any], *, name: str = "") -> None:
        self.store.put_doc(self.name, kind, doc_id, doc, name=name)

    def get_doc(self, kind: str, doc_id: str) -> dict[str, Any]:
        return self.store.get_doc(self.name, kind, doc_id)

    def list_docs(self, kind: str) -> list[dict[str, Any]]:
        return self.store.list_docs(self.name, kind)

    def delete_doc(self, kind: str, doc_id: str) -> None:
        self.store.delete_doc(self.name, kind, doc_id)


def _in_id_order(table: pa.Table, ids: list[str], columns: Sequence[str] | None) -> pa.Table:
    """``table`` (with an ``id`` column) reordered like ``ids``; ``id`` dropped when ``columns`` omits it."""
    order = {i: n for n, i in enumerate(ids)}
    got = table.column("id").to_pylist()
    idx = sorted(range(len(got)), key=lambda n: order.get(got[n], 1 << 60))
    table = table.take(pa.array(idx, pa.int64()))
    if columns is not None and "id" not in columns:
        table = table.drop_columns(["id"])
    return table


class _LanceMissing(NotSupported):
    """This installation cannot read a table fragment by fragment (``edgeminer check``, /health's file list)."""

    def __init__(self) -> None:
        super().__init__("reading a table fragment by fragment needs the pylance package: pip install pylance")


# ----------------------------------------------------------------------------------------------
# Object storage
# ----------------------------------------------------------------------------------------------

#: environment variable -> Lance storage option, for s3:// stores (the AWS CLI's own variables; a later
#: row wins: AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL, AWS_REGION over AWS_DEFAULT_REGION)
AWS_ENV_OPTIONS = (
    ("AWS_ENDPOINT_URL", "aws_endpoint"),
    ("AWS_ENDPOINT_URL_S3", "aws_endpoint"),
    ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    ("AWS_SESSION_TOKEN", "aws_session_token"),
    ("AWS_DEFAULT_REGION", "aws_region"),
    ("AWS_REGION", "aws_region"),
)
#: a JSON object of extra storage options (any key Lance accepts), over the AWS variables
STORAGE_OPTIONS_ENV = "EDGEMINER_STORAGE_OPTIONS"


def storage_options_for(
    uri: str, explicit: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The storage options for a store at ``uri``: for ``s3://``, the standard AWS variables
    (``AWS_ENDPOINT_URL`` [``_S3``], ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION`` over ``AWS_DEFAULT_REGION``; ``allow_http`` when the endpoint is ``http://``); then the
    JSON object in ``EDGEMINER_STORAGE_OPTIONS``; then ``explicit``. Values are strings (Lance's rule).
    Raises :class:`ValidationFailed` when ``EDGEMINER_STORAGE_OPTIONS`` is not a JSON object."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    if uri.startswith(("s3://", "s3a://")):
        for var, key in AWS_ENV_OPTIONS:
            if env.get(var):
                out[key] = env[var]
    text = env.get(STORAGE_OPTIONS_ENV, "").strip()
    if text:
        try:
            extra = json.loads(text)
        except ValueError as exc:
            raise ValidationFailed(f"{STORAGE_OPTIONS_ENV} is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ValidationFailed(f'{STORAGE_OPTIONS_ENV} must be a JSON object, e.g. {{"aws_region": "eu-west-1"}}')
        out.update({str(k): _option_text(v) for k, v in extra.items()})
    out.update({str(k): _option_text(v) for k, v in (explicit or {}).items()})
    endpoint = out.get("aws_endpoint", out.get("endpoint", ""))
    if endpoint.startswith("http://") and "allow_http" not in out:
        out["allow_http"] = "true"
    return out


def _option_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def remote_failure(uri: str, options: Mapping[str, str], exc: BaseException) -> str:
    """One line saying why the object store at ``uri`` did not answer (never the credentials)."""
    text = str(exc)
    endpoint = options.get("aws_endpoint") or options.get("endpoint") or "the default endpoint"
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    if "NoSuchBucket" in text or "status: 404" in text:
        why = f"bucket {bucket!r} does not exist at {endpoint}; create it or fix the data dir"
    elif any(m in text for m in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "status: 403")):
        why = (
            f"{endpoint} refused the credentials for bucket {bucket!r}; check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (or EDGEMINER_STORAGE_OPTIONS)"
        )
    elif any(m in text for m in ("kind: Connect", "Connect,", "dns error", "error sending request", "Timeout")):
        why = f"cannot connect to {endpoint}; check AWS_ENDPOINT_URL (or EDGEMINER_STORAGE_OPTIONS) and the network"
    else:
        why = _one_line(exc)
        for secret in (options.get("aws_secret_access_key"), options.get("aws_session_token")):
            if secret:
                why = why.replace(secret, "***")
    return f"the data store {uri} cannot be reached: {why}"


def _lance_dataset(tbl: Any) -> Any:
    """The Lance dataset under a LanceDB table, at the table's version."""
    try:
        import lance  # noqa: F401  (pylance: fragments, data files)
    except ImportError as exc:
        raise _LanceMissing() from exc
    # small caches: a check reads each page once, and /health only lists files
    return tbl.to_lance(metadata_cache_size_bytes=32 << 20, index_cache_size_bytes=16 << 20)


_RUST_LOCATION = re.compile(r",? ?/\S+?\.rs:\d+:\d+")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _RUST_LOCATION.sub("", text)  # lance appends the Rust source file and line
    return text if len(text) <= 300 else text[:297] + "..."


def _fragment_files(lds: Any, frag: Any) -> list[tuple[str, str, int]]:
    """(path relative to the table, local path, recorded size or 0) of a fragment's data and deletion
    files; empty for a table that is not on the local file system."""
    root = str(lds.uri)
    if root.startswith("file://"):
        root = root[len("file://") :]
    elif "://" in root:
        return []
    out = []
    for df in frag.data_files():
        if getattr(df, "base_id", None) is not None:
            continue  # stored under another base path
        rel = f"data/{df.path}"
        out.append((rel, os.path.join(root, rel), int(getattr(df, "file_size_bytes", 0) or 0)))
    deletion = frag.deletion_file()
    if deletion:
        out.append((str(deletion), os.path.join(root, str(deletion)), 0))
    return out


#: message of the per-row problems, by kind ({n} rows, dataset dimension {dim}).
CHECK_MESSAGES = {
    "non_finite_vector": "{n} vector(s) with NaN or infinite values",
    "vector_overflow": "{n} vector(s) with values too large to compare (float32 overflow)",
    "wrong_dimension": "{n} vector(s) whose length is not the dataset's dimension {dim}",
    "missing_vector": "{n} row(s) with status ok and no vector",
    "null_id": "{n} row(s) without an id",
    "bad_document": "{n} document(s) that are not valid JSON",
}


def _schema_problems(have: pa.Schema, want: pa.Schema) -> list[CheckProblem]:
    out = []
    for f in want:
        if f.name not in have.names:
            out.append(CheckProblem("schema", f"column {f.name!r} is missing"))
        elif not have.field(f.name).type.equals(f.type):
            out.append(CheckProblem("schema", f"column {f.name!r} is {have.field(f.name).type}, expected {f.type}"))
    return out


def _check_sample_batch(
    batch: pa.RecordBatch, offsets: np.ndarray, dim: int, problem: Callable[[str], CheckProblem]
) -> None:
    ids = batch.column("id")
    nulls = np.flatnonzero(~np.asarray(pc.is_valid(ids).to_numpy(zero_copy_only=False), dtype=bool))
    if len(nulls):
        problem("null_id").add([None] * len(nulls), offsets[nulls])
    if "embedding" not in batch.schema.names:
        return
    emb = batch.column("embedding")
    valid = np.asarray(pc.is_valid(emb).to_numpy(zero_copy_only=False), dtype=bool)
    if "status" in batch.schema.names:
        ok = np.asarray(pc.fill_null(pc.equal(batch.column("status"), "ok"), False).to_numpy(zero_copy_only=False))
        missing = np.flatnonzero(ok.astype(bool) & ~valid)
        if len(missing):
            problem("missing_vector").add(ids.take(pa.array(missing)).to_pylist(), offsets[missing])
    rows = np.flatnonzero(valid)
    if not len(rows):
        return
    sub = emb if len(rows) == len(emb) else emb.take(pa.array(rows))
    lengths: np.ndarray
    if pa.types.is_fixed_size_list(sub.type):
        lengths = np.full(len(rows), sub.type.list_size)
    else:  # a variable list column (not what the store writes): test each length
        lengths = np.asarray(pc.list_value_length(sub).to_numpy(zero_copy_only=False))
    wrong = lengths != dim
    if wrong.any():
        problem("wrong_dimension").add(ids.take(pa.array(rows[wrong])).to_pylist(), offsets[rows[wrong]])
        keep = np.flatnonzero(~wrong)
        rows, sub = rows[keep], sub.take(pa.array(keep))
        if not len(rows):
            return
    m = np.asarray(sub.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(rows), dim)
    finite = np.isfinite(m).all(axis=1)
    usable = usable_vectors(m)
    for kind, mask in (("non_finite_vector", ~finite), ("vector_overflow", finite & ~usable)):
        bad = rows[mask]
        if len(bad):
            problem(kind).add(ids.take(pa.array(bad)).to_pylist(), offsets[bad])


def _check_doc_batch(batch: pa.RecordBatch, offsets: np.ndarray, problem: Callable[[str], CheckProblem]) -> None:
    ids = batch.column("id").to_pylist()
    docs = batch.column("doc").to_pylist() if "doc" in batch.schema.names else [None] * len(ids)
    for n, (i, text) in enumerate(zip(ids, docs, strict=True)):
        if i is None:
            problem("null_id").add([None], [offsets[n]])
        try:
            if text is not None:
                json.loads(text)
        except ValueError:
            problem("bad_document").add([i], [offsets[n]])


def _duplicate_ids(parts: list[pa.Array]) -> list[CheckProblem]:
    if not parts:
        return []
    counts = pc.value_counts(pa.chunked_array(parts).drop_null())
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dup) == 0:
        return []
    p = CheckProblem("duplicate_id", f"{len(dup)} id(s) stored more than once")
    p.ids = [str(v) for v in dup.field("values").to_pylist()[:CHECK_MAX_IDS]]
    p.count = int(pc.sum(dup.field("counts")).as_py())
    return [p]


def _usable_results(result: pa.Table, dim: int) -> pa.Table:
    """``result`` (with ``embedding`` and ``_distance``) without rows whose vector is missing, non-finite or
    overflowing, or whose distance is not a number."""
    if result.num_rows == 0:
        return result
    keep = np.asarray(pc.is_valid(result.column("embedding")).to_numpy(zero_copy_only=False), dtype=bool)
    if "_distance" in result.column_names:
        dist = result.column("_distance").to_numpy(zero_copy_only=False).astype(np.float64)
        keep &= np.isfinite(dist)
    if keep.any():
        sub = np.flatnonzero(keep)
        m = embeddings_to_numpy(result.column("embedding").take(pa.array(sub, pa.int64())), dim)
        keep[sub] = usable_vectors(m)
    return result if keep.all() else result.filter(pa.array(keep))


def _opt_int(value: int | str | None) -> int | None:
    return None if value is None else int(value)


def _vector_index_name(lds: Any) -> str | None:
    """The name of the vector index on ``embedding``, None without one."""
    for ix in lds.describe_indices():
        if "embedding" in list(ix.field_names):
            return str(ix.name)
    return None


def _rows_outside(ix: Any, n_rows: int) -> int:
    """Rows of the table (``n_rows`` live rows) the index ``ix`` (a describe_indices entry) does not cover."""
    return max(0, int(n_rows) - int(ix.num_rows_indexed or 0))


def _trained_rows(lds: Any) -> int:
    """Vectors the vector index was trained on, as ensure_indexes recorded it (0: not recorded)."""
    try:
        return int(lds.config().get(TRAINED_ROWS_KEY) or 0)
    except (TypeError, ValueError):
        return 0


def _import_lance_ray() -> Any:
    """The ``lance_ray`` module, or NotSupported saying how to install it."""
    try:
        import lance_ray
    except ImportError:
        raise NotSupported(
            'building indexes with Ray needs lance-ray and Ray: pip install "lance-ray==0.5.0" "ray[data]>=2.60,<3"'
        ) from None
    return lance_ray


def _vector_index_type(lds: Any) -> str | None:
    """The type of the vector index on ``embedding`` ("IVF_SQ", "IVF_PQ"...), None without one."""
    for ix in lds.describe_indices():
        if "embedding" in list(ix.field_names):
            return str(ix.index_type or "").upper() or "IVF_PQ"
    return None


def _nearest(
    lds: Any, qs: np.ndarray, limit: int, clause: str, want: list[str] | None, settings: tuple[int, int | None] | None
) -> list[pa.Table]:
    """One prefiltered Lance vector query for the rows of ``qs`` (a batch query when there are several):
    each query's ``limit`` nearest rows, nearest first."""
    q = qs[0] if len(qs) == 1 else qs
    nearest: dict[str, Any] = {"column": "embedding", "q": q, "k": limit, "metric": "cosine"}
    if settings is not None:
        nearest["nprobes"] = int(settings[0] or SEARCH_NPROBES)
        if settings[1]:
            nearest["refine_factor"] = int(settings[1])
    raw = lds.to_table(columns=want, filter=clause, prefilter=True, nearest=nearest)
    if len(qs) == 1:
        return [raw]
    which = raw.column("query_index").to_numpy()
    raw = raw.drop_columns(["query_index"])
    return [raw.filter(pa.array(which == j)).sort_by("_distance") for j in range(len(qs))]


def _usable_part(part: pa.Table, dim: int) -> tuple[pa.Table, np.ndarray]:
    """The rows of a batch read by the exact search whose vector is present and usable, and the vectors."""
    emb = part.column("embedding")
    valid = pc.is_valid(emb)
    if not pc.all(valid).as_py():
        part = part.filter(valid)
    if part.num_rows == 0:
        return part, np.zeros((0, dim), np.float32)
    m = embeddings_to_numpy(part.column("embedding"), dim)
    usable = usable_vectors(m)
    if not usable.all():  # corrupted on disk after it was written: never a search result
        part, m = part.filter(pa.array(usable)), m[usable]
    return part, m


def _merge_best(
    best_d: np.ndarray, best_rows: pa.Table | None, part: pa.Table, d: np.ndarray, k: int
) -> tuple[np.ndarray, pa.Table | None]:
    """The ``k`` nearest of the rows kept so far and the batch ``part`` at distances ``d`` (stable: ties
    keep table order)."""
    if len(d) > k:
        top = np.argpartition(d, k - 1)[:k]
        top.sort()
        part, d = part.take(pa.array(top, pa.int64())), d[top]
    merged = part if best_rows is None else pa.concat_tables([best_rows, part.select(best_rows.column_names)])
    dist = np.concatenate([best_d, d.astype(np.float32)])
    order = np.argsort(dist, kind="stable")[:k]
    return dist[order], merged.take(pa.array(order, pa.int64()))


#: a filter leaving at most this many candidates is searched exactly: reading and ranking their vectors
#: costs about one index search at ~1,000 rows (bench/search.py --crossover, 100k and 1M x 512).
EXACT_SEARCH_MAX_CANDIDATES = 1_000
#: at most this many query vectors on the exact path are searched one by one instead of loading every
#: candidate vector into memory once (service/mining/search.py's NeighbourSearch).
FEW_QUERIES = 2
#: candidate rows whose vectors cost about one index query to read (~11 us a row vs 11-25 ms a query,
#: bench/search.py --crossover at 100k and 1M): with n query vectors ranked at once, up to n times this
#: many candidates are ranked exactly in memory.
MATRIX_ROWS_PER_QUERY = 2000
#: most candidate vectors loaded into memory for an exact multi-query search (~0.5 GB at 512 dims).
MATRIX_MAX_ROWS = 250_000
#: rows per batch when the exact search reads candidate vectors.
EXACT_BATCH_ROWS = 65_536


def index_partitions(n_rows: int) -> int:
    """IVF partitions ensure_indexes builds for ``n_rows`` vectors: ~sqrt(n), at least 256 rows each."""
    return max(1, min(4096, int(math.sqrt(n_rows)), n_rows // 256))


def probes_for(n_rows: int, candidates: int | None) -> int:
    """Partitions to probe so that, with the filter's matches spread evenly, the probed partitions hold
    about SEARCH_PROBE_MATCHES matching rows; at least SEARCH_NPROBES, at most all of them."""
    parts = index_partitions(n_rows)
    if not candidates or n_rows <= 0:
        return min(parts, SEARCH_NPROBES)
    per_partition = candidates / parts
    return int(min(parts, max(SEARCH_NPROBES, math.ceil(SEARCH_PROBE_MATCHES / max(per_partition, 1e-9)))))


def _vector_index_config(n_vectors: int, override: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(index type, parameters) ensure_indexes builds for ``n_vectors`` vectors: VECTOR_INDEX_TYPE with
    ~sqrt(n) partitions (at least 256 rows each: k-means needs them to train), or the override."""
    if override is None:
        return VECTOR_INDEX_TYPE, {"num_partitions": index_partitions(n_vectors)}
    params = dict(override)
    kind = str(params.pop("type", "IVF_PQ")).upper()
    if kind not in _VECTOR_INDEX_CONFIGS:
        raise ValidationFailed(f"unknown vector index type {kind!r}: use one of {', '.join(_VECTOR_INDEX_CONFIGS)}")
    return kind, params


def _lancedb_index_configs() -> dict[str, Any]:
    from lancedb.index import IvfHnswPq, IvfHnswSq, IvfPq, IvfRq, IvfSq

    return {"IVF_SQ": IvfSq, "IVF_PQ": IvfPq, "IVF_HNSW_SQ": IvfHnswSq, "IVF_HNSW_PQ": IvfHnswPq, "IVF_RQ": IvfRq}


#: the vector index types ensure_indexes can build, by name
_VECTOR_INDEX_CONFIGS = _lancedb_index_configs()


def _pick_sub_vectors(dim: int) -> int:
    for target in (dim // 8, dim // 4, dim // 2, dim):
        if target >= 1 and dim % target == 0:
            return target
    return 1


def _check_meta_field(name: str, type_name: str) -> None:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", name):
        raise SchemaMismatch(
            f"metadata column {name!r} is not a valid field name: use letters, digits and '_' "
            "(rename the column in the source)"
        )
    if type_name not in META_TYPES:
        raise SchemaMismatch(f"metadata type {type_name!r} of {name!r} is not one of {', '.join(META_TYPES)}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    raise TypeError(f"cannot store {type(obj).__name__} in a document")


def _doc_row(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        doc = orjson.loads(row["doc"])  # several times faster than json for the large analysis document
    except orjson.JSONDecodeError:  # NaN / Infinity literals or huge integers that json.dumps writes
        doc = json.loads(row["doc"])
    doc.setdefault("id", row["id"])
    doc["_created_at"] = row["created_at"].isoformat() if row["created_at"] else ""
    doc["_updated_at"] = row["updated_at"].isoformat() if row["updated_at"] else ""
    return doc


def embeddings_to_numpy(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed-size-list column to an (n, dim) float32 array without a Python loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.float32(), dim))
    if len(column) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(len(column), dim)


def conform(table: pa.Table, schema: pa.Schema, dim: int) -> pa.Table:
    """Order and cast ``table``'s columns to ``schema``, filling absent columns with nulls (empty
    lists for tags/exported). Raises SchemaMismatch naming the column that does not fit."""
    n = table.num_rows
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if f.name == "embedding" and pa.types.is_list(col.type) and not pa.types.is_fixed_size_list(col.type):
                lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
                bad = [int(x) for x in np.unique(lengths[~np.isnan(lengths.astype(float))]) if x != dim]
                if bad:
                    raise SchemaMismatch(f"embedding has {bad[0]} values, the dataset's dimension is {dim}")
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatch(f"column {f.name!r} cannot be stored as {f.type}: {exc}") from exc
        elif f.name in ("tags", "exported"):
            col = pa.array([[] for _ in range(n)], type=f.type)
        elif f.name == "ingested_at":
            col = pa.array([now_utc()] * n, type=f.type)
        elif f.name == "status":
            col = pa.array(["ok"] * n, type=f.type)
        else:
            col = pa.nulls(n, type=f.type)
        cols.append(col)
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise SchemaMismatch(f"unknown columns {', '.join(extra)}: not in the dataset's schema")
    return pa.table(cols, schema=schema)



def _exact_chunks(batches: Any, rows: int) -> Any:
    """Re-cut a stream of record batches into tables of exactly ``rows`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - have, batch.num_rows)
            pending.append(batch.slice(0, take))
            have += take
            batch = batch.slice(take)
            if have == rows:
                yield pa.Table.from_batches(pending).combine_chunks()
                pending, have = [], 0
    if have:
        yield pa.Table.from_batches(pending).combine_chunks()
