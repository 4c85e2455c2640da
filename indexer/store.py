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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("RUST_LOG", "error")

import lancedb  # noqa: E402  (after the log level is set)

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
# Errors (the indexer's own; the service maps them into its error tree)
# ----------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base class of the store's errors."""


class DatasetNotFound(StoreError):
    def __init__(self, name: str, known: Sequence[str] = ()):
        self.name = name
        self.known = list(known)
        hint = f" Known datasets: {', '.join(self.known)}." if self.known else " No dataset exists yet."
        super().__init__(f"dataset {name!r} does not exist.{hint}")


class DatasetExists(StoreError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"dataset {name!r} already exists")


class InvalidDatasetName(StoreError, ValueError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"invalid dataset name {name!r}: use 1-63 letters, digits, '-' or '_' "
            "(starting with a letter or digit, no '__')"
        )


class SchemaMismatch(StoreError, ValueError):
    """Data that does not fit the dataset (wrong vector dimension, a metadata type clash...)."""


class DocNotFound(StoreError, KeyError):
    def __init__(self, kind: str, doc_id: str):
        self.kind = kind
        self.doc_id = doc_id
        super().__init__(f"{kind} {doc_id!r} not found")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


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


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sql_quote(value: str) -> str:
    """Quote a string as a SQL literal (single quotes doubled). Only for values, never identifiers."""
    return "'" + str(value).replace("'", "''") + "'"


def ids_in(ids: Iterable[str]) -> str:
    return "id IN (" + ", ".join(sql_quote(i) for i in ids) + ")"


# ----------------------------------------------------------------------------------------------
# Store
# ----------------------------------------------------------------------------------------------

#: rows at which a vector index is worth building; below it exact search is fast enough.
VECTOR_INDEX_MIN_ROWS = 50_000
#: fewest IVF partitions an index search probes, and the matching rows it wants the probed partitions
#: to hold (a selective filter probes more partitions, see probes_for); the re-rank depth (x k, on the
#: full vectors). Measured in bench/search.py: recall@10 >= 0.995 at 1M x 512, 1% to 50% filters.
SEARCH_NPROBES = 20
SEARCH_PROBE_MATCHES = 500
SEARCH_REFINE_FACTOR = 20
#: unindexed rows (appended since the index was built) that trigger an optimize().
REINDEX_UNINDEXED_ROWS = 20_000
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

    def __init__(self, uri: str | os.PathLike[str]):
        self.uri = str(uri)
        if "://" not in self.uri:
            os.makedirs(self.uri, exist_ok=True)
        self._db = lancedb.connect(self.uri)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._tables: dict[str, Any] = {}
        self._info_cache: dict[str, DatasetInfo] = {}

    # -- plumbing -----------------------------------------------------------------------------

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
            raise StoreError(f"table {name!r} is missing from {self.uri}")
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
        return self._open(f"{dataset}__docs", DOC_SCHEMA)

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
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
        if int(dim) <= 0:
            raise ValueError(f"embedding dimension must be positive, not {dim}")
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
                missing = [c for c in classes if c not in info.classes]
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
            for suffix in ("samples", "docs"):
                tname = f"{name}__{suffix}"
                self._tables.pop(tname, None)
                if tname in self._table_names():
                    self._db.drop_table(tname)
            self._catalog().delete(f"name = {sql_quote(name)}")
            self._info_cache.pop(name, None)

    # -- samples: reads -----------------------------------------------------------------------

    def schema(self, dataset: str) -> pa.Schema:
        return self._samples(dataset).schema

    def version(self, dataset: str) -> int:
        return int(self._samples(dataset).version)

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

    def count(self, dataset: str, where: str | None = None) -> int:
        tbl = self._samples(dataset)
        return int(tbl.count_rows(where) if where else tbl.count_rows())

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
        tbl = self._samples(dataset)
        if version is not None:
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
        order = {i: n for n, i in enumerate(ids)}
        got = table.column("id").to_pylist()
        idx = sorted(range(len(got)), key=lambda n: order.get(got[n], 1 << 60))
        table = table.take(pa.array(idx, pa.int64()))
        if columns is not None and "id" not in columns:
            table = table.drop_columns(["id"])
        return table

    def vectors(
        self, dataset: str, *, where: str | None = None, ids: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """(ids, float32 matrix) of ok rows with an embedding."""
        info = self.get_dataset(dataset)
        clause = "status = 'ok' AND embedding IS NOT NULL"
        if where:
            clause = f"({where}) AND {clause}"
        if ids is not None:
            table = self.get_samples(dataset, ids, columns=["id", "embedding", "status"])
            mask = pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["embedding"]))
            table = table.filter(mask)
        else:
            table = self.query(dataset, where=clause, columns=["id", "embedding"])
        return table.column("id").to_pylist(), embeddings_to_numpy(table.column("embedding"), info.dim)

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
        counts and the table version after the write (unchanged if nothing needed writing).
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

    # -- search ---------------------------------------------------------------------------------

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
        refine_factor: int | None = SEARCH_REFINE_FACTOR,
        candidates: int | None = None,
        lancedb_defaults: bool = False,
    ) -> pa.Table:
        """Nearest ok rows to ``vector`` by cosine distance (``_distance`` = 1 - cos), filter applied
        *before* the search so ``k`` results come back whenever ``k`` rows match.

        ``exact=None`` picks: exact search when there is no vector index or the filter leaves at most
        EXACT_SEARCH_MAX_CANDIDATES rows (their vectors are read and ranked in numpy: LanceDB's flat
        search scans every vector whatever the filter), else the IVF_PQ index, prefiltered, probing
        ``nprobes`` partitions (default :func:`probes_for`: enough that the probed partitions hold
        about SEARCH_PROBE_MATCHES matching rows, so a selective filter still finds its rows) and
        re-ranking ``refine_factor`` x k on the full vectors. If the probed partitions hold fewer than
        ``k`` matching rows, the search is redone exactly. ``candidates``: the filter's row count when
        the caller knows it (saves a count). ``lancedb_defaults``: the index with LanceDB's default
        query settings (a benchmark peer).

        Rows with status 'ok' carry an embedding (error rows have none), so the filter does not test
        ``embedding IS NOT NULL``: that test reads every vector.
        """
        tbl = self._samples(dataset)
        clause = "status = 'ok'"
        if where:
            clause = f"({where}) AND {clause}"
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        k = int(k)
        if exact is None or (not exact and nprobes is None and not lancedb_defaults):
            if candidates is None:
                candidates = int(tbl.count_rows(clause))
        if exact is None:
            exact = not self.has_vector_index(dataset) or (candidates or 0) <= EXACT_SEARCH_MAX_CANDIDATES
        cols = None if columns is None else list(dict.fromkeys(["id", *columns]))
        if exact:
            return self._exact_search(dataset, tbl, vec, k, clause, cols)
        q = tbl.search(vec, vector_column_name="embedding").distance_type("cosine")
        q = q.where(clause, prefilter=True).limit(k)
        if cols is not None:
            q = q.select(cols)
        if not lancedb_defaults:
            if nprobes is None:
                nprobes = probes_for(int(tbl.count_rows()), candidates)
            q = q.nprobes(int(nprobes))
            if refine_factor is not None:
                q = q.refine_factor(int(refine_factor))
        result = q.to_arrow()
        if result.num_rows < k and int(tbl.count_rows(clause)) > result.num_rows:
            return self._exact_search(dataset, tbl, vec, k, clause, cols)  # too few rows in the probed partitions
        return result

    def _exact_search(
        self, dataset: str, tbl: Any, vec: np.ndarray, k: int, clause: str, cols: list[str] | None
    ) -> pa.Table:
        """Brute force over the rows matching ``clause``: read their vectors (in batches), rank in numpy."""
        info = self.get_dataset(dataset)
        norm = float(np.linalg.norm(vec)) or 1.0
        q = vec / norm
        best_d = np.zeros(0, np.float32)
        best_rows: pa.Table | None = None
        want = list(tbl.schema.names) if cols is None else list(dict.fromkeys([*cols, "embedding"]))
        scan = tbl.search().where(clause).select(want).limit(max(1, int(tbl.count_rows(clause))))
        for batch in scan.to_batches(EXACT_BATCH_ROWS):
            part = pa.Table.from_batches([batch])
            emb = part.column("embedding")
            valid = pc.is_valid(emb)
            if not pc.all(valid).as_py():
                part = part.filter(valid)
                emb = part.column("embedding")
            if part.num_rows == 0:
                continue
            m = embeddings_to_numpy(emb, info.dim)
            norms = np.linalg.norm(m, axis=1)
            d = 1.0 - (m @ q) / np.maximum(norms, 1e-12)
            if len(d) > k:
                top = np.argpartition(d, k - 1)[:k]
                part, d = part.take(pa.array(top, pa.int64())), d[top]
            merged = part if best_rows is None else pa.concat_tables([best_rows, part.select(best_rows.column_names)])
            dist = np.concatenate([best_d, d.astype(np.float32)])
            order = np.argsort(dist, kind="stable")[:k]
            best_rows, best_d = merged.take(pa.array(order, pa.int64())), dist[order]
        names = want if cols is None else cols
        if best_rows is None:
            best_rows = pa.schema([tbl.schema.field(c) for c in names]).empty_table()
        elif cols is not None and "embedding" not in cols:
            best_rows = best_rows.drop_columns(["embedding"])
        return best_rows.append_column("_distance", pa.array(best_d, pa.float32()))

    # -- indexes --------------------------------------------------------------------------------

    def has_vector_index(self, dataset: str) -> bool:
        tbl = self._samples(dataset)
        return any("embedding" in list(getattr(ix, "columns", [])) for ix in tbl.list_indices())

    def ensure_indexes(
        self, dataset: str, *, force: bool = False, vector_index: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Build the vector index once the table is large enough, fold new rows into it when many
        arrived since, and keep scalar indexes on the common filter columns. Cheap when nothing is due.

        ``vector_index`` overrides the IVF_PQ parameters (``{}`` = LanceDB's defaults; bench/search.py
        compares them)."""
        with self.lock(dataset):
            info = self.get_dataset(dataset)
            tbl = self._samples(dataset)
            n = tbl.count_rows()
            done: dict[str, Any] = {"rows": n, "vector_index": "none", "scalar_indexes": []}
            indexed_cols = {tuple(getattr(ix, "columns", [])) for ix in tbl.list_indices()}
            n_vectors = tbl.count_rows("embedding IS NOT NULL")
            if ("embedding",) not in indexed_cols:
                if n_vectors >= VECTOR_INDEX_MIN_ROWS or (force and n_vectors >= 256):
                    # ~sqrt(n) partitions, but at least 256 rows each (k-means needs them to train)
                    partitions = index_partitions(n_vectors)
                    sub_vectors = _pick_sub_vectors(info.dim)
                    from lancedb.index import IvfPq

                    params: dict[str, Any] = {"num_partitions": partitions, "num_sub_vectors": sub_vectors}
                    if vector_index is not None:
                        params = dict(vector_index)
                    tbl.create_index("embedding", config=IvfPq(distance_type="cosine", **params))
                    done["vector_index"] = f"built IVF_PQ ({params or 'LanceDB defaults'})"
            else:
                unindexed = self._unindexed_rows(tbl, "embedding")
                if unindexed >= REINDEX_UNINDEXED_ROWS or (force and unindexed):
                    tbl.optimize()
                    done["vector_index"] = f"optimized ({unindexed} new rows folded in)"
                else:
                    done["vector_index"] = "up to date"
            if n >= 1000 or force:
                from lancedb.index import Bitmap, BTree

                wanted = dict(SCALAR_INDEXES)
                # metadata columns are what people filter on ("weather = rain", "area between"): a
                # prefiltered vector search over 1M rows takes ~8 ms with a BTREE on the column, ~18 without
                for fname, ftype in info.metadata_fields.items():
                    wanted.setdefault(META_PREFIX + fname, "BITMAP" if ftype == "bool" else "BTREE")
                for col, kind in wanted.items():
                    if (col,) not in indexed_cols and col in tbl.schema.names:
                        tbl.create_index(col, config=BTree() if kind == "BTREE" else Bitmap())
                        done["scalar_indexes"].append(col)
            return done

    @staticmethod
    def _unindexed_rows(tbl: Any, column: str) -> int:
        for ix in tbl.list_indices():
            if column in list(getattr(ix, "columns", [])):
                try:
                    return int(tbl.index_stats(ix.name).num_unindexed_rows)
                except Exception:  # noqa: BLE001 - stats are advisory
                    return 0
        return 0

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

    def get_doc(self, dataset: str, kind: str, doc_id: str) -> dict[str, Any]:
        tbl = self._docs(dataset)
        tbl.checkout_latest()
        rows = (
            tbl.search()
            .where(f"id = {sql_quote(doc_id)} AND kind = {sql_quote(kind)}")
            .limit(1)
            .to_arrow()
            .to_pylist()
        )
        if not rows:
            raise DocNotFound(kind, doc_id)
        return _doc_row(rows[0])

    def list_docs(self, dataset: str, kind: str) -> list[dict[str, Any]]:
        tbl = self._docs(dataset)
        tbl.checkout_latest()
        n = max(tbl.count_rows(), 1)
        rows = tbl.search().where(f"kind = {sql_quote(kind)}").limit(n).to_arrow().to_pylist()
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


#: a filter leaving at most this many candidates is searched exactly: reading and ranking their vectors
#: costs about one index search at ~1,000 rows (bench/search.py --crossover, 100k and 1M x 512).
EXACT_SEARCH_MAX_CANDIDATES = 1_000
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
