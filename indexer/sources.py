"""Sources: what a user points edgeminer at, read as a stream of :class:`SourceRecord`.

Three kinds, picked by :func:`open_source` (``kind=None`` guesses from the path):

``manifest``  a CSV, JSONL/NDJSON or Parquet table, one row per image (see :class:`ManifestSource`);
``folders``   a folder of class sub-folders ``root/<label>/*.jpg`` plus an optional unlabeled folder
              (see :class:`FolderSource`);
``coco``      COCO ground truth JSON plus an optional COCO results JSON: one record per object patch,
              matched into outcomes (see :class:`CocoSource`).

Every source has ``classes``, ``task`` ("classification" | "detection"), ``metadata_fields``
(``{name: "string"|"int"|"float"|"bool"|"timestamp"}``), ``roots`` (the folders its images live in,
used as media roots), ``has_probs``, ``dim`` (length of precomputed vectors, 0 when none), ``__len__``,
and iterates records. Iterating twice reads the input twice; nothing holds all records in memory
except the COCO source (whose JSON is in memory anyway).

Problems are reported at two levels:

* schema-level (missing ``uri`` column, a metadata column whose name is not an identifier, a vectors
  file whose row count differs, an unreadable file...): :class:`SourceError` is raised by
  :func:`open_source`, before anything is yielded, naming the file and the column or row;
* row-level (probs of the wrong length, a label outside the classes, a duplicate id, ...): the record
  is still yielded, with ``error`` set to a sentence naming the row, so the pipeline stores it as an
  error row and the rest of the batch lands.

Rows are numbered from 1 in data order (a CSV header is not a row; blank JSONL lines are skipped).

``allowed_roots`` (the service passes ``settings.ingest_roots`` for API requests; the CLI passes none)
limits a source to images that resolve, symlinks followed, inside those folders: the paths given to
:func:`open_source` must lie inside them, a manifest or COCO row whose image resolves outside becomes an
error row that is never read, folder walks skip entries that resolve outside, and ``roots`` (the
dataset's media roots) never reach outside them. Whether such an outside path exists is never looked at.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "CocoSource",
    "FolderSource",
    "ManifestSource",
    "Source",
    "SourceError",
    "SourceRecord",
    "iou_xywh",
    "make_id",
    "open_source",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
MANIFEST_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
KINDS = ("manifest", "folders", "coco")
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")
#: metadata column names: the store prefixes them with ``meta_``; same rule as store._check_meta_field.
META_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_PARQUET_BATCH = 8192


class SourceError(ValueError):
    """A schema-level problem with a source, raised before any record is yielded."""


@dataclass
class SourceRecord:
    """One image (classification) or one object patch of an image (detection).

    ``uri`` is the absolute path or URL of the image (for object rows: the parent image); ``probs`` is
    aligned with the source's ``classes``; ``score`` is a confidence given without probs; ``bbox`` is
    ``[x, y, w, h]`` in pixels of the parent image; ``embedding`` is a precomputed vector; ``error`` is
    the row-level problem (the record is then stored as an error row).

    ``labeled`` is True when ``label`` is set, and for COCO false positives (``label`` None): their
    image is annotated, and its ground truth says "nothing here".
    """

    id: str
    uri: str
    split: str
    label: str | None = None
    probs: list[float] | None = None
    pred_label: str | None = None
    score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    bbox: list[float] | None = None
    outcome: str | None = None
    embedding: list[float] | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None

    @property
    def labeled(self) -> bool:
        return self.label is not None or self.outcome == "false_positive"


def make_id(uri: str, index: int | str | None = None) -> str:
    """A stable id from an image's absolute uri: 16 hex digits of its sha1, plus ``:<index>`` for
    object patches (``make_id(uri, "gt0")``). The same uri always gives the same id."""
    digest = hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]
    return digest if index is None else f"{digest}:{index}"


def iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _is_url(uri: str) -> bool:
    return uri.lower().startswith(URL_SCHEMES)


def _resolve_uri(uri: str, base: Path) -> str:
    """An absolute local path (relative paths resolved against ``base``), or the URL unchanged."""
    if _is_url(uri):
        return uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    path = Path(os.path.expanduser(uri))
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(str(path))


MAX_ROOTS = 32


def _real(path: str | os.PathLike[str]) -> str:
    """Absolute, ``~`` expanded, symlinks resolved the way opening it would (a ``..`` after a symlink
    climbs from the link's target, not lexically); the path need not exist."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _real_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    out: list[str] = []
    for root in roots:
        text = os.fspath(root)
        if not text or not str(text).strip() or "://" in str(text):
            continue
        try:
            out.append(_real(str(text).strip()))
        except (OSError, ValueError):
            continue
    return list(dict.fromkeys(out))


def _inside(path: str | os.PathLike[str], real_roots: Sequence[str]) -> bool:
    """Whether ``path`` resolves (symlinks followed, without needing to exist) inside a resolved root."""
    try:
        real = _real(path)
    except (OSError, ValueError, RuntimeError):
        return False
    return any(_under(real, r) for r in real_roots)


def _outermost(dirs: Iterable[str]) -> list[str]:
    ordered = sorted({os.path.normpath(d) for d in dirs}, key=lambda d: Path(d).parts)
    out: list[str] = []
    for d in ordered:
        # sorting by path components puts every folder's descendants right after it
        if out and Path(d).parts[: len(Path(out[-1]).parts)] == Path(out[-1]).parts:
            continue
        out.append(d)
    return out


def _collapse_roots(dirs: Iterable[str], *, limit: int = MAX_ROOTS) -> list[str]:
    """The distinct folders, dropping any folder that lies inside another one in the list.

    More than ``limit`` folders (images spread over many sub-folders) are replaced by their parents,
    level by level, until at most ``limit`` remain, never going above two levels below the file
    system root (``/data/images`` may become a root, ``/data`` or ``/`` never do).
    """
    roots = _outermost(dirs)
    while len(roots) > limit:
        parents = _outermost(os.path.dirname(r) if len(Path(r).parts) > 3 else r for r in roots)
        if parents == roots:
            break
        roots = parents
    return roots


class Source:
    """Base of the three source kinds (see the module docstring for the attributes)."""

    kind: str = ""

    def __init__(self, path: Path, *, allowed_roots: Sequence[str | os.PathLike[str]] | None = None) -> None:
        self.path = path
        #: resolved folders the images must lie in; None = anywhere (see the module docstring)
        self.allowed_roots: list[str] | None = None if allowed_roots is None else _real_roots(allowed_roots)
        self.classes: list[str] = []
        self.task = "classification"
        self.metadata_fields: dict[str, str] = {}
        self.roots: list[str] = []
        self.has_probs = False
        self.dim = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[SourceRecord]:
        if self.allowed_roots is None:
            yield from self._records()
            return
        for rec in self._records():
            yield self._guard(rec)

    def _records(self) -> Iterator[SourceRecord]:
        raise NotImplementedError

    def outside(self, uri: str) -> bool:
        """True when this source is limited to ``allowed_roots`` and the local image ``uri`` resolves
        outside them (URLs are not local paths: they are never outside)."""
        if self.allowed_roots is None or not uri or _is_url(uri):
            return False
        return not _inside(uri[len("file://") :] if uri.startswith("file://") else uri, self.allowed_roots)

    def _guard(self, rec: SourceRecord) -> SourceRecord:
        """The record, or (for an image outside the allowed roots) an error record that is never read."""
        if not self.outside(rec.uri):
            return rec
        import dataclasses

        message = f"image {rec.uri} is outside the folders this ingest may read (ingest_roots); it was not read"
        return dataclasses.replace(rec, error=_join(rec.error, message))

    def _limit_roots(self, roots: list[str]) -> list[str]:
        """``roots`` cut down to the allowed roots: a folder inside them stays, a folder above some of
        them (roots collapsed to a parent) becomes those allowed roots, anything else is dropped."""
        if self.allowed_roots is None:
            return roots
        out: list[str] = []
        for root in roots:
            try:
                real = _real(root)
            except (OSError, ValueError, RuntimeError):
                continue
            if any(_under(real, a) for a in self.allowed_roots):
                out.append(root)
            else:
                out.extend(a for a in self.allowed_roots if _under(a, real))
        return _outermost(out) if out else []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, rows={self._len}, classes={len(self.classes)})"


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------

#: manifest columns with a meaning; every other column is metadata.
KNOWN_COLUMNS = ("id", "uri", "split", "label", "probs", "classes", "pred_label", "score", "embedding")


def _value_kind(value: Any, *, from_text: bool) -> str | None:
    """The metadata type one value suggests, or None for a missing value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return None if math.isnan(value) else "float"
    if isinstance(value, dt.datetime | dt.date):
        return "timestamp"
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        if from_text:  # CSV cells are all text: read numbers and booleans out of them
            if _INT_RE.match(text):
                return "int"
            try:
                if math.isfinite(float(text)):
                    return "float"
            except ValueError:
                pass
            if text.lower() in ("true", "false"):
                return "bool"
        if _TS_RE.match(text) and _parse_ts(text) is not None:
            return "timestamp"
        return "string"
    return "string"


def _merge_kinds(kinds: set[str]) -> str:
    if not kinds:
        return "string"
    if kinds <= {"int"}:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    if len(kinds) == 1:
        return next(iter(kinds))
    return "string"


def _parse_ts(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _convert(value: Any, type_name: str) -> Any:
    """A metadata value as the column's type (None for missing values)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if type_name == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, list | dict):
            return json.dumps(value, default=str)
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        return str(value)
    if type_name == "int":
        return int(value) if not isinstance(value, str) else int(value.strip())
    if type_name == "float":
        return float(value)
    if type_name == "bool":
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"
    if type_name == "timestamp":
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return _parse_ts(str(value))
    raise ValueError(f"unknown metadata type {type_name!r}")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str | None:
    """A label-like value as text (JSON ints become "3"; floats like 3.0 become "3")."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _list_value(value: Any) -> Any:
    """A list column: a list (JSON, Parquet) or a JSON string (CSV)."""
    if isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _number_list(value: Any, what: str) -> list[float]:
    """Parse a list of finite numbers or raise ValueError with a sentence about ``what``."""
    try:
        items = _list_value(value)
    except json.JSONDecodeError:
        raise ValueError(f"{what} is not a JSON list of numbers: {str(value)[:60]!r}") from None
    if not isinstance(items, list | tuple):
        raise ValueError(f"{what} must be a list of numbers, got {type(items).__name__}")
    out: list[float] = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{what} holds a non-numeric value {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{what} holds a non-finite value {v!r}")
        out.append(f)
    return out


class ManifestSource(Source):
    """A table with one row per image: CSV, JSONL/NDJSON or Parquet.

    Columns:

    * ``uri`` (required): path or URL of the image; relative paths resolve against ``image_root``,
      else the manifest's folder;
    * ``id``: stable id (default :func:`make_id` of the absolute uri); a repeated id makes the later
      row an error row "duplicate id, first at row N" stored under ``<id>#dup<row>``;
    * ``split``: default the ``split`` argument, else "unlabeled" for rows without a label, else "train";
    * ``label``: the ground truth class (empty = unlabeled);
    * predictions: ``probs`` (a list aligned with ``classes``; a JSON string in CSV) with the class
      names from the ``classes=`` argument or a ``classes`` column (a JSON list), or ``pred_label`` +
      ``score``;
    * ``embedding`` (or the column named by ``vector_column``): a precomputed vector; or ``vectors=``
      a ``.npy`` with one row per manifest row;
    * any other column is metadata; its type is inferred from all its values (int, float, bool,
      ISO-8601 timestamp, else string) and its name must be an identifier.

    Without probs and without class names, the classes are the sorted labels and predicted labels.
    When class names are known, a label or pred_label outside them is a row error.
    The file is read twice: once at open (columns, types, row count, classes), once per iteration,
    in chunks, so a manifest of millions of rows never sits in memory.
    """

    kind = "manifest"

    def __init__(
        self,
        path: Path,
        *,
        split: str | None = None,
        image_root: str | os.PathLike[str] | None = None,
        vectors: str | os.PathLike[str] | None = None,
        vector_column: str | None = None,
        classes: Sequence[str] | None = None,
        allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(path, allowed_roots=allowed_roots)
        fmt = MANIFEST_EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise SourceError(f"{path}: a manifest must end in {', '.join(MANIFEST_EXTENSIONS)} (got {path.suffix!r})")
        self.format = fmt
        self.default_split = split
        self.base = Path(image_root).expanduser().resolve() if image_root else path.parent.resolve()
        if image_root and not self.base.is_dir():
            raise SourceError(f"image root {self.base} is not a folder")
        self.vector_column = vector_column
        self._vectors: np.ndarray | None = None
        self._scan(classes)
        if vectors is not None:
            self._load_vectors(Path(vectors).expanduser())

    # -- reading rows ---------------------------------------------------------------------------

    def _rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        """(row number from 1, row dict or None, problem text) in file order, streamed."""
        try:
            if self.format == "csv":
                yield from self._csv_rows()
            elif self.format == "jsonl":
                yield from self._jsonl_rows()
            else:
                yield from self._parquet_rows()
        except UnicodeDecodeError as exc:
            raise SourceError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise SourceError(f"{self.path}: unreadable CSV: {exc}") from None

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise SourceError(f"{self.path}: the file is empty; a manifest needs a header with a 'uri' column")
            header = [h.strip() for h in header]
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise SourceError(f"{self.path}: column {dupes[0]!r} appears twice in the header")
            n = 0
            for cells in reader:
                if not cells or all(c.strip() == "" for c in cells):
                    continue
                n += 1
                if len(cells) != len(header):
                    yield n, None, f"has {len(cells)} cells, the header has {len(header)} columns"
                    continue
                yield n, {h: (None if c == "" else c) for h, c in zip(header, cells, strict=True)}, None

    def _jsonl_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        with open(self.path, encoding="utf-8-sig") as f:
            n = 0
            for line in f:
                if not line.strip():
                    continue
                n += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, None, f"is not valid JSON ({exc.msg} at column {exc.colno})"
                    continue
                if not isinstance(obj, dict):
                    yield n, None, f"is a JSON {type(obj).__name__}, expected an object"
                    continue
                yield n, obj, None

    def _parquet_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise SourceError(f"{self.path}: not a readable Parquet file: {exc}") from None
        n = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
            for row in batch.to_pylist():
                n += 1
                yield n, row, None

    # -- schema scan ----------------------------------------------------------------------------

    def _scan(self, classes_arg: Sequence[str] | None) -> None:
        columns: list[str] = []
        seen_cols: set[str] = set()
        kinds: dict[str, set[str]] = {}
        labels: set[str] = set()
        first_classes: list[str] | None = None
        dirs: set[str] = set()
        rows = 0
        has_probs = False
        vcol = self.vector_column or "embedding"
        dim = 0
        from_text = self.format == "csv"
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                columns = list(pq.read_schema(self.path).names)
            except Exception as exc:  # noqa: BLE001
                raise SourceError(f"{self.path}: not a readable Parquet file: {exc}") from None
            seen_cols.update(columns)
        elif self.format == "csv":
            try:
                with open(self.path, newline="", encoding="utf-8-sig") as f:
                    header = next(csv.reader(f), None)
            except UnicodeDecodeError as exc:
                raise SourceError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            columns = [h.strip() for h in header or []]
            seen_cols.update(columns)
        for _n, row, _problem in self._rows():
            rows += 1
            if row is None:
                continue
            for key, value in row.items():
                if key not in seen_cols:
                    seen_cols.add(key)
                    columns.append(key)
                if key in KNOWN_COLUMNS or key == vcol:
                    continue
                kind = _value_kind(value, from_text=from_text)
                if kind is not None:
                    kinds.setdefault(key, set()).add(kind)
            for key in ("label", "pred_label"):
                text = _text(row.get(key))
                if text is not None:
                    labels.add(text)
            if not _missing(row.get("probs")):
                has_probs = True
            if first_classes is None and not _missing(row.get("classes")):
                try:
                    value = _list_value(row["classes"])
                except json.JSONDecodeError:
                    value = None
                if isinstance(value, list) and value:
                    first_classes = [str(c) for c in value]
            if not dim and not _missing(row.get(vcol)):
                try:
                    dim = len(_number_list(row[vcol], "embedding"))
                except ValueError:
                    pass
            uri = row.get("uri")
            if isinstance(uri, str) and uri.strip() and not _is_url(uri.strip()):
                local = _resolve_uri(uri.strip(), self.base)
                if not self.outside(local):
                    dirs.add(os.path.dirname(local))

        if "uri" not in seen_cols:
            found = ", ".join(columns[:12]) or "none"
            raise SourceError(
                f"{self.path}: no 'uri' column (found: {found}); add a column 'uri' with each image's path or URL"
            )
        if self.vector_column and self.vector_column not in seen_cols:
            raise SourceError(
                f"{self.path}: vector column {self.vector_column!r} not found (columns: {', '.join(columns)})"
            )
        meta = [c for c in columns if c not in KNOWN_COLUMNS and c != vcol]
        for name in meta:
            if not META_NAME_RE.match(name):
                raise SourceError(
                    f"{self.path}: column {name!r} would become metadata but is not a valid field name; "
                    "rename it to letters, digits and '_' (not starting with a digit, at most 63 characters)"
                )
        self.columns = columns
        self.metadata_fields = {name: _merge_kinds(kinds.get(name, set())) for name in meta}
        if classes_arg:
            self.classes = [str(c) for c in classes_arg]
            self._classes_given = True
        elif first_classes:
            self.classes = first_classes
            self._classes_given = True
        else:
            if has_probs:
                raise SourceError(
                    f"{self.path}: the 'probs' column needs class names in the order of its values: add a "
                    "'classes' column (a JSON list) or pass classes= (CLI: --classes a,b,c)"
                )
            self.classes = sorted(labels)
            self._classes_given = False
        if len(set(self.classes)) != len(self.classes):
            raise SourceError(f"{self.path}: the class names repeat a name: {self.classes}")
        self.has_probs = has_probs
        self.dim = dim
        self.roots = self._limit_roots(_collapse_roots(dirs))
        self._len = rows

    def _load_vectors(self, path: Path) -> None:
        if not path.is_file():
            raise SourceError(f"vectors file {path} does not exist")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SourceError(f"{path}: not a readable .npy array: {exc}") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise SourceError(f"{path}: expected a 2-D numeric array (rows, dim), got shape {arr.shape} {arr.dtype}")
        if arr.shape[0] != self._len:
            raise SourceError(
                f"{path}: {arr.shape[0]} vectors for {self._len} manifest rows in {self.path.name}; "
                "the .npy must hold one row per manifest row, in the same order"
            )
        self._vectors = arr
        self.dim = int(arr.shape[1])

    # -- records --------------------------------------------------------------------------------

    def _records(self) -> Iterator[SourceRecord]:
        seen: dict[str, int] = {}
        class_set = set(self.classes)
        vcol = self.vector_column or "embedding"
        for n, row, problem in self._rows():
            rec = self._record(n, row, problem, class_set, vcol)
            first = seen.get(rec.id)
            if first is None:
                seen[rec.id] = n
            else:
                rec.id = f"{rec.id}#dup{n}"
                rec.error = _join(rec.error, f"row {n}: duplicate id, first at row {first}")
            yield rec

    def _record(
        self, n: int, row: dict[str, Any] | None, problem: str | None, class_set: set[str], vcol: str
    ) -> SourceRecord:
        errors: list[str] = []
        if row is None:
            row = {}
            errors.append(f"row {n} {problem}")
        raw_uri = row.get("uri")
        uri = ""
        if isinstance(raw_uri, str) and raw_uri.strip():
            uri = _resolve_uri(raw_uri.strip(), self.base)
        elif not errors:
            errors.append(f"row {n}: 'uri' is empty; every row needs the image's path or URL")
        rid = _text(row.get("id"))
        if rid is None:
            rid = make_id(uri) if uri else make_id(f"{self.path.resolve()}#row{n}")
        label = _text(row.get("label"))
        pred_label = _text(row.get("pred_label"))
        split = _text(row.get("split")) or self.default_split or ("unlabeled" if label is None else "train")

        probs: list[float] | None = None
        if not _missing(row.get("probs")):
            try:
                probs = _number_list(row["probs"], f"row {n}: probs")
            except ValueError as exc:
                errors.append(str(exc))
            else:
                if len(probs) != len(self.classes):
                    errors.append(
                        f"row {n}: probs has {len(probs)} values, expected {len(self.classes)} (one per class)"
                    )
                elif any(p < 0 for p in probs) or sum(probs) <= 0:
                    errors.append(f"row {n}: probs must be non-negative with a positive sum")
                if errors:
                    probs = None
        if not _missing(row.get("classes")) and self._classes_given:
            try:
                row_classes = [str(c) for c in _list_value(row["classes"])]
            except (json.JSONDecodeError, TypeError):
                row_classes = None
            if row_classes != self.classes:
                errors.append(f"row {n}: its 'classes' differ from the source's classes {self.classes[:5]}...")
                probs = None
        if self._classes_given:
            for key, value in (("label", label), ("pred_label", pred_label)):
                if value is not None and value not in class_set:
                    errors.append(f"row {n}: {key} {value!r} is not one of the {len(self.classes)} classes")

        score: float | None = None
        if not _missing(row.get("score")):
            try:
                score = float(row["score"])
                if not math.isfinite(score):
                    raise ValueError
            except (TypeError, ValueError):
                errors.append(f"row {n}: score {row['score']!r} is not a number")
                score = None

        embedding: list[float] | None = None
        if self._vectors is not None:
            embedding = np.asarray(self._vectors[n - 1], dtype=np.float64).tolist()
        elif not _missing(row.get(vcol)):
            try:
                embedding = _number_list(row[vcol], f"row {n}: {vcol}")
            except ValueError as exc:
                errors.append(str(exc))
            else:
                if self.dim and len(embedding) != self.dim:
                    errors.append(f"row {n}: {vcol} has {len(embedding)} values, expected {self.dim}")
                    embedding = None

        metadata: dict[str, Any] = {}
        for name, type_name in self.metadata_fields.items():
            try:
                metadata[name] = _convert(row.get(name), type_name)
            except (TypeError, ValueError):
                errors.append(f"row {n}: metadata {name!r} value {row.get(name)!r} is not a {type_name}")
                metadata[name] = None

        return SourceRecord(
            id=rid,
            uri=uri,
            split=split,
            label=label,
            probs=probs,
            pred_label=pred_label,
            score=score,
            metadata=metadata,
            embedding=embedding,
            error="; ".join(errors) or None,
        )


def _join(first: str | None, second: str) -> str:
    return second if not first else f"{first}; {second}"


# ----------------------------------------------------------------------------------------------
# Class folders
# ----------------------------------------------------------------------------------------------


def _images_under(folder: Path, *, skip: Path | None = None, allowed: Sequence[str] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted. With ``allowed``
    (resolved roots), entries that resolve outside them are skipped, folders and files alike."""
    if allowed is not None and not _inside(folder, allowed):
        return []
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and (skip is None or (here / d).resolve() != skip)
            and (allowed is None or _inside(here / d, allowed))
        )
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                if allowed is None or _inside(here / name, allowed):
                    out.append(here / name)
    return out


class FolderSource(Source):
    """Labeled images in class sub-folders ``root/<label>/...`` (searched recursively), plus an optional
    ``unlabeled`` folder (recursive) whose images get split "unlabeled".

    Classes are the sorted sub-folder names (or ``classes=``, which must include every folder name).
    Labeled images get split ``split`` (default "train"). A root holding images but no sub-folders is
    read as an unlabeled pool. No predictions: the embedder's model provides them, if any.
    """

    kind = "folders"

    def __init__(
        self,
        root: Path,
        *,
        unlabeled: str | os.PathLike[str] | None = None,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(root, allowed_roots=allowed_roots)
        allowed = self.allowed_roots
        root = root.resolve()
        pool = Path(unlabeled).expanduser().resolve() if unlabeled is not None else None
        if pool is not None and not pool.is_dir():
            raise SourceError(f"unlabeled folder {pool} does not exist or is not a folder")
        self.split = split or "train"
        entries: list[tuple[Path, str | None]] = []
        folders = sorted(
            p
            for p in root.iterdir()
            if (allowed is None or _inside(p, allowed))  # decided before looking at what p points to
            and p.is_dir()
            and not p.name.startswith(".")
            and p.resolve() != pool
        )
        for folder in folders:
            entries.extend((f, folder.name) for f in _images_under(folder, skip=pool, allowed=allowed))
        names = [f.name for f in folders]
        if not folders:
            loose = _images_under(root, skip=pool, allowed=allowed)
            if not loose and pool is None:
                raise SourceError(f"{root}: no class sub-folders and no images; expected {root}/<label>/<image files>")
            if root != pool:
                entries.extend((f, None) for f in loose)
        if pool is not None:
            entries.extend((f, None) for f in _images_under(pool, allowed=allowed))
        if classes:
            missing = [n for n in names if n not in classes]
            if missing:
                raise SourceError(f"{root}: folders {missing} are not among classes= {list(classes)}")
            self.classes = [str(c) for c in classes]
        else:
            self.classes = names
        self._entries = entries
        self._len = len(entries)
        self.roots = self._limit_roots(_collapse_roots([str(root)] + ([str(pool)] if pool is not None else [])))

    def _records(self) -> Iterator[SourceRecord]:
        for path, label in self._entries:
            uri = os.path.normpath(str(path.absolute()))
            yield SourceRecord(
                id=make_id(uri), uri=uri, split="unlabeled" if label is None else self.split, label=label
            )


# ----------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SourceError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not valid JSON: {exc}") from None


def _bbox(value: Any) -> list[float] | None:
    """A valid [x, y, w, h] with w, h > 0, or None."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        return None
    return box


class CocoSource(Source):
    """COCO detection ground truth (+ optional COCO results): one record per object patch.

    Matching, per image: predictions with ``score >= score_threshold`` are taken in descending score
    order (ties: file order) and each is matched to the unmatched ground-truth box of highest IoU,
    if that IoU is ``>= iou`` (class-agnostic). Then:

    ======================  ==========  ==========  ======  ===============
    case                    label       pred_label  bbox    outcome
    ======================  ==========  ==========  ======  ===============
    matched, same class     GT class    pred class  GT box  correct
    matched, other class    GT class    pred class  GT box  wrong_class
    prediction, no GT       None        pred class  pred    false_positive
    GT, no prediction       GT class    None        GT box  false_negative
    no results file         GT class    None        GT box  None
    ======================  ==========  ==========  ======  ===============

    False positives have ``label`` None but count as labeled (their image is annotated and says
    "nothing here"); ``score`` is the prediction's score. ``uri`` is the parent image (``file_name``
    under ``image_root``, default the annotation file's folder), ``parent_id`` its :func:`make_id`,
    ``id`` = ``make_id(image uri, "gt<k>")`` for the k-th annotation of that image (file order) and
    ``"pred<j>"`` for the j-th result of that image, so ids are stable across runs. Metadata:
    ``coco_image_id`` and ``iscrowd`` (None for false positives). Classes are the category names in
    category id order. Annotations or results naming an unknown image or category, or with a bad
    box, become error records.
    """

    kind = "coco"

    def __init__(
        self,
        path: Path,
        *,
        results: str | os.PathLike[str] | None = None,
        image_root: str | os.PathLike[str] | None = None,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        score_threshold: float = 0.05,
        iou: float = 0.5,
        allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        super().__init__(path, allowed_roots=allowed_roots)
        if not 0 < iou <= 1:
            raise SourceError(f"iou must be in (0, 1], got {iou}")
        self.task = "detection"
        self.split = split or "train"
        self.score_threshold = float(score_threshold)
        self.iou = float(iou)
        self.base = Path(image_root).expanduser().resolve() if image_root else path.parent.resolve()
        gt = _load_json(path, "COCO annotation file")
        if not isinstance(gt, dict):
            raise SourceError(f"{path}: a COCO file is a JSON object with 'images', 'annotations', 'categories'")
        for key in ("images", "annotations", "categories"):
            if not isinstance(gt.get(key), list):
                raise SourceError(f"{path}: missing or non-list {key!r}; is this a COCO detection file?")
        cats: dict[Any, str] = {}
        for i, cat in enumerate(gt["categories"]):
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise SourceError(f"{path}: categories[{i}] needs an 'id' and a 'name'")
            cats[cat["id"]] = str(cat["name"])
        names = [cats[k] for k in sorted(cats, key=lambda k: (str(type(k)), k))]
        if len(set(names)) != len(names):
            raise SourceError(f"{path}: two categories share a name: {names}")
        if classes:
            missing = [n for n in names if n not in classes]
            if missing:
                raise SourceError(f"{path}: categories {missing} are not among classes= {list(classes)}")
            names = [str(c) for c in classes]
        self.classes = names
        self._cats = cats

        images: dict[Any, dict[str, Any]] = {}
        for i, img in enumerate(gt["images"]):
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                raise SourceError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
            images[img["id"]] = img
        self._images = images

        preds: list[Any] | None = None
        if results is not None:
            rpath = Path(results).expanduser()
            loaded = _load_json(rpath, "COCO results file")
            if isinstance(loaded, dict) and isinstance(loaded.get("annotations"), list):
                loaded = loaded["annotations"]
            if not isinstance(loaded, list):
                raise SourceError(f"{rpath}: COCO results are a JSON list of {{image_id, category_id, bbox, score}}")
            preds = loaded
        self.has_predictions = preds is not None
        self._record_list = self._build(gt["annotations"], preds)
        self._len = len(self._record_list)
        id_kinds = {_value_kind(k, from_text=False) for k in images}
        self.metadata_fields = {"coco_image_id": "int" if id_kinds <= {"int"} else "string", "iscrowd": "bool"}
        local = [self._uri(img) for img in images.values() if not _is_url(img["file_name"])]
        dirs = {os.path.dirname(uri) for uri in local if not self.outside(uri)}
        self.roots = self._limit_roots(_collapse_roots(dirs | {str(self.base)}))
        self._check_images_found(image_root is not None)

    def _uri(self, img: Mapping[str, Any]) -> str:
        return _resolve_uri(str(img["file_name"]), self.base)

    def _check_images_found(self, root_given: bool) -> None:
        """Refuse early when none of the first images exists: image_root is most likely wrong."""
        sample = [self._uri(img) for img in list(self._images.values())[:20] if not _is_url(img["file_name"])]
        sample = [u for u in sample if not self.outside(u)]  # never look whether an outside file exists
        if sample and not any(os.path.exists(u) for u in sample):
            hint = "check image_root" if root_given else "pass image_root= (CLI: --image-root) with the images' folder"
            raise SourceError(f"{self.path}: none of the first images exists (e.g. {sample[0]}); {hint}")

    def _build(self, anns: list[Any], preds: list[Any] | None) -> list[SourceRecord]:
        records: list[SourceRecord] = []
        gts: dict[Any, list[tuple[int, dict[str, Any], list[float]]]] = {}
        for i, ann in enumerate(anns):
            where = f"{self.path.name}: annotations[{i}]"
            if not isinstance(ann, dict):
                records.append(self._error(f"{self.path}#ann{i}", f"{where} is not an object"))
                continue
            img = self._images.get(ann.get("image_id"))
            if img is None:
                records.append(self._error(f"{self.path}#ann{i}", f"{where}: unknown image_id {ann.get('image_id')!r}"))
                continue
            group = gts.setdefault(img["id"], [])
            k = len(group)
            box = _bbox(ann.get("bbox"))
            problem = None
            if ann.get("category_id") not in self._cats:
                problem = f"{where}: unknown category_id {ann.get('category_id')!r}"
            elif box is None:
                problem = f"{where}: bbox {ann.get('bbox')!r} is not [x, y, w, h] with w, h > 0"
            if problem:
                group.append((k, ann, []))
                uri = self._uri(img)
                records.append(self._error(uri, problem, index=f"gt{k}", img=img))
                continue
            assert box is not None
            group.append((k, ann, box))

        dts: dict[Any, list[tuple[int, dict[str, Any], list[float], float]]] = {}
        counters: dict[Any, int] = {}
        rname = "results"
        for i, det in enumerate(preds or []):
            where = f"{rname}[{i}]"
            if not isinstance(det, dict):
                records.append(self._error(f"{self.path}#det{i}", f"{where} is not an object"))
                continue
            img = self._images.get(det.get("image_id"))
            if img is None:
                records.append(
                    self._error(
                        f"{self.path}#det{i}", f"{where}: prediction for unknown image_id {det.get('image_id')!r}"
                    )
                )
                continue
            j = counters.get(img["id"], 0)
            counters[img["id"]] = j + 1
            box = _bbox(det.get("bbox"))
            try:
                score = float(det.get("score", 1.0))
            except (TypeError, ValueError):
                score = float("nan")
            problem = None
            if det.get("category_id") not in self._cats:
                problem = f"{where}: unknown category_id {det.get('category_id')!r}"
            elif box is None:
                problem = f"{where}: bbox {det.get('bbox')!r} is not [x, y, w, h] with w, h > 0"
            elif not math.isfinite(score):
                problem = f"{where}: score {det.get('score')!r} is not a number"
            if problem:
                records.append(self._error(self._uri(img), problem, index=f"pred{j}", img=img))
                continue
            assert box is not None
            if score >= self.score_threshold:
                dts.setdefault(img["id"], []).append((j, det, box, score))

        for image_id, img in self._images.items():
            records.extend(self._match(img, [g for g in gts.get(image_id, []) if g[2]], dts.get(image_id, [])))
        return records

    def _match(
        self,
        img: dict[str, Any],
        gts: list[tuple[int, dict[str, Any], list[float]]],
        dts: list[tuple[int, dict[str, Any], list[float], float]],
    ) -> list[SourceRecord]:
        uri = self._uri(img)
        parent = make_id(uri)
        matched: dict[int, tuple[int, dict[str, Any], list[float], float]] = {}  # gt position -> det
        unmatched_dts: list[tuple[int, dict[str, Any], list[float], float]] = []
        for det in sorted(dts, key=lambda d: -d[3]):  # sorted() is stable: ties keep file order
            best, best_iou = -1, self.iou
            for pos, (_k, _ann, gbox) in enumerate(gts):
                if pos in matched:
                    continue
                overlap = iou_xywh(det[2], gbox)
                if overlap >= best_iou and (best < 0 or overlap > best_iou):
                    best, best_iou = pos, overlap
            if best >= 0:
                matched[best] = det
            else:
                unmatched_dts.append(det)
        width, height = _int(img.get("width")), _int(img.get("height"))

        def patch(index: str, **kw: Any) -> SourceRecord:
            return SourceRecord(
                id=make_id(uri, index), uri=uri, split=self.split, parent_id=parent, width=width, height=height, **kw
            )

        out: list[SourceRecord] = []
        for pos, (k, ann, gbox) in enumerate(gts):
            label = self._cats[ann["category_id"]]
            meta = {"coco_image_id": img["id"], "iscrowd": bool(ann.get("iscrowd", 0))}
            hit = matched.get(pos)
            if hit is not None:
                pred = self._cats[hit[1]["category_id"]]
                outcome = "correct" if pred == label else "wrong_class"
                out.append(
                    patch(
                        f"gt{k}", label=label, pred_label=pred, score=hit[3], bbox=gbox, outcome=outcome, metadata=meta
                    )
                )
            else:
                missed = "false_negative" if self.has_predictions else None
                out.append(patch(f"gt{k}", label=label, bbox=gbox, outcome=missed, metadata=meta))
        for j, fp, dbox, score in sorted(unmatched_dts, key=lambda d: d[0]):
            out.append(
                patch(
                    f"pred{j}",
                    pred_label=self._cats[fp["category_id"]],
                    score=score,
                    bbox=dbox,
                    outcome="false_positive",
                    metadata={"coco_image_id": img["id"], "iscrowd": None},
                )
            )
        return out

    def _error(
        self, key: str, message: str, *, index: str | None = None, img: dict[str, Any] | None = None
    ) -> SourceRecord:
        """An error record; for an object of a known image it keeps the image's uri and ids."""
        if img is None:
            return SourceRecord(id=make_id(key), uri="", split=self.split, error=message)
        return SourceRecord(
            id=make_id(key, index),
            uri=key,
            split=self.split,
            parent_id=make_id(key),
            width=_int(img.get("width")),
            height=_int(img.get("height")),
            metadata={"coco_image_id": img["id"], "iscrowd": None},
            error=message,
        )

    def _records(self) -> Iterator[SourceRecord]:
        yield from self._record_list


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# open_source
# ----------------------------------------------------------------------------------------------


def _guess_kind(path: Path) -> str:
    if path.is_dir():
        return "folders"
    suffix = path.suffix.lower()
    if suffix in MANIFEST_EXTENSIONS:
        return "manifest"
    if suffix == ".json":
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", errors="replace")
        if '"images"' in head or '"annotations"' in head:
            return "coco"
        raise SourceError(
            f"{path}: a .json source must be COCO (with 'images' and 'annotations'); "
            "for a manifest use .jsonl (one JSON object per line), .csv or .parquet"
        )
    raise SourceError(
        f"{path}: cannot tell the source kind from {suffix or 'no extension'!r}; use a folder of class "
        f"folders, a manifest ({', '.join(MANIFEST_EXTENSIONS)}) or a COCO .json, or pass kind="
    )


def open_source(
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    split: str | None = None,
    unlabeled: str | os.PathLike[str] | None = None,
    coco_results: str | os.PathLike[str] | None = None,
    image_root: str | os.PathLike[str] | None = None,
    vectors: str | os.PathLike[str] | None = None,
    vector_column: str | None = None,
    classes: Sequence[str] | None = None,
    score_threshold: float = 0.05,
    iou: float = 0.5,
    allowed_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> Source:
    """Open a source of images for ingest (see the module docstring).

    ``kind`` is "manifest", "folders" or "coco"; None guesses: a directory is folders, a ``.json`` with
    "images"/"annotations" is COCO, ``.csv``/``.jsonl``/``.ndjson``/``.parquet`` is a manifest.
    Options that do not apply to the kind raise :class:`SourceError` rather than being ignored.
    ``allowed_roots`` (None = anywhere) limits the source and every path option to those folders; a path
    outside them is refused before anything looks at it, with a message that does not say whether it exists.
    """
    if allowed_roots is not None:
        real_roots = _real_roots(allowed_roots)
        named = {
            "source": path,
            "unlabeled": unlabeled,
            "coco_results": coco_results,
            "image_root": image_root,
            "vectors": vectors,
        }
        for name, value in named.items():
            if value is not None and not _inside(value, real_roots):
                raise SourceError(f"{name} {os.fspath(value)!r} is outside the folders this ingest may read")
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist")
    if kind is None:
        kind = _guess_kind(p)
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    given = {
        "unlabeled": unlabeled is not None,
        "coco_results": coco_results is not None,
        "vectors": vectors is not None,
        "vector_column": vector_column is not None,
        "image_root": image_root is not None,
    }
    allowed = {
        "manifest": {"image_root", "vectors", "vector_column"},
        "folders": {"unlabeled"},
        "coco": {"coco_results", "image_root"},
    }[kind]
    extra = [name for name, on in given.items() if on and name not in allowed]
    if extra:
        raise SourceError(f"option {extra[0]} does not apply to a {kind} source ({p})")
    if kind == "folders":
        if not p.is_dir():
            raise SourceError(f"{p} is not a folder; a folders source is root/<label>/<images>")
        return FolderSource(p, unlabeled=unlabeled, split=split, classes=classes, allowed_roots=allowed_roots)
    if p.is_dir():
        raise SourceError(f"{p} is a folder; a {kind} source is a file")
    try:
        if kind == "coco":
            return CocoSource(
                p,
                results=coco_results,
                image_root=image_root,
                split=split,
                classes=classes,
                score_threshold=score_threshold,
                iou=iou,
                allowed_roots=allowed_roots,
            )
        return ManifestSource(
            p,
            split=split,
            image_root=image_root,
            vectors=vectors,
            vector_column=vector_column,
            classes=classes,
            allowed_roots=allowed_roots,
        )
    except PermissionError as exc:
        raise SourceError(f"cannot read {exc.filename or p}: permission denied") from None
