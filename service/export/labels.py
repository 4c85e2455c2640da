"""Labels back in: a Label Studio JSON export (full or JSON-MIN), a COCO JSON, or a CSV of
``(id or uri, label)`` -> the matched rows become labeled.

For every matched row: ``labeled = true``, ``label`` set, ``split`` set as asked, and ``correct`` /
``outcome`` recomputed against the stored prediction. Entries that match no row are reported with
the reason. Nothing is overwritten in place: the previous labels stay readable at the version the
report names (``store.query(ds, version=report.version_before)``).

Matching: by id first (``edgeminer_id`` in the task data / COCO image or annotation, ``id`` column of
a CSV), else by image path (the uri, its path relative to a media root, or a unique file name).
Detection: each labeled box is matched to an object row of the same image (the row whose id the
region carries, else the best IoU >= ``iou``); object rows of an annotated image that no box matches
become false positives; boxes that match no row are reported (new objects need an ingest).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from indexer.store import Store, sql_quote
from service.export.common import ExportError, iou_xywh, percent_to_xywh
from service.export.labelstudio import LOCAL_FILES_PREFIX

LABEL_FORMATS = ("label_studio", "coco", "csv")
MAX_REPORTED = 1000
WRITE_BATCH = 5000


class LabelImportError(ExportError):
    """The labels file cannot be read (wrong format, missing columns...)."""

    title = "Invalid labels file"
    slug = "invalid-labels"


@dataclass
class LabelEntry:
    """One label from the file: for an image (classification) or a box (detection)."""

    source: str  # where in the file: "task 3", "line 7", "annotation 12"
    label: str | None
    id: str | None = None  # a sample id (classification) or an object row id (detection region)
    image_key: str | None = None  # detection: the image's key (edgeminer_id of a task / COCO image)
    image: str | None = None  # image path / URL as the file names it
    bbox: tuple[float, float, float, float] | None = None  # pixels x, y, w, h
    split: str | None = None


@dataclass
class LabelImportReport:
    dataset: str
    format: str
    split: str
    entries: int = 0
    matched: int = 0
    changed: int = 0
    false_positives: int = 0
    conflicts: int = 0
    skipped_tasks: int = 0  # tasks / images without any annotation
    new_classes: list[str] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    unmatched_count: int = 0
    labeled_before: int = 0
    labeled_after: int = 0
    version_before: int = 0
    version_after: int = 0

    def add_unmatched(self, entry: LabelEntry, reason: str) -> None:
        self.unmatched_count += 1
        if len(self.unmatched) < MAX_REPORTED:
            self.unmatched.append(
                {
                    "source": entry.source,
                    "id": entry.id or entry.image_key,
                    "image": entry.image,
                    "label": entry.label,
                    "reason": reason,
                }
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{self.matched} rows labeled from {self.entries} entries ({self.changed} changed)",
            f"{self.unmatched_count} unmatched",
            f"labeled rows {self.labeled_before} -> {self.labeled_after}",
            f"previous labels at table version {self.version_before}",
        ]
        if self.false_positives:
            parts.insert(1, f"{self.false_positives} false positives")
        if self.new_classes:
            parts.append(f"new classes {', '.join(self.new_classes)}")
        return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def detect_format(data: Any, name: str = "") -> str:
    if isinstance(data, (bytes, str)):
        text = data.decode("utf-8-sig", "replace") if isinstance(data, bytes) else data
        if not text.lstrip().startswith(("[", "{")):
            if name.lower().endswith(".json"):
                raise LabelImportError(f"{name} is not valid JSON: it does not start with '[' or '{{'")
            return "csv"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelImportError(f"{name or 'the labels'} is not valid JSON: {exc}") from None
    if isinstance(data, Mapping) and "images" in data and "annotations" in data:
        return "coco"
    if isinstance(data, list) or (isinstance(data, Mapping) and "data" in data):
        return "label_studio"
    raise LabelImportError(
        f"cannot tell the format of {name or 'the labels'}: expected a Label Studio JSON export (a list of "
        "tasks), a COCO JSON (images + annotations) or a CSV with id/uri and label columns"
    )


def load(source: str | os.PathLike[str] | bytes | Any, *, format: str | None = None) -> tuple[str, Any]:
    """(format, parsed data) from a path, raw bytes or already parsed JSON."""
    name = ""
    raw: Any = source
    if isinstance(source, (str, os.PathLike)) and not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise LabelImportError(f"labels file {str(path)!r} does not exist")
        name = path.name
        raw = path.read_bytes()
    if format is not None and format not in LABEL_FORMATS:
        raise LabelImportError(f"unknown labels format {format!r}: choose one of {', '.join(LABEL_FORMATS)}")
    fmt = format or detect_format(raw, name)
    if fmt == "csv":
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else str(raw)
        return fmt, text
    if isinstance(raw, (bytes, str)):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabelImportError(f"{name or 'the labels'} is not valid JSON: {exc}") from None
    return fmt, raw


def _ls_image(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if value.startswith(LOCAL_FILES_PREFIX):
        return unquote(value[len(LOCAL_FILES_PREFIX) :])
    return value


def read_label_studio(data: Any, report: LabelImportReport) -> list[LabelEntry]:
    tasks = data if isinstance(data, list) else [data]
    out: list[LabelEntry] = []
    for n, task in enumerate(tasks):
        where = f"task {task.get('id', n)}" if isinstance(task, Mapping) else f"item {n}"
        if not isinstance(task, Mapping):
            raise LabelImportError(f"{where} of the Label Studio export is not an object")
        if "data" in task or "annotations" in task:  # full JSON export
            task_data = task.get("data") or {}
            key = task_data.get("edgeminer_id")
            image = _ls_image(task_data.get("image"))
            annotations = [
                a for a in (task.get("annotations") or []) if not (a.get("was_cancelled") or a.get("skipped"))
            ]
            if not annotations:
                report.skipped_tasks += 1
                continue
            result = annotations[-1].get("result") or []
            out.extend(_ls_results(result, where, key, image))
        else:  # JSON-MIN: flat {image, edgeminer_id, <from_name>: value}
            key = task.get("edgeminer_id")
            image = _ls_image(task.get("image"))
            value = task.get("label")
            if value is None:
                report.skipped_tasks += 1
                continue
            if isinstance(value, str):
                out.append(LabelEntry(where, value, id=key, image_key=key, image=image))
            elif isinstance(value, list):
                for region in value:
                    out.extend(
                        _ls_results(
                            [
                                {
                                    "type": "rectanglelabels",
                                    "value": region,
                                    "original_width": region.get("original_width"),
                                    "original_height": region.get("original_height"),
                                }
                            ],
                            where,
                            key,
                            image,
                        )
                    )
    return out


def _ls_results(result: Iterable[Mapping[str, Any]], where: str, key: Any, image: str | None) -> list[LabelEntry]:
    out = []
    for r in result:
        value = r.get("value") or {}
        kind = r.get("type")
        if kind == "choices" or "choices" in value:
            choices = value.get("choices") or []
            if choices:
                out.append(LabelEntry(where, str(choices[0]), id=key, image_key=key, image=image))
        elif kind in ("rectanglelabels", "rectangle") or "rectanglelabels" in value:
            labels = value.get("rectanglelabels") or value.get("labels") or []
            ow, oh = r.get("original_width"), r.get("original_height")
            if not ow or not oh:
                raise LabelImportError(
                    f"{where}: a rectangle has no original_width/original_height, so its percent box cannot "
                    "be turned into pixels (export from Label Studio as JSON, not JSON-MIN)"
                )
            box = percent_to_xywh(
                (float(value["x"]), float(value["y"]), float(value["width"]), float(value["height"])), ow, oh
            )
            out.append(
                LabelEntry(
                    where, str(labels[0]) if labels else None, id=r.get("id"), image_key=key, image=image, bbox=box
                )
            )
    return out


def read_coco(data: Mapping[str, Any], report: LabelImportReport, task: str) -> list[LabelEntry]:
    try:
        cats = {int(c["id"]): str(c["name"]) for c in data.get("categories") or []}
        images = {int(i["id"]): i for i in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelImportError(f"COCO file: images and categories need 'id' (and 'name'): {exc}") from None
    by_image: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations") or []:
        by_image[int(ann.get("image_id", -1))].append(ann)
    out = []
    for n, ann in enumerate(data.get("annotations") or []):
        if int(ann.get("image_id", -1)) not in images:
            report.add_unmatched(
                LabelEntry(f"annotation {ann.get('id', n)}", None),
                f"image_id {ann.get('image_id')!r} is not in the file's images",
            )
    for image_id, img in images.items():
        anns = by_image.get(image_id, [])
        if not anns:
            report.skipped_tasks += 1
            continue
        key = img.get("edgeminer_id")
        path = img.get("coco_url") or img.get("file_name")
        if task == "classification":
            names = {cats.get(int(a["category_id"])) for a in anns}
            where = f"image {image_id}"
            if len(names) > 1:
                report.conflicts += 1
                report.add_unmatched(
                    LabelEntry(where, None, id=key, image=path),
                    f"{len(names)} different categories for one image of a classification dataset",
                )
                continue
            name = names.pop()
            if name is None:
                report.add_unmatched(LabelEntry(where, None, id=key, image=path), "unknown category_id")
                continue
            out.append(LabelEntry(where, name, id=key, image_key=key, image=path))
        else:
            for ann in anns:
                where = f"annotation {ann.get('id')}"
                bbox = ann.get("bbox")
                name = cats.get(int(ann["category_id"]))
                if not bbox or len(bbox) != 4 or name is None:
                    report.add_unmatched(LabelEntry(where, name, image=path), "no bbox or unknown category_id")
                    continue
                out.append(
                    LabelEntry(
                        where,
                        name,
                        id=ann.get("edgeminer_id"),
                        image_key=key,
                        image=path,
                        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
                    )
                )
    return out


def read_csv(text: str, report: LabelImportReport) -> list[LabelEntry]:
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    id_col = cols.get("id")
    uri_col = cols.get("uri") or cols.get("image") or cols.get("file_name") or cols.get("path")
    label_col = cols.get("label")
    if label_col is None or (id_col is None and uri_col is None):
        raise LabelImportError(
            f"the CSV needs a 'label' column and an 'id' or 'uri' column; it has: {', '.join(cols) or 'none'}"
        )
    box_cols = [cols.get(c) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
    split_col = cols.get("split")
    out = []
    for n, row in enumerate(reader, start=2):
        where = f"line {n}"
        label = (row.get(label_col) or "").strip()
        sid = (row.get(id_col) or "").strip() if id_col else ""
        uri = (row.get(uri_col) or "").strip() if uri_col else ""
        entry = LabelEntry(
            where,
            label or None,
            id=sid or None,
            image=uri or None,
            split=(row.get(split_col) or "").strip() or None if split_col else None,
        )
        if not label:
            report.add_unmatched(entry, "empty label")
            continue
        if not sid and not uri:
            report.add_unmatched(entry, "neither id nor uri given")
            continue
        if all(box_cols) and all((row.get(c) or "").strip() for c in box_cols if c):
            try:
                x, y, w, h = (float(row[c]) for c in box_cols if c)
                entry.bbox = (x, y, w, h)
            except ValueError:
                report.add_unmatched(entry, "bbox_x/bbox_y/bbox_w/bbox_h are not numbers")
                continue
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------
# Matching and writing
# ----------------------------------------------------------------------------------------------


def _norm_path(p: str) -> str:
    if "://" in p:
        p = unquote(urlsplit(p).path)
    return p.replace("\\", "/")


class _UriIndex:
    """uri -> ids, by full path, by path suffix and by unique base name."""

    def __init__(self, store: Store, dataset: str):
        table = store.query(dataset, columns=["id", "uri"])
        self.by_uri: dict[str, list[str]] = defaultdict(list)
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for sid, uri in zip(table["id"].to_pylist(), table["uri"].to_pylist(), strict=True):
            if not uri:
                continue
            norm = _norm_path(uri)
            self.by_uri[norm].append(sid)
            self.by_name[os.path.basename(norm)].append(sid)
        self.uris = list(self.by_uri)

    def find(self, image: str) -> tuple[list[str], str | None]:
        norm = _norm_path(image)
        if norm in self.by_uri:
            return self.by_uri[norm], None
        rel = norm.lstrip("./")
        hits = [u for u in self.uris if u.endswith("/" + rel)] if "/" in rel else []
        if len(hits) == 1:
            return self.by_uri[hits[0]], None
        if len(hits) > 1:
            return [], f"{len(hits)} images end with {rel!r}"
        base = os.path.basename(norm)
        names = self.by_name.get(base, [])
        if not names:
            return [], "no row has this image"
        image_uris = {u for u in self.uris if os.path.basename(u) == base}
        if len(image_uris) > 1:
            return [], f"{len(image_uris)} images share the file name {base!r}; give ids or full paths"
        return names, None


def _outcome(label: str | None, pred: str | None, task: str) -> tuple[bool | None, str | None]:
    if task == "detection":
        if pred is None and label is None:
            return None, None  # a missed object the labelers removed
        if pred is None:
            return False, "false_negative"
        if label is None:
            return False, "false_positive"
        return label == pred, "correct" if label == pred else "wrong_class"
    if pred is None or label is None:
        return None, None
    return label == pred, "correct" if label == pred else "wrong_class"


def import_labels(
    store: Store,
    dataset: str,
    source: str | os.PathLike[str] | bytes | Any,
    *,
    format: str | None = None,
    split: str = "train",
    iou: float = 0.5,
) -> LabelImportReport:
    """Read labels and write them into ``dataset``; see the module docstring. Returns the report."""
    info = store.get_dataset(dataset)
    if not split or not isinstance(split, str):
        raise LabelImportError("split must be a non-empty name such as 'train' or 'val'")
    if not 0.0 < iou <= 1.0:
        raise LabelImportError(f"iou must be in (0, 1], not {iou}")
    fmt, data = load(source, format=format)
    report = LabelImportReport(dataset=dataset, format=fmt, split=split)
    if fmt == "csv":
        entries = read_csv(data, report)
    elif fmt == "coco":
        if not isinstance(data, Mapping):
            raise LabelImportError("a COCO labels file is a JSON object with images, annotations, categories")
        entries = read_coco(data, report, info.task)
    else:
        entries = read_label_studio(data, report)
    report.entries = len(entries) + report.unmatched_count
    report.version_before = store.version(dataset)
    report.labeled_before = store.count(dataset, "labeled = true")

    updates: dict[str, dict[str, Any]] = {}
    if info.task == "detection":
        _match_detection(store, dataset, entries, report, updates, iou)
    else:
        _match_classification(store, dataset, entries, report, updates)

    new_classes = sorted({u["label"] for u in updates.values() if u["label"] and u["label"] not in info.classes})
    if new_classes:
        store.update_dataset(dataset, classes=[*info.classes, *new_classes])
        report.new_classes = new_classes
    ids = list(updates)
    current = {}
    for start in range(0, len(ids), WRITE_BATCH):
        part = store.get_samples(
            dataset, ids[start : start + WRITE_BATCH], columns=["id", "pred_label", "label", "labeled", "split"]
        )
        current.update({r["id"]: r for r in part.to_pylist()})
    rows = []
    for sid, upd in updates.items():
        cur = current.get(sid)
        if cur is None:
            continue
        correct, outcome = _outcome(upd["label"], cur["pred_label"], info.task)
        new_split = upd.get("split") or split
        if not (cur["labeled"] and cur["label"] == upd["label"] and cur["split"] == new_split):
            report.changed += 1
        rows.append(
            {
                "id": sid,
                "split": new_split,
                "labeled": True,
                "label": upd["label"],
                "correct": correct,
                "outcome": outcome,
            }
        )
    report.matched = sum(1 for u in updates.values() if not u.get("fp"))
    report.false_positives = sum(1 for u in updates.values() if u.get("fp"))
    for start in range(0, len(rows), WRITE_BATCH):
        store.update_columns(dataset, pa.Table.from_pylist(rows[start : start + WRITE_BATCH]))
    report.version_after = store.version(dataset)
    report.labeled_after = store.count(dataset, "labeled = true")
    return report


def _set(updates: dict[str, dict[str, Any]], sid: str, entry: LabelEntry, report: LabelImportReport) -> None:
    prev = updates.get(sid)
    if prev is not None and not prev.get("fp") and prev["label"] != entry.label:
        report.conflicts += 1
    updates[sid] = {"label": entry.label, "split": entry.split}


def _match_classification(
    store: Store,
    dataset: str,
    entries: Sequence[LabelEntry],
    report: LabelImportReport,
    updates: dict[str, dict[str, Any]],
) -> None:
    with_id = [e for e in entries if e.id]
    known: set[str] = set()
    ids = list(dict.fromkeys(str(e.id) for e in with_id))
    for start in range(0, len(ids), 2000):
        known.update(store.get_samples(dataset, ids[start : start + 2000], columns=["id"])["id"].to_pylist())
    index: _UriIndex | None = None
    for e in entries:
        if e.id and e.id in known:
            _set(updates, e.id, e, report)
            continue
        if not e.image:
            report.add_unmatched(e, f"no row has id {e.id!r}" if e.id else "no id and no image given")
            continue
        if index is None:
            index = _UriIndex(store, dataset)
        hits, why = index.find(e.image)
        if len(hits) == 1:
            _set(updates, hits[0], e, report)
        elif why is None and hits:
            report.add_unmatched(e, f"{len(hits)} rows share this image; give ids")
        else:
            report.add_unmatched(e, why or "no row has this image")


def _match_detection(
    store: Store,
    dataset: str,
    entries: Sequence[LabelEntry],
    report: LabelImportReport,
    updates: dict[str, dict[str, Any]],
    iou: float,
) -> None:
    cols = ["id", "parent_id", "uri", "bbox"]
    # rows named by id without their image (a CSV of object ids): labeled directly, nothing inferred
    loose = [e for e in entries if e.id and not e.image_key and not e.image]
    ids = list(dict.fromkeys(str(e.id) for e in loose))
    known = set(store.get_samples(dataset, ids, columns=["id"])["id"].to_pylist()) if ids else set()
    groups: dict[str, list[LabelEntry]] = defaultdict(list)
    for e in entries:
        if e.id and not e.image_key and not e.image:
            if e.id in known:
                _set(updates, e.id, e, report)
            else:
                report.add_unmatched(e, f"no row has id {e.id!r}")
            continue
        groups[str(e.image_key or e.image or "")].append(e)
    index: _UriIndex | None = None
    for key, group in groups.items():
        first = group[0]
        rows: list[dict[str, Any]] = []
        if first.image_key:
            rows = store.query(
                dataset, where=f"parent_id = {sql_quote(str(first.image_key))}", columns=cols
            ).to_pylist()
        if not rows and first.image:
            if index is None:
                index = _UriIndex(store, dataset)
            hits, _ = index.find(first.image)
            rows = store.get_samples(dataset, hits, columns=cols).to_pylist() if hits else []
        if not rows and not key:
            for e in group:
                report.add_unmatched(e, "no image key and no image path to find the image by")
            continue
        if not rows:
            for e in group:
                report.add_unmatched(e, "no object row belongs to this image")
            continue
        by_id = {r["id"]: r for r in rows}
        used: set[str] = set()
        pending = []
        for e in group:
            if e.bbox is None:
                report.add_unmatched(e, "detection labels need a box")
            elif e.id and e.id in by_id and e.id not in used:
                used.add(e.id)
                _set(updates, e.id, e, report)
            else:
                pending.append(e)
        pairs = sorted(
            (
                (iou_xywh(e.bbox or (0, 0, 0, 0), r["bbox"]), n, r["id"])
                for n, e in enumerate(pending)
                for r in rows
                if r["bbox"] is not None
            ),
            reverse=True,
        )
        done: set[int] = set()
        for score, n, rid in pairs:
            if score < iou or n in done or rid in used:
                continue
            done.add(n)
            used.add(rid)
            _set(updates, rid, pending[n], report)
        for n, e in enumerate(pending):
            if n not in done:
                report.add_unmatched(
                    e, f"no object row overlaps this box with IoU >= {iou}; new objects need an ingest"
                )
        for r in rows:  # predicted objects the labelers did not keep
            if r["id"] not in used:
                updates[r["id"]] = {"label": None, "split": first.split, "fp": True}
