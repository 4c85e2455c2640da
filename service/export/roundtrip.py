"""The label round trip on the demo: mine unlabeled rows near the model's failures, export them to
Label Studio and COCO, answer with the true labels (the demo keeps them in ``pool_truth.csv``: the
"labelers' answer"), import the answers back, and report how the labeled count and the per-slice
labeled share changed.

The answering functions build exactly what the tools hand back: a Label Studio JSON export (tasks
with ``annotations``) and a COCO file whose annotations are the labelers' boxes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeminer.indexer.store import Store
from edgeminer.service.export.common import ExportError, ExportRequest
from edgeminer.service.export.labels import import_labels
from edgeminer.service.export.runner import plan_export, run_export

SLICE_FIELD = "slice"


def read_truth(path: str | Path) -> dict[str, str]:
    """id -> label from a CSV with ``id`` and ``label`` columns."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "id" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ExportError(f"{path}: the truth CSV needs 'id' and 'label' columns")
        return {row["id"]: row["label"] for row in reader if row.get("id") and row.get("label")}


def answer_label_studio(tasks: list[dict[str, Any]], truth: Mapping[str, str]) -> list[dict[str, Any]]:
    """The Label Studio JSON export after labelers chose the true class of every task they know
    (classification tasks; the others stay unannotated)."""
    out = []
    for n, task in enumerate(tasks, start=1):
        task = json.loads(json.dumps(task))
        task["id"] = n
        label = truth.get(str(task["data"].get("edgeminer_id")))
        task["annotations"] = []
        if label is not None:
            task["annotations"].append(
                {
                    "id": n,
                    "completed_by": 1,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "result": [
                        {
                            "id": f"r{n}",
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "origin": "prediction-changed",
                            "value": {"choices": [label]},
                        }
                    ],
                }
            )
        out.append(task)
    return out


def answer_coco(doc: Mapping[str, Any], truth: Mapping[str, str]) -> dict[str, Any]:
    """The COCO file after labelers drew a whole-image box of the true class on every image they know."""
    out = json.loads(json.dumps(doc))
    cat_id = {c["name"]: c["id"] for c in out["categories"]}
    annotations: list[dict[str, Any]] = []
    for img in out["images"]:
        label = truth.get(str(img.get("edgeminer_id")))
        if label is None:
            continue
        if label not in cat_id:
            cat_id[label] = max(cat_id.values(), default=0) + 1
            out["categories"].append({"id": cat_id[label], "name": label, "supercategory": ""})
        w, h = img.get("width", 0), img.get("height", 0)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": img["id"],
                "category_id": cat_id[label],
                "bbox": [0, 0, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    out["annotations"] = annotations
    return out


def slice_shares(store: Store, dataset: str, field_name: str = SLICE_FIELD) -> dict[str, tuple[int, int]]:
    """slice value -> (labeled rows, rows)."""
    col = f"meta_{field_name}"
    if col not in store.schema(dataset).names:
        return {}
    table = store.query(dataset, columns=[col, "labeled"])
    out: dict[str, list[int]] = {}
    for value, labeled in zip(table[col].to_pylist(), table["labeled"].to_pylist(), strict=True):
        c = out.setdefault(str(value), [0, 0])
        c[0] += int(bool(labeled))
        c[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


@dataclass
class RoundTrip:
    dataset: str
    budget: int
    mined: int = 0
    exports: dict[str, str] = field(default_factory=dict)
    imports: dict[str, dict[str, Any]] = field(default_factory=dict)
    labeled_before: int = 0
    labeled_after: int = 0
    slices_before: dict[str, tuple[int, int]] = field(default_factory=dict)
    slices_after: dict[str, tuple[int, int]] = field(default_factory=dict)
    mined_per_slice: dict[str, int] = field(default_factory=dict)
    version_before: int = 0

    def describe(self) -> str:
        lines = [
            f"label round trip: mined {self.mined} unlabeled rows near the model's failures (budget "
            f"{self.budget}), exported to " + ", ".join(f"{t} ({e})" for t, e in self.exports.items()),
            "imported the labelers' answers: "
            + "; ".join(
                f"{t}: {r['matched']} labeled, {r['unmatched_count']} unmatched" for t, r in self.imports.items()
            ),
            f"labeled rows: {self.labeled_before} -> {self.labeled_after} "
            f"(previous labels at table version {self.version_before})",
            f"{'slice':<10}{'mined':>7}{'labeled before':>16}{'labeled after':>15}",
        ]
        for name, (lb, total) in self.slices_before.items():
            la, _ = self.slices_after.get(name, (lb, total))
            lines.append(f"{name:<10}{self.mined_per_slice.get(name, 0):>7}{lb / total:>16.1%}{la / total:>15.1%}")
        return "\n".join(lines)


def run_round_trip(
    store: Store,
    dataset: str,
    *,
    data_dir: str,
    truth: Mapping[str, str],
    budget: int = 200,
    split: str = "train",
    seed: int = 0,
) -> RoundTrip:
    """Mine ``budget`` unlabeled rows around the labeled failures, export half to Label Studio and
    half to COCO, answer from ``truth``, import both answers back."""
    from edgeminer.service.mining import Seeds, mine

    rt = RoundTrip(dataset=dataset, budget=budget)
    rt.version_before = store.version(dataset)
    rt.labeled_before = store.count(dataset, "labeled = true")
    rt.slices_before = slice_shares(store, dataset)
    result = mine(store, dataset, Seeds(failures=True), budget=budget, seed=seed)
    ids = [str(r["id"]) for r in result.rows]
    rt.mined = len(ids)
    if not ids:
        rt.labeled_after = rt.labeled_before
        rt.slices_after = rt.slices_before
        return rt
    col = f"meta_{SLICE_FIELD}"
    if col in store.schema(dataset).names:
        for value in store.get_samples(dataset, ids, columns=[col])[col].to_pylist():
            rt.mined_per_slice[str(value)] = rt.mined_per_slice.get(str(value), 0) + 1
    half = (len(ids) + 1) // 2
    for target, part in (("label_studio", ids[:half]), ("coco", ids[half:])):
        if not part:
            continue
        req = ExportRequest(target=target, ids=part, media="relative", name=f"round trip ({target})")
        doc, _ = plan_export(store, dataset, req, data_dir=data_dir)
        run_export(store, dataset, doc["id"])
        rt.exports[target] = doc["id"]
        out = Path(doc["path"])
        if target == "label_studio":
            answered: Any = answer_label_studio(json.loads((out / "tasks.json").read_text()), truth)
        else:
            answered = answer_coco(json.loads((out / "annotations/instances_default.json").read_text()), truth)
        answer_file = out / f"answers-{target}.json"
        answer_file.write_text(json.dumps(answered))
        report = import_labels(store, dataset, answer_file, format=target, split=split)
        rt.imports[target] = report.to_dict()
    rt.labeled_after = store.count(dataset, "labeled = true")
    rt.slices_after = slice_shares(store, dataset)
    return rt
