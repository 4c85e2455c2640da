"""Manifest sources: a CSV, JSONL/NDJSON or Parquet table with one row per image (:class:`ManifestSource`)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeminer.indexer.sources.base import (
    Source,
    SourceError,
    SourceRecord,
    collapse_roots,
    is_url,
    join_errors,
    make_id,
    resolve_uri,
)
from edgeminer.indexer.sources.values import (
    convert_value,
    is_missing,
    list_value,
    merge_kinds,
    number_list,
    text_value,
    value_kind,
)

__all__ = ["KNOWN_COLUMNS", "MANIFEST_EXTENSIONS", "META_NAME_RE", "ManifestSource"]

MANIFEST_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: manifest columns with a meaning; every other column is metadata.
KNOWN_COLUMNS = ("id", "uri", "split", "label", "probs", "classes", "pred_label", "score", "embedding")
#: metadata column names: the store prefixes them with ``meta_``; same rule as store._check_meta_field.
META_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PARQUET_BATCH = 8192


@dataclass
class _Scan:
    """What the pass over a manifest at open learns, row by row."""

    vcol: str
    from_text: bool
    columns: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    kinds: dict[str, set[str]] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)
    first_classes: list[str] | None = None
    dirs: set[str] = field(default_factory=set)
    rows: int = 0
    has_probs: bool = False
    dim: int = 0

    def add_row(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key not in self.seen:
                self.seen.add(key)
                self.columns.append(key)
            if key in KNOWN_COLUMNS or key == self.vcol:
                continue
            kind = value_kind(value, from_text=self.from_text)
            if kind is not None:
                self.kinds.setdefault(key, set()).add(kind)
        for key in ("label", "pred_label"):
            text = text_value(row.get(key))
            if text is not None:
                self.labels.add(text)
        if not is_missing(row.get("probs")):
            self.has_probs = True
        if self.first_classes is None and not is_missing(row.get("classes")):
            try:
                value = list_value(row["classes"])
            except json.JSONDecodeError:
                value = None
            if isinstance(value, list) and value:
                self.first_classes = [str(c) for c in value]
        if not self.dim and not is_missing(row.get(self.vcol)):
            try:
                self.dim = len(number_list(row[self.vcol], "embedding"))
            except ValueError:
                pass


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
        """Read the file once: columns, metadata types, row count, classes, vector size, image folders."""
        scan = _Scan(vcol=self.vector_column or "embedding", from_text=self.format == "csv")
        header = self._header_columns()
        scan.columns, scan.seen = list(header), set(header)
        for _n, row, _problem in self._rows():
            scan.rows += 1
            if row is not None:
                scan.add_row(row)
                self._note_image_folder(scan, row.get("uri"))
        meta = self._check_columns(scan)
        self.columns = scan.columns
        self.metadata_fields = {name: merge_kinds(scan.kinds.get(name, set())) for name in meta}
        self.classes, self._classes_given = self._pick_classes(classes_arg, scan)
        self.has_probs = scan.has_probs
        self.dim = scan.dim
        self.roots = self._limit_roots(collapse_roots(scan.dirs))
        self._len = scan.rows

    def _header_columns(self) -> list[str]:
        """The columns a Parquet schema or a CSV header declares (JSONL has none: keys come per row)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                return list(pq.read_schema(self.path).names)
            except Exception as exc:  # noqa: BLE001
                raise SourceError(f"{self.path}: not a readable Parquet file: {exc}") from None
        if self.format == "csv":
            try:
                with open(self.path, newline="", encoding="utf-8-sig") as f:
                    header = next(csv.reader(f), None)
            except UnicodeDecodeError as exc:
                raise SourceError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            return [h.strip() for h in header or []]
        return []

    def _note_image_folder(self, scan: _Scan, uri: Any) -> None:
        if isinstance(uri, str) and uri.strip() and not is_url(uri.strip()):
            local = resolve_uri(uri.strip(), self.base)
            if not self.outside(local):
                scan.dirs.add(os.path.dirname(local))

    def _check_columns(self, scan: _Scan) -> list[str]:
        """The metadata columns, after checking the required and named columns exist."""
        if "uri" not in scan.seen:
            found = ", ".join(scan.columns[:12]) or "none"
            raise SourceError(
                f"{self.path}: no 'uri' column (found: {found}); add a column 'uri' with each image's path or URL"
            )
        if self.vector_column and self.vector_column not in scan.seen:
            raise SourceError(
                f"{self.path}: vector column {self.vector_column!r} not found (columns: {', '.join(scan.columns)})"
            )
        meta = [c for c in scan.columns if c not in KNOWN_COLUMNS and c != scan.vcol]
        for name in meta:
            if not META_NAME_RE.match(name):
                raise SourceError(
                    f"{self.path}: column {name!r} would become metadata but is not a valid field name; "
                    "rename it to letters, digits and '_' (not starting with a digit, at most 63 characters)"
                )
        return meta

    def _pick_classes(self, classes_arg: Sequence[str] | None, scan: _Scan) -> tuple[list[str], bool]:
        """(classes, whether they were given): classes=, else the first 'classes' cell, else the labels."""
        if classes_arg:
            classes, given = [str(c) for c in classes_arg], True
        elif scan.first_classes:
            classes, given = scan.first_classes, True
        else:
            if scan.has_probs:
                raise SourceError(
                    f"{self.path}: the 'probs' column needs class names in the order of its values: add a "
                    "'classes' column (a JSON list) or pass classes= (CLI: --classes a,b,c)"
                )
            classes, given = sorted(scan.labels), False
        if len(set(classes)) != len(classes):
            raise SourceError(f"{self.path}: the class names repeat a name: {classes}")
        return classes, given

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
                rec.error = join_errors(rec.error, f"row {n}: duplicate id, first at row {first}")
            yield rec

    def _record(
        self, n: int, row: dict[str, Any] | None, problem: str | None, class_set: set[str], vcol: str
    ) -> SourceRecord:
        """Row ``n`` as a record; its problems (all of them, in column order) become ``error``."""
        errors: list[str] = []
        if row is None:
            row = {}
            errors.append(f"row {n} {problem}")
        raw_uri = row.get("uri")
        uri = ""
        if isinstance(raw_uri, str) and raw_uri.strip():
            uri = resolve_uri(raw_uri.strip(), self.base)
        elif not errors:
            errors.append(f"row {n}: 'uri' is empty; every row needs the image's path or URL")
        rid = text_value(row.get("id"))
        if rid is None:
            rid = make_id(uri) if uri else make_id(f"{self.path.resolve()}#row{n}")
        label = text_value(row.get("label"))
        pred_label = text_value(row.get("pred_label"))
        probs = self._probs(n, row, errors)
        if not self._classes_match(n, row, errors):
            probs = None
        if self._classes_given:
            for key, value in (("label", label), ("pred_label", pred_label)):
                if value is not None and value not in class_set:
                    errors.append(f"row {n}: {key} {value!r} is not one of the {len(self.classes)} classes")
        score = _score(n, row, errors)
        embedding = self._embedding(n, row, vcol, errors)
        metadata = self._metadata(n, row, errors)
        return SourceRecord(
            id=rid,
            uri=uri,
            split=text_value(row.get("split")) or self.default_split or ("unlabeled" if label is None else "train"),
            label=label,
            probs=probs,
            pred_label=pred_label,
            score=score,
            metadata=metadata,
            embedding=embedding,
            error="; ".join(errors) or None,
        )

    def _probs(self, n: int, row: dict[str, Any], errors: list[str]) -> list[float] | None:
        """The row's probs, or None when missing or when the row has a problem so far."""
        if is_missing(row.get("probs")):
            return None
        try:
            probs = number_list(row["probs"], f"row {n}: probs")
        except ValueError as exc:
            errors.append(str(exc))
            return None
        if len(probs) != len(self.classes):
            errors.append(f"row {n}: probs has {len(probs)} values, expected {len(self.classes)} (one per class)")
        elif any(p < 0 for p in probs) or sum(probs) <= 0:
            errors.append(f"row {n}: probs must be non-negative with a positive sum")
        return None if errors else probs

    def _classes_match(self, n: int, row: dict[str, Any], errors: list[str]) -> bool:
        """False (with an error) when the row's own 'classes' differ from the source's given classes."""
        if is_missing(row.get("classes")) or not self._classes_given:
            return True
        try:
            row_classes = [str(c) for c in list_value(row["classes"])]
        except (json.JSONDecodeError, TypeError):
            row_classes = None
        if row_classes != self.classes:
            errors.append(f"row {n}: its 'classes' differ from the source's classes {self.classes[:5]}...")
            return False
        return True

    def _embedding(self, n: int, row: dict[str, Any], vcol: str, errors: list[str]) -> list[float] | None:
        """The row's precomputed vector: from the vectors file, else the vector column, else None."""
        if self._vectors is not None:
            return np.asarray(self._vectors[n - 1], dtype=np.float64).tolist()
        if is_missing(row.get(vcol)):
            return None
        try:
            embedding = number_list(row[vcol], f"row {n}: {vcol}")
        except ValueError as exc:
            errors.append(str(exc))
            return None
        if self.dim and len(embedding) != self.dim:
            errors.append(f"row {n}: {vcol} has {len(embedding)} values, expected {self.dim}")
            return None
        return embedding

    def _metadata(self, n: int, row: dict[str, Any], errors: list[str]) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        for name, type_name in self.metadata_fields.items():
            try:
                metadata[name] = convert_value(row.get(name), type_name)
            except (TypeError, ValueError):
                errors.append(f"row {n}: metadata {name!r} value {row.get(name)!r} is not a {type_name}")
                metadata[name] = None
        return metadata


def _score(n: int, row: dict[str, Any], errors: list[str]) -> float | None:
    """The row's score (a finite number), or None."""
    if is_missing(row.get("score")):
        return None
    try:
        score = float(row["score"])
        if not math.isfinite(score):
            raise ValueError
    except (TypeError, ValueError):
        errors.append(f"row {n}: score {row['score']!r} is not a number")
        return None
    return score
