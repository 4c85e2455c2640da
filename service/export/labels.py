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

The whole file is read and checked before anything is written; a file with a problem is refused as a
whole (:class:`LabelImportError`, a 422 in the API), naming the file, the item / line and the field:

* structure: every task, annotation, region, image, category and CSV line must have the shape its
  tool writes (objects where objects belong, ``category_id`` / ``image_id`` present, ids that are
  strings or integers, boxes of four finite numbers with a positive width and height, no duplicate
  COCO ids, UTF-8 text);
* labels: a string, non-empty after stripping the spaces around it, at most ``MAX_LABEL_CHARS``
  characters, without control characters (NUL, tab, newline...); a COCO category needs a name.

Class-set policy: a label that is not one of the dataset's classes refuses the import
(:class:`UnknownLabels`, listing the unknown labels with where they occur and the known classes) unless
the caller asks to add classes (``add_classes=True``; API ``add_classes=true``, CLI ``--add-classes``).
Added classes are appended at the END of the class list, so the probabilities stored with older rows
(and sent by the unchanged model) still line up with the first classes: they cover a prefix of the
list, and classes after it have probability 0 there. The dataset remembers how many classes the
model's probabilities cover (``DatasetInfo.model_classes``, set by ``Store.update_dataset`` the first
time classes are appended), and ``indexer.scores.classes_for_probs`` names the classes of a
probability vector of any accepted length.
"""

from __future__ import annotations

import copy
import csv
import difflib
import io
import json
import math
import os
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from edgeminer.indexer.store import DatasetInfo, Store, sql_quote
from edgeminer.service.export.common import ExportError, iou_xywh, percent_to_xywh
from edgeminer.service.export.labelstudio import LOCAL_FILES_PREFIX

LabelFormat = Literal["label_studio", "coco", "csv"]
LABEL_FORMATS: tuple[LabelFormat, ...] = get_args(LabelFormat)
MAX_REPORTED = 1000
WRITE_BATCH = 5000
#: longest label (class name) accepted; longer ones are refused.
MAX_LABEL_CHARS = 200
#: longest sample id / split name / image path accepted from a labels file.
MAX_ID_CHARS = 1000
MAX_SPLIT_CHARS = 64
MAX_PATH_CHARS = 4096
#: problems listed in a refusal (the count says how many there were in all).
MAX_PROBLEMS = 50
#: unknown labels listed in a refusal, and the places each one occurs.
MAX_UNKNOWN_LISTED = 20
MAX_SOURCES_LISTED = 3
#: integer ids beyond this are refused (they are not ids, and their text could be huge).
MAX_INT_ID = 2**63 - 1


class LabelImportError(ExportError):
    """The labels file cannot be read or is refused whole (wrong format, a malformed item, a bad label...);
    nothing was imported. ``errors`` lists the problems found."""


class UnknownLabels(LabelImportError):
    """Labels that are not classes of the dataset, without ``add_classes``: nothing is imported."""


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


@dataclass
class ParsedLabels:
    """A labels file read and checked (nothing written yet): its entries and what reading found."""

    name: str
    format: str
    entries: list[LabelEntry]
    report: LabelImportReport  # skipped tasks and entries unmatched while reading

    def labels(self) -> dict[str, list[str]]:
        """label -> sources where it occurs (every label of the file, in file order)."""
        out: dict[str, list[str]] = {}
        for e in self.entries:
            if e.label is not None:
                out.setdefault(e.label, []).append(e.source)
        return out


# ----------------------------------------------------------------------------------------------
# Checking values
# ----------------------------------------------------------------------------------------------


class _Problems:
    """Structural problems and bad values found while reading a file; refused together at the end."""

    def __init__(self, name: str):
        self.name = name
        self.items: list[dict[str, Any]] = []
        self.count = 0

    def add(self, where: str, field_name: str | None, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append({"source": where, "field": field_name, "message": message})

    def raise_if_any(self) -> None:
        if not self.count:
            return
        shown = "; ".join(
            f"{p['source']}" + (f", {p['field']}" if p["field"] else "") + f": {p['message']}" for p in self.items[:5]
        )
        more = f" (and {self.count - 5} more, listed in 'errors')" if self.count > 5 else ""
        noun = "problem" if self.count == 1 else "problems"
        raise LabelImportError(
            f"{self.name}: {self.count} {noun}: {shown}{more}. Nothing was imported: fix (or remove) these "
            "entries and import the file again",
            errors=self.items,
            file=self.name,
            problem_count=self.count,
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{_kind(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _control_chars(text: str) -> bool:
    """True when the text holds a control character (NUL, tab, newline, DEL, C1) or a lone surrogate."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def label_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a class name (None when it can, after stripping surrounding spaces)."""
    if not isinstance(value, str):
        return f"a label must be a string, not {_kind(value)} ({_short(value)})"
    text = value.strip()
    if not text:
        return "the label is empty"
    if len(text) > MAX_LABEL_CHARS:
        return f"the label is {len(text)} characters long; labels are at most {MAX_LABEL_CHARS}"
    if _control_chars(text):
        return f"the label {_short(text)} holds control characters (NUL, tab, newline...); class names are plain text"
    return None


def _label(value: Any, where: str, field_name: str, problems: _Problems) -> str | None:
    why = label_problem(value)
    if why is not None:
        problems.add(where, field_name, why)
        return None
    return str(value).strip()


def _text_problem(text: str, what: str, limit: int) -> str | None:
    if len(text) > limit:
        return f"the {what} is {len(text)} characters long; at most {limit}"
    if _control_chars(text):
        return f"the {what} {_short(text)} holds control characters (NUL, tab, newline...)"
    return None


def _sample_id(value: Any, where: str, field_name: str, problems: _Problems) -> str | None:
    """A sample / row id: a string or an integer (None when absent or empty)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        problems.add(where, field_name, f"an id must be a string (or an integer), not {_kind(value)} ({_short(value)})")
        return None
    if isinstance(value, int):
        if abs(value) > MAX_INT_ID:
            problems.add(where, field_name, f"the id {_short(value)} is not a usable id (too large)")
            return None
        return str(value)
    if not value.strip():
        return None
    why = _text_problem(value, "id", MAX_ID_CHARS)
    if why is not None:
        problems.add(where, field_name, why)
        return None
    return value


def _image_path(value: Any, where: str, field_name: str, problems: _Problems) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.add(where, field_name, f"the image must be a path or URL string, not {_kind(value)}")
        return None
    why = _text_problem(value, "image path", MAX_PATH_CHARS)
    if why is not None:
        problems.add(where, field_name, why)
        return None
    if value.startswith(LOCAL_FILES_PREFIX):
        return unquote(value[len(LOCAL_FILES_PREFIX) :]) or None
    return value


def _number(value: Any, where: str, field_name: str, problems: _Problems) -> float | None:
    """A finite number (JSON number, or numeric text from a CSV)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        problems.add(where, field_name, f"must be a number, not {_kind(value)} ({_short(value)})")
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        problems.add(where, field_name, f"must be a number, not {_short(value)}")
        return None
    if not math.isfinite(number):
        problems.add(where, field_name, f"must be a finite number, not {_short(value)}")
        return None
    return number


def _box(
    values: Sequence[Any], names: Sequence[str], where: str, problems: _Problems
) -> tuple[float, float, float, float] | None:
    """x, y, w, h: four finite numbers with w, h > 0."""
    nums = [_number(v, where, n, problems) for v, n in zip(values, names, strict=True)]
    if any(n is None for n in nums):
        return None
    x, y, w, h = (float(n) for n in nums if n is not None)
    if w <= 0 or h <= 0:
        problems.add(where, f"{names[2]}/{names[3]}", f"a box needs a positive width and height, got {w:g} x {h:g}")
        return None
    return x, y, w, h


def _finite_box(box: tuple[float, float, float, float], where: str, field_name: str, problems: _Problems) -> bool:
    if all(math.isfinite(v) for v in box):
        return True
    problems.add(where, field_name, "the box is too large to be a box in pixels (it overflows)")
    return False


def _where_item(n: int, item: Any, noun: str) -> str:
    """'task 3' style location: the item's own id when it has a printable one, else its index."""
    item_id = item.get("id") if isinstance(item, Mapping) else None
    if isinstance(item_id, (str, int)) and not isinstance(item_id, bool) and len(str(item_id)) <= 80:
        return f"{noun} {item_id} (item {n})"
    return f"{noun} #{n}"


def display_name(filename: str | None) -> str:
    """An uploaded file's name as error messages show it: its base name, printable, at most 120 characters."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cs")).strip()
    return base[:120] or "labels"


def check_split(split: Any) -> str:
    if not isinstance(split, str) or not split.strip():
        raise LabelImportError("split must be a non-empty name such as 'train' or 'val'")
    why = _text_problem(split, "split name", MAX_SPLIT_CHARS)
    if why is not None:
        raise LabelImportError(why)
    return split


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelImportError(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded): a labels file is a JSON export "
            "(Label Studio, COCO) or a CSV, saved as UTF-8"
        ) from None


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelImportError(f"{name} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # a number with thousands of digits, nesting too deep
        raise LabelImportError(f"{name} is not JSON this server reads: {str(exc)[:200]}") from None


def detect_format(data: Any, name: str = "") -> str:
    name = name or "the labels file"
    if isinstance(data, (bytes, str)):
        text = data.decode("utf-8-sig", "replace") if isinstance(data, bytes) else data.removeprefix("\ufeff")
        if not text.strip():
            raise LabelImportError(f"{name} is empty: upload the file exported from the labeling tool")
        if not text.lstrip().startswith(("[", "{")):
            if name.lower().endswith(".json"):
                data = _parse_json(text, name)  # not valid JSON -> says so
                raise LabelImportError(
                    f"{name} is JSON but not a labels export: {_kind(data)}, where a Label Studio export is a "
                    "list of tasks and a COCO file an object with images and annotations"
                )
            return "csv"
        data = _parse_json(text, name)
    if isinstance(data, Mapping) and "images" in data and "annotations" in data:
        return "coco"
    if isinstance(data, list) or (isinstance(data, Mapping) and ("data" in data or "annotations" in data)):
        return "label_studio"
    raise LabelImportError(
        f"cannot tell the format of {name}: expected a Label Studio JSON export (a list of "
        "tasks), a COCO JSON (images + annotations) or a CSV with id/uri and label columns"
    )


def load(
    source: str | os.PathLike[str] | bytes | Any, *, format: str | None = None, name: str | None = None
) -> tuple[str, Any]:
    """(format, parsed data) from a path, raw bytes or already parsed JSON. CSV data is its text."""
    raw: Any = source
    if isinstance(source, (str, os.PathLike)) and not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise LabelImportError(f"labels file {str(path)!r} does not exist")
        name = name or path.name
        raw = path.read_bytes()
    name = name or "the labels file"
    if format is not None and format not in LABEL_FORMATS:
        raise LabelImportError(f"unknown labels format {format!r}: choose one of {', '.join(LABEL_FORMATS)}")
    if isinstance(raw, bytes):
        raw = _decode(raw, name)
    if isinstance(raw, str):
        raw = raw.removeprefix("\ufeff")
        if not raw.strip():
            raise LabelImportError(f"{name} is empty: upload the file exported from the labeling tool")
        if format == "csv" or (format is None and not raw.lstrip().startswith(("[", "{"))):
            return format or detect_format(raw, name), raw  # CSV (detect_format refuses a .json that is not)
        raw = _parse_json(raw, name)  # parsed once, here
    fmt = format or detect_format(raw, name)
    if fmt == "csv":
        raise LabelImportError(f"{name}: CSV labels are text, not {_kind(raw)}")
    return fmt, raw


def read_label_studio(data: Any, report: LabelImportReport, problems: _Problems | None = None) -> list[LabelEntry]:
    """Read a Label Studio export (full JSON or JSON-MIN).

    Parameters
    ----------
    data
        The parsed JSON: a list of tasks (or one task).
    report
        Counts skipped tasks.
    problems
        Collects per-task problems (default: a new collector for "the labels file").

    Returns
    -------
    list of LabelEntry
        One entry per label or rectangle found.

    Raises
    ------
    LabelImportError
        ``data`` is not a list of tasks, or holds none.
    """
    problems = problems or _Problems("the labels file")
    if isinstance(data, Mapping):
        tasks: list[Any] = [data]
    elif isinstance(data, list):
        tasks = data
    else:
        raise LabelImportError(
            f"{problems.name}: a Label Studio export is a JSON list of tasks, not {_kind(data)}; export the "
            "project as JSON (or JSON-MIN)"
        )
    if not tasks:
        raise LabelImportError(f"{problems.name} holds no tasks: nothing to import")
    out: list[LabelEntry] = []
    for n, task in enumerate(tasks):
        where = _where_item(n, task, "task")
        if not isinstance(task, Mapping):
            problems.add(where, None, f"a task must be an object, not {_kind(task)} ({_short(task)})")
            continue
        if "data" in task or "annotations" in task:  # full JSON export
            out.extend(_ls_full_task(task, where, report, problems))
        else:  # JSON-MIN: flat {image, edgeminer_id, <from_name>: value}
            out.extend(_ls_min_task(task, where, report, problems))
    return out


def _ls_full_task(
    task: Mapping[str, Any], where: str, report: LabelImportReport, problems: _Problems
) -> list[LabelEntry]:
    """The entries of one task of a full JSON export: its last annotation neither cancelled nor skipped."""
    task_data = task.get("data")
    if not isinstance(task_data, Mapping):
        problems.add(
            where,
            "data",
            f"a task needs a 'data' object with its image (and edgeminer_id), not {_kind(task_data)}; "
            "export the project again as JSON",
        )
        return []
    key = _sample_id(task_data.get("edgeminer_id"), where, "data.edgeminer_id", problems)
    image = _image_path(task_data.get("image"), where, "data.image", problems)
    annotations = task.get("annotations")
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list):
        problems.add(where, "annotations", f"must be a list of annotation objects, not {_kind(annotations)}")
        return []
    live: list[tuple[int, Mapping[str, Any]]] = []
    for k, ann in enumerate(annotations):
        if not isinstance(ann, Mapping):
            problems.add(where, f"annotations[{k}]", f"an annotation must be an object, not {_kind(ann)}")
        elif not (ann.get("was_cancelled") or ann.get("skipped")):
            live.append((k, ann))
    if not live:
        report.skipped_tasks += 1
        return []
    k, ann = live[-1]
    result = ann.get("result")
    if result is None:
        result = []
    if not isinstance(result, list):
        problems.add(where, f"annotations[{k}].result", f"must be a list of regions, not {_kind(result)}")
        return []
    return _ls_results(result, where, f"annotations[{k}].result", key, image, problems)


def _ls_min_task(
    task: Mapping[str, Any], where: str, report: LabelImportReport, problems: _Problems
) -> list[LabelEntry]:
    """The entries of one JSON-MIN task: its ``label`` (a class name, choices, or a list of rectangles)."""
    if not any(k in task for k in ("edgeminer_id", "image", "label")):
        problems.add(
            where,
            None,
            "has neither data/annotations (a full JSON export) nor image/edgeminer_id/label (JSON-MIN); "
            "export the project from Label Studio as JSON",
        )
        return []
    key = _sample_id(task.get("edgeminer_id"), where, "edgeminer_id", problems)
    image = _image_path(task.get("image"), where, "image", problems)
    value = task.get("label")
    if value is None:
        report.skipped_tasks += 1
        return []
    out: list[LabelEntry] = []
    if isinstance(value, str):
        label = _label(value, where, "label", problems)
        if label is not None:
            out.append(LabelEntry(where, label, id=key, image_key=key, image=image))
    elif isinstance(value, Mapping) and "choices" in value:
        out.extend(_ls_results([{"type": "choices", "value": value}], where, "label", key, image, problems))
    elif isinstance(value, list):
        for k, region in enumerate(value):
            if not isinstance(region, Mapping):
                problems.add(where, f"label[{k}]", f"a region must be an object, not {_kind(region)}")
                continue
            entry = _ls_rectangle(
                region,
                region.get("original_width"),
                region.get("original_height"),
                None,
                where,
                f"label[{k}]",
                key,
                image,
                problems,
            )
            if entry is not None:
                out.append(entry)
    else:
        problems.add(
            where,
            "label",
            f"must be a class name, a list of rectangles or {{choices: [...]}}, not {_kind(value)}",
        )
    return out


def _ls_results(
    result: Iterable[Any], where: str, field_name: str, key: str | None, image: str | None, problems: _Problems
) -> list[LabelEntry]:
    out = []
    for j, r in enumerate(result):
        f = f"{field_name}[{j}]"
        if not isinstance(r, Mapping):
            problems.add(where, f, f"a result region must be an object, not {_kind(r)}")
            continue
        value = r.get("value")
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            problems.add(where, f"{f}.value", f"must be an object, not {_kind(value)}")
            continue
        kind = r.get("type")
        if kind == "choices" or "choices" in value:
            choices = value.get("choices")
            if choices is None or choices == []:
                continue  # nothing chosen
            if not isinstance(choices, list):
                problems.add(where, f"{f}.value.choices", f"must be a list of class names, not {_kind(choices)}")
                continue
            label = _label(choices[0], where, f"{f}.value.choices[0]", problems)
            if label is not None:
                out.append(LabelEntry(where, label, id=key, image_key=key, image=image))
        elif kind in ("rectanglelabels", "rectangle") or "rectanglelabels" in value:
            entry = _ls_rectangle(
                value, r.get("original_width"), r.get("original_height"), r.get("id"), where, f, key, image, problems
            )
            if entry is not None:
                out.append(entry)
    return out


def _ls_rectangle(
    value: Mapping[str, Any],
    ow: Any,
    oh: Any,
    region_id: Any,
    where: str,
    f: str,
    key: str | None,
    image: str | None,
    problems: _Problems,
) -> LabelEntry | None:
    """One Label Studio rectangle (percent of the image) -> an entry with a box in pixels."""
    labels_field = "labels" if "labels" in value and "rectanglelabels" not in value else "rectanglelabels"
    labels = value.get(labels_field)
    label = None
    if not isinstance(labels, list) or not labels:
        problems.add(where, f"{f}.value.{labels_field}", "a rectangle needs its class: a list holding one label")
    else:
        label = _label(labels[0], where, f"{f}.value.{labels_field}[0]", problems)
    width = height = None
    if ow is None or oh is None or ow == 0 or oh == 0:
        problems.add(
            where,
            f"{f}.original_width",
            "a rectangle has no original_width/original_height, so its percent box cannot be turned into "
            "pixels (export from Label Studio as JSON, not JSON-MIN)",
        )
    else:
        width = _number(ow, where, f"{f}.original_width", problems)
        height = _number(oh, where, f"{f}.original_height", problems)
        if width is not None and height is not None and (width <= 0 or height <= 0):
            problems.add(where, f"{f}.original_width", f"the image size must be positive, got {width:g} x {height:g}")
            width = None
    names = [f"{f}.value.{c}" for c in ("x", "y", "width", "height")]
    box = _box([value.get(c) for c in ("x", "y", "width", "height")], names, where, problems)
    rid = _sample_id(region_id, where, f"{f}.id", problems)
    if label is None or width is None or height is None or box is None:
        return None
    pixels = percent_to_xywh(box, width, height)
    if not _finite_box(pixels, where, f"{f}.value", problems):
        return None
    return LabelEntry(where, label, id=rid, image_key=key, image=image, bbox=pixels)


def _coco_id(value: Any, where: str, field_name: str, problems: _Problems) -> int | str | None:
    """A COCO id (an integer; a non-empty string is accepted too)."""
    if value is None:
        problems.add(where, field_name, "missing: COCO items refer to each other by id")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.strip()):
        problems.add(where, field_name, f"must be an integer id, not {_kind(value)} ({_short(value)})")
        return None
    if isinstance(value, int) and abs(value) > MAX_INT_ID:
        problems.add(where, field_name, f"the id {_short(value)} is too large")
        return None
    if isinstance(value, str):
        why = _text_problem(value, "id", MAX_ID_CHARS)
        if why is not None:
            problems.add(where, field_name, why)
            return None
        return int(value) if value.isdigit() and len(value) < 19 else value
    return value


def _coco_list(data: Mapping[str, Any], key: str, name: str, *, required: bool) -> list[Any]:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise LabelImportError(f"{name}: COCO '{key}' must be a list of objects, not {_kind(value)}")
    return value


_CocoImage = tuple[str, str | None, str | None]  # where, edgeminer_id, image path
_CocoAnn = tuple[str, str, str | None, tuple[float, float, float, float] | None]  # where, label, row id, box


def read_coco(
    data: Mapping[str, Any], report: LabelImportReport, task: str, problems: _Problems | None = None
) -> list[LabelEntry]:
    """Read a COCO labels file.

    Parameters
    ----------
    data
        The parsed JSON object (images, annotations, categories).
    report
        Counts skipped images, conflicts and unmatched annotations.
    task
        The dataset's task: ``classification`` (one category per image) or ``detection`` (boxes).
    problems
        Collects per-item problems (default: a new collector for "the labels file").

    Returns
    -------
    list of LabelEntry
        One entry per image (classification) or per box (detection).

    Raises
    ------
    LabelImportError
        ``data`` is not a COCO object, or its images / annotations / categories are not lists.
    """
    problems = problems or _Problems("the labels file")
    name = problems.name
    if not isinstance(data, Mapping):
        raise LabelImportError(f"{name}: a COCO labels file is a JSON object with images, annotations, categories")
    images_raw = _coco_list(data, "images", name, required=True)
    anns_raw = _coco_list(data, "annotations", name, required=True)
    cats_raw = _coco_list(data, "categories", name, required=False)
    cats = _coco_categories(cats_raw, problems)
    images = _coco_images(images_raw, problems)
    by_image = _coco_annotations(anns_raw, cats, images, task, report, problems)
    return _coco_entries(images, by_image, task, report)


def _coco_categories(cats_raw: list[Any], problems: _Problems) -> dict[int | str, str]:
    """Category id -> class name (a bad or duplicate category is a problem)."""
    cats: dict[int | str, str] = {}
    cat_where: dict[int | str, str] = {}
    for n, cat in enumerate(cats_raw):
        where = _where_item(n, cat, "category")
        if not isinstance(cat, Mapping):
            problems.add(where, None, f"a category must be an object, not {_kind(cat)}")
            continue
        cid = _coco_id(cat.get("id"), where, "id", problems)
        cname = _label(cat.get("name"), where, "name", problems)
        if cid is None or cname is None:
            continue
        if cid in cats:
            problems.add(where, "id", f"duplicate category id {cid!r} (also {cat_where[cid]})")
            continue
        cats[cid] = cname
        cat_where[cid] = where
    return cats


def _coco_images(images_raw: list[Any], problems: _Problems) -> dict[int | str, _CocoImage]:
    """Image id -> (where, edgeminer_id, image path) (a bad or duplicate image is a problem)."""
    images: dict[int | str, _CocoImage] = {}
    for n, img in enumerate(images_raw):
        where = _where_item(n, img, "image")
        if not isinstance(img, Mapping):
            problems.add(where, None, f"an image must be an object, not {_kind(img)}")
            continue
        iid = _coco_id(img.get("id"), where, "id", problems)
        key = _sample_id(img.get("edgeminer_id"), where, "edgeminer_id", problems)
        url = img.get("coco_url")
        path = _image_path(url if url else img.get("file_name"), where, "coco_url" if url else "file_name", problems)
        if iid is None:
            continue
        if iid in images:
            problems.add(where, "id", f"duplicate image id {iid!r} (also {images[iid][0]})")
            continue
        images[iid] = (where, key, path)
    return images


def _coco_annotations(
    anns_raw: list[Any],
    cats: Mapping[int | str, str],
    images: Mapping[int | str, _CocoImage],
    task: str,
    report: LabelImportReport,
    problems: _Problems,
) -> dict[int | str, list[_CocoAnn]]:
    """The file's usable annotations grouped by image id (one on an unknown image is reported unmatched)."""
    by_image: dict[int | str, list[_CocoAnn]] = defaultdict(list)
    ann_ids: dict[int | str, str] = {}
    for n, ann in enumerate(anns_raw):
        where = _where_item(n, ann, "annotation")
        if not isinstance(ann, Mapping):
            problems.add(where, None, f"an annotation must be an object, not {_kind(ann)} ({_short(ann)})")
            continue
        if ann.get("id") is not None:
            aid = _coco_id(ann.get("id"), where, "id", problems)
            if aid is not None and aid in ann_ids:
                problems.add(where, "id", f"duplicate annotation id {aid!r} (also {ann_ids[aid]})")
                continue
            if aid is not None:
                ann_ids[aid] = where
        image_id = _coco_id(ann.get("image_id"), where, "image_id", problems)
        cat_id = _coco_id(ann.get("category_id"), where, "category_id", problems)
        row_id = _sample_id(ann.get("edgeminer_id"), where, "edgeminer_id", problems)
        box = None
        if task == "detection":
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                problems.add(where, "bbox", f"a detection label needs a bbox [x, y, w, h], not {_short(bbox)}")
                continue
            box = _box(bbox, [f"bbox[{i}]" for i in range(4)], where, problems)
        if image_id is None or cat_id is None:
            continue
        if cat_id not in cats:
            known = ", ".join(str(c) for c in list(cats)[:20]) or "none"
            problems.add(where, "category_id", f"{cat_id!r} is not one of the file's categories (ids: {known})")
            continue
        if task == "detection" and box is None:
            continue
        if image_id not in images:
            report.add_unmatched(LabelEntry(where, cats[cat_id]), f"image_id {image_id!r} is not in the file's images")
            continue
        by_image[image_id].append((where, cats[cat_id], row_id, box))
    return by_image


def _coco_entries(
    images: Mapping[int | str, _CocoImage],
    by_image: Mapping[int | str, list[_CocoAnn]],
    task: str,
    report: LabelImportReport,
) -> list[LabelEntry]:
    """The entries, image by image: one per image (classification; several categories conflict) or per box."""
    out = []
    for image_id, (where, key, path) in images.items():
        anns = by_image.get(image_id, [])
        if not anns:
            report.skipped_tasks += 1
            continue
        if task == "classification":
            names = {a[1] for a in anns}
            if len(names) > 1:
                report.conflicts += 1
                report.add_unmatched(
                    LabelEntry(where, None, id=key, image=path),
                    f"{len(names)} different categories for one image of a classification dataset",
                )
                continue
            out.append(LabelEntry(where, names.pop(), id=key, image_key=key, image=path))
        else:
            for ann_where, label, row_id, box in anns:
                out.append(LabelEntry(ann_where, label, id=row_id, image_key=key, image=path, bbox=box))
    return out


CSV_BOX_COLUMNS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


@dataclass
class _CsvColumns:
    """The header names of a labels CSV's columns (None: absent)."""

    id: str | None
    uri: str | None
    label: str
    box: list[str | None]
    split: str | None


def read_csv(text: str, report: LabelImportReport, problems: _Problems | None = None) -> list[LabelEntry]:
    """Read a labels CSV (``label`` plus ``id`` and/or ``uri``; optional ``split`` and box columns).

    Parameters
    ----------
    text
        The CSV text.
    report
        Collects rows that cannot be matched (empty label, neither id nor uri).
    problems
        Collects per-line problems (default: a new collector for "the labels file").

    Returns
    -------
    list of LabelEntry
        One entry per usable row.

    Raises
    ------
    LabelImportError
        The CSV is unreadable, lacks the needed columns, or has no rows.
    """
    problems = problems or _Problems("the labels file")
    name = problems.name
    reader = csv.DictReader(io.StringIO(text, newline=""))
    cols = _csv_columns(reader, name)
    out = []
    rows = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise LabelImportError(
                f"{name}: line {reader.line_num}: the CSV cannot be read ({exc}); a labels CSV holds short "
                "ids, paths and labels, one row per line: check the file is the CSV you meant"
            ) from None
        rows += 1
        entry = _csv_entry(row, f"line {reader.line_num}", cols, report, problems)
        if entry is not None:
            out.append(entry)
    if not rows:
        raise LabelImportError(f"{name}: the CSV has a header but no rows: nothing to import")
    return out


def _csv_columns(reader: csv.DictReader[str], name: str) -> _CsvColumns:
    """Find the CSV's columns (case-insensitive); refuse a header without label and id / uri."""
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise LabelImportError(f"{name}: line {reader.line_num}: not a readable CSV header ({exc})") from None
    cols = {c.strip().lower(): c for c in (fieldnames or []) if isinstance(c, str)}
    id_col = cols.get("id")
    uri_col = cols.get("uri") or cols.get("image") or cols.get("file_name") or cols.get("path")
    label_col = cols.get("label")
    if label_col is None or (id_col is None and uri_col is None):
        shown = ", ".join(c[:40] for c in list(cols)[:20]) or "none"
        raise LabelImportError(f"{name}: the CSV needs a 'label' column and an 'id' or 'uri' column; it has: {shown}")
    box_cols = [cols.get(c) for c in CSV_BOX_COLUMNS]
    return _CsvColumns(id_col, uri_col, label_col, box_cols, cols.get("split"))


def _csv_entry(
    row: dict[str, Any], where: str, cols: _CsvColumns, report: LabelImportReport, problems: _Problems
) -> LabelEntry | None:
    """One CSV row's entry (None: reported unmatched, or its label is bad)."""

    def cell(col: str | None) -> str:
        value = row.get(col) if col else None
        return value.strip() if isinstance(value, str) else ""

    raw_label, sid, uri, split = cell(cols.label), cell(cols.id), cell(cols.uri), cell(cols.split)
    label = _label(raw_label, where, "label", problems) if raw_label else None
    sid_ok = _sample_id(sid, where, "id", problems) if sid else None
    uri_ok = _image_path(uri, where, cols.uri or "uri", problems) if uri else None
    split_ok = None
    if split:
        why = _text_problem(split, "split name", MAX_SPLIT_CHARS)
        if why is not None:
            problems.add(where, "split", why)
        else:
            split_ok = split
    box = None
    given = [cell(c) for c in cols.box if c]
    if any(given):
        if len(given) < 4 or not all(given):
            problems.add(where, "bbox_x/bbox_y/bbox_w/bbox_h", "give all four box columns, or none")
        else:
            box = _box([cell(c) for c in cols.box], list(CSV_BOX_COLUMNS), where, problems)
    entry = LabelEntry(where, label, id=sid_ok, image=uri_ok, split=split_ok, bbox=box)
    if not raw_label:
        report.add_unmatched(entry, "empty label")
        return None
    if not sid and not uri:
        report.add_unmatched(entry, "neither id nor uri given")
        return None
    return entry if label is not None else None


def parse_labels(
    info: DatasetInfo,
    source: str | os.PathLike[str] | bytes | Any,
    *,
    format: str | None = None,
    name: str | None = None,
    split: str = "train",
) -> ParsedLabels:
    """Read and check a labels file for ``info``'s dataset (nothing is written). Raises
    :class:`LabelImportError` naming every problem found (the item / line and the field)."""
    check_split(split)
    if name is None and isinstance(source, (str, os.PathLike)) and not isinstance(source, bytes):
        name = Path(source).name
    name = name or "the labels file"
    fmt, data = load(source, format=format, name=name)
    report = LabelImportReport(dataset=info.name, format=fmt, split=split)
    problems = _Problems(name)
    if fmt == "csv":
        entries = read_csv(data, report, problems)
    elif fmt == "coco":
        if not isinstance(data, Mapping):
            raise LabelImportError(
                f"{name}: a COCO labels file is a JSON object with images, annotations, categories, not {_kind(data)}"
            )
        entries = read_coco(data, report, info.task, problems)
    else:
        entries = read_label_studio(data, report, problems)
    problems.raise_if_any()
    return ParsedLabels(name=name, format=fmt, entries=entries, report=report)


def check_classes(parsed: ParsedLabels, info: DatasetInfo, *, add_classes: bool = False) -> list[str]:
    """The file's labels that are not classes of the dataset, in file order. Without ``add_classes``
    any such label refuses the import (:class:`UnknownLabels`, naming where each one occurs and listing
    the known classes); with it they are returned, to be appended to the class list."""
    known = set(info.classes)
    unknown = {label: where for label, where in parsed.labels().items() if label not in known}
    if not unknown or add_classes:
        return list(unknown)
    listed = []
    parts = []
    for label, where in list(unknown.items())[:MAX_UNKNOWN_LISTED]:
        close = difflib.get_close_matches(label, info.classes, n=1, cutoff=0.75)
        item: dict[str, Any] = {"label": label, "count": len(where), "sources": where[:MAX_SOURCES_LISTED]}
        if close:
            item["did_you_mean"] = close[0]
        listed.append(item)
        at = ", ".join(where[:MAX_SOURCES_LISTED]) + (
            f" and {len(where) - MAX_SOURCES_LISTED} more" if len(where) > MAX_SOURCES_LISTED else ""
        )
        parts.append(f"{label!r} ({at}" + (f"; did you mean {close[0]!r}?" if close else "") + ")")
    more = f" and {len(unknown) - MAX_UNKNOWN_LISTED} more" if len(unknown) > MAX_UNKNOWN_LISTED else ""
    if info.classes:
        shown = ", ".join(info.classes[:50]) + (f" ... ({len(info.classes)} in all)" if len(info.classes) > 50 else "")
        known_text = f"Known classes: {shown}"
    else:
        known_text = "The dataset has no classes yet"
    noun = "label is not a class" if len(unknown) == 1 else "labels are not classes"
    raise UnknownLabels(
        f"{parsed.name}: {len(unknown)} {noun} of dataset {info.name!r}: {'; '.join(parts)}{more}. {known_text}. "
        "Nothing was imported: fix the labels, or pass add_classes=true (CLI: --add-classes) to add them as "
        "new classes",
        file=parsed.name,
        unknown_labels=listed,
        unknown_count=len(unknown),
        known_classes=list(info.classes[:1000]),
    )


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
    add_classes: bool = False,
    name: str | None = None,
    parsed: ParsedLabels | None = None,
) -> LabelImportReport:
    """Read labels and write them into ``dataset`` (see the module docstring). The file is checked
    whole first (``parsed``: already done by the caller); a problem or, without ``add_classes``, a
    label outside the dataset's classes refuses the import with nothing written.

    Parameters
    ----------
    store, dataset, source, format, name, parsed
        Where to; the labels file (path, bytes or parsed JSON), its format (default: detected), what
        errors call it, or the file already parsed by :func:`parse_labels`.
    split, iou, add_classes
        The split labeled rows join; the least box overlap matching a detection label, in (0, 1];
        append unknown labels to the classes instead of refusing them.

    Returns
    -------
    LabelImportReport
        What was matched, changed, left unmatched, and the table versions before and after.

    Raises
    ------
    LabelImportError
        A bad argument or a problem in the file (:class:`UnknownLabels`: labels outside the classes).
    """
    info = store.get_dataset(dataset)
    check_split(split)
    if not (isinstance(iou, (int, float)) and 0.0 < iou <= 1.0):
        raise LabelImportError(f"iou must be in (0, 1], not {iou}")
    if parsed is None:
        parsed = parse_labels(info, source, format=format, name=name, split=split)
    check_classes(parsed, info, add_classes=add_classes)
    entries = parsed.entries
    report = _start_report(store, dataset, parsed, split)
    updates: dict[str, dict[str, Any]] = {}
    if info.task == "detection":
        _match_detection(store, dataset, entries, report, updates, iou)
    else:
        _match_classification(store, dataset, entries, report, updates)
    _add_new_classes(store, dataset, info, updates, report)
    rows = _label_rows(store, dataset, info, updates, split, report)
    report.matched = sum(1 for u in updates.values() if not u.get("fp"))
    report.false_positives = sum(1 for u in updates.values() if u.get("fp"))
    for start in range(0, len(rows), WRITE_BATCH):
        store.update_columns(dataset, pa.Table.from_pylist(rows[start : start + WRITE_BATCH]))
    store.compact(dataset)
    report.version_after = store.version(dataset)
    report.labeled_after = store.count(dataset, "labeled = true")
    return report


def _start_report(store: Store, dataset: str, parsed: ParsedLabels, split: str) -> LabelImportReport:
    """The import's report: the parse's, with the dataset's state before the import."""
    report = copy.deepcopy(parsed.report)
    report.dataset, report.split = dataset, split
    report.entries = len(parsed.entries) + report.unmatched_count
    report.version_before = store.version(dataset)
    report.labeled_before = store.count(dataset, "labeled = true")
    return report


def _add_new_classes(
    store: Store, dataset: str, info: DatasetInfo, updates: Mapping[str, dict[str, Any]], report: LabelImportReport
) -> None:
    """Append the labels that are not classes yet to the dataset's classes."""
    known = set(info.classes)
    new_classes = list(dict.fromkeys(u["label"] for u in updates.values() if u["label"] and u["label"] not in known))
    if new_classes:
        # appended at the end: the probabilities stored so far stay aligned with the first classes
        store.update_dataset(dataset, classes=[*info.classes, *new_classes])
        report.new_classes = new_classes


def _label_rows(
    store: Store,
    dataset: str,
    info: DatasetInfo,
    updates: Mapping[str, dict[str, Any]],
    split: str,
    report: LabelImportReport,
) -> list[dict[str, Any]]:
    """The column updates for the matched rows that exist (counting those that change)."""
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
    return rows


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
    groups = _detection_groups(store, dataset, entries, report, updates)
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
        _match_image(group, rows, report, updates, iou)


def _detection_groups(
    store: Store,
    dataset: str,
    entries: Sequence[LabelEntry],
    report: LabelImportReport,
    updates: dict[str, dict[str, Any]],
) -> dict[str, list[LabelEntry]]:
    """Label the rows named by id without their image; group the other entries by image."""
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
    return groups


def _match_image(
    group: Sequence[LabelEntry],
    rows: Sequence[dict[str, Any]],
    report: LabelImportReport,
    updates: dict[str, dict[str, Any]],
    iou: float,
) -> None:
    """Match one image's labels to its object rows: by id first, then by greatest box overlap; the
    rows left over are marked false positives."""
    first = group[0]
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
            report.add_unmatched(e, f"no object row overlaps this box with IoU >= {iou}; new objects need an ingest")
    for r in rows:  # predicted objects the labelers did not keep
        if r["id"] not in used:
            updates[r["id"]] = {"label": None, "split": first.split, "fp": True}
