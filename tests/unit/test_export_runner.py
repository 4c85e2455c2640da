"""Export jobs as a library: selections, idempotent ids, time travel, media modes, per-row media
failures, exported tags, and resuming from the chunks a killed run left on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from exportdata import build_classification

from edgeminer.indexer.store import Store
from edgeminer.service.errors import IssueNotFound
from edgeminer.service.export.common import TARGETS, ExportError, ExportRequest
from edgeminer.service.export.runner import TARGET_MODULES, plan_export, run_export, target_module


@pytest.fixture
def cls(store: Store, tmp_path: Path) -> Any:
    return build_classification(store, tmp_path / "media", n=12)


def _plan(store: Store, tmp: Path, **kw: Any) -> tuple[dict[str, Any], bool]:
    kw.setdefault("target", "csv")
    return plan_export(store, "cls", ExportRequest(**kw), data_dir=str(tmp / "db"))


def _exported(store: Store, ids: list[str]) -> dict[str, list[str]]:
    table = store.get_samples("cls", ids, columns=["id", "exported"])
    return dict(zip(table["id"].to_pylist(), table["exported"].to_pylist(), strict=True))


def test_every_target_has_a_module() -> None:
    """The explicit target -> module table covers exactly the targets a request may name."""
    assert set(TARGET_MODULES) == set(TARGETS)
    for target in TARGETS:
        assert callable(target_module(target).render)
    with pytest.raises(ExportError, match="unknown export target 'nope'"):
        target_module("nope")


def test_same_request_same_export_force_makes_new(store: Store, tmp_path: Path, cls: Any) -> None:
    a, created_a = _plan(store, tmp_path, ids=cls.ids[:3])
    b, created_b = _plan(store, tmp_path, ids=cls.ids[:3], name="another name, same export")
    assert created_a and not created_b and a["id"] == b["id"]
    c, _ = _plan(store, tmp_path, ids=cls.ids[:4])
    assert c["id"] != a["id"]
    d, created_d = plan_export(
        store, "cls", ExportRequest(target="csv", ids=cls.ids[:3]), data_dir=str(tmp_path / "db"), force=True
    )
    assert created_d and d["id"] != a["id"]
    assert a["ids"] == cls.ids[:3] and a["version_read"] == store.version("cls")


def test_recreated_dataset_never_reuses_an_old_export(store: Store, tmp_path: Path) -> None:
    """A dataset deleted and built again under the same name: the same request is a new export, so
    the old dataset's chunk files on disk are never taken for a half-done run of the new one."""
    first = build_classification(store, tmp_path / "media", n=12)
    old, _ = _plan(store, tmp_path, ids=first.ids[:3])
    store.drop_dataset("cls")
    again = build_classification(store, tmp_path / "media2", n=12)
    assert again.ids[:3] == first.ids[:3]
    new, created = _plan(store, tmp_path, ids=again.ids[:3])
    assert created and new["id"] != old["id"]


def test_selections_issue_saved_result_and_filter(store: Store, tmp_path: Path, cls: Any) -> None:
    store.put_doc("cls", "issue", "iss1", {"name": "x", "sample_ids": [cls.ids[5], cls.ids[2], cls.ids[5]]})
    doc, _ = _plan(store, tmp_path, issue="iss1")
    assert doc["ids"] == [cls.ids[5], cls.ids[2]]
    store.put_doc("cls", "selection", "sel1", {"kind": "select", "ids": cls.ids[7:9]})
    doc, _ = _plan(store, tmp_path, selection="sel1")
    assert doc["ids"] == cls.ids[7:9]
    doc, _ = _plan(store, tmp_path, filter=[{"field": "slice", "op": "eq", "value": "rotated"}])
    assert sorted(doc["ids"]) == sorted(i for i, r in cls.rows.items() if r["meta_slice"] == "rotated")
    with pytest.raises(IssueNotFound):
        _plan(store, tmp_path, issue="nope")


def test_bad_requests_name_the_problem(store: Store, tmp_path: Path, cls: Any) -> None:
    with pytest.raises(ExportError, match=r"2 of 3 selected ids are not in dataset 'cls': 'ghost-1', 'ghost-2'"):
        _plan(store, tmp_path, ids=[cls.ids[0], "ghost-1", "ghost-2"])
    with pytest.raises(ExportError, match="holds no rows"):
        _plan(store, tmp_path, filter=[{"field": "slice", "value": "no-such-slice"}])
    with pytest.raises(ExportError, match="exactly one selection"):
        _plan(store, tmp_path, ids=cls.ids[:1], issue="x")
    with pytest.raises(ExportError, match="unknown export target 'excel'"):
        _plan(store, tmp_path, target="excel", ids=cls.ids[:1])
    with pytest.raises(ExportError, match="needs a media_base_url"):
        _plan(store, tmp_path, ids=cls.ids[:1], media="url")
    with pytest.raises(ExportError, match="not an absolute URL"):
        _plan(store, tmp_path, ids=cls.ids[:1], media="url", media_base_url="cdn/images")


def test_reads_the_version_it_planned(store: Store, tmp_path: Path, cls: Any) -> None:
    doc, _ = _plan(store, tmp_path, ids=cls.ids[:2])
    store.update_columns("cls", pa.table({"id": [cls.ids[0]], "pred_label": ["changed-later"]}))
    run_export(store, "cls", doc["id"])
    text = (Path(doc["path"]) / "samples.csv").read_text()
    assert "changed-later" not in text and cls.rows[cls.ids[0]]["pred_label"] in text


def test_media_copy_failure_is_per_row(store: Store, tmp_path: Path, cls: Any) -> None:
    gone = cls.ids[3]
    Path(cls.rows[gone]["uri"]).unlink()
    doc, _ = _plan(store, tmp_path, target="label_studio", ids=cls.ids, media="copy", chunk_size=5)
    summary = run_export(store, "cls", doc["id"])
    assert summary["rows_exported"] == len(cls.ids) - 1 and summary["media_errors"] == 1
    saved = store.get_doc("cls", "export", doc["id"])
    (err,) = saved["errors"]
    assert err["id"] == gone and "no longer exists" in err["message"]
    tasks = json.loads((Path(doc["path"]) / "tasks.json").read_text())
    assert [t["data"]["edgeminer_id"] for t in tasks] == [i for i in cls.ids if i != gone]
    copied = sorted(p.name for p in (Path(doc["path"]) / "images").iterdir())
    assert len(copied) == len(cls.ids) - 1
    tags = _exported(store, cls.ids)
    assert tags[gone] == [] and all(tags[i] == [doc["id"]] for i in cls.ids if i != gone)


class Killed(Exception):
    pass


def test_resume_after_a_kill_neither_duplicates_nor_loses(store: Store, tmp_path: Path, cls: Any) -> None:
    doc, _ = _plan(store, tmp_path, target="coco", ids=cls.ids, media="copy", chunk_size=5)
    calls = {"n": 0}

    def die_at_third_chunk() -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed()

    with pytest.raises(Killed):
        run_export(store, "cls", doc["id"], check_cancelled=die_at_third_chunk)
    parts = sorted(p.name for p in (Path(doc["path"]) / "parts").iterdir())
    assert parts == ["00000.jsonl", "00001.jsonl"]
    assert store.get_doc("cls", "export", doc["id"])["chunks_done"] == 2
    assert _exported(store, cls.ids) == {i: [] for i in cls.ids}  # tags only when the export is complete
    summary = run_export(store, "cls", doc["id"])
    saved = store.get_doc("cls", "export", doc["id"])
    assert summary["status"] == "done" and saved["chunks_resumed"] == 2 and saved["rows_exported"] == len(cls.ids)
    coco = json.loads((Path(doc["path"]) / "annotations/instances_default.json").read_text())
    assert sorted(i["edgeminer_id"] for i in coco["images"]) == sorted(cls.ids)
    assert len({i["file_name"] for i in coco["images"]}) == len(cls.ids)
    assert not (Path(doc["path"]) / "parts").exists()
    assert all(v == [doc["id"]] for v in _exported(store, cls.ids).values())
    # a third run is a no-op: same files, tags once
    run_export(store, "cls", doc["id"])
    assert all(v == [doc["id"]] for v in _exported(store, cls.ids).values())


def test_url_and_relative_media(store: Store, tmp_path: Path, cls: Any) -> None:
    doc, _ = _plan(store, tmp_path, target="csv", ids=cls.ids[:2], media="url", media_base_url="https://cdn.x/d/")
    run_export(store, "cls", doc["id"])
    text = (Path(doc["path"]) / "samples.csv").read_text()
    assert "https://cdn.x/d/b/pic00.png" in text and "https://cdn.x/d/a/pic00.png" in text
    doc, _ = _plan(
        store, tmp_path, target="csv", ids=cls.ids[:1], media="url", media_base_url="http://h/api/{dataset}/m/{id}"
    )
    run_export(store, "cls", doc["id"])
    assert f"http://h/api/cls/m/{cls.ids[0]}" in (Path(doc["path"]) / "samples.csv").read_text()
    # a file under none of the roots cannot get a URL: reported for that row, the rest exports
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(Path(cls.rows[cls.ids[1]]["uri"]).read_bytes())
    store.update_columns("cls", pa.table({"id": [cls.ids[1]], "uri": [str(outside)]}))
    doc, _ = _plan(store, tmp_path, target="csv", ids=cls.ids[:3], media="url", media_base_url="https://cdn.x/d")
    summary = run_export(store, "cls", doc["id"])
    assert summary["rows_exported"] == 2 and summary["media_errors"] == 1
    assert "under none of the media roots" in store.get_doc("cls", "export", doc["id"])["errors"][0]["message"]
    doc, _ = _plan(store, tmp_path, target="csv", ids=cls.ids[:3], media="relative", media_root=str(tmp_path))
    run_export(store, "cls", doc["id"])
    text = (Path(doc["path"]) / "samples.csv").read_text()
    assert ",media/b/pic00.png," in text and ",elsewhere.png," in text


def test_copy_only_from_media_roots(store: Store, tmp_path: Path, cls: Any) -> None:
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for export")
    link = cls.root / "a" / "link.png"
    link.symlink_to(secret)
    a, b, c = cls.ids[:3]
    store.update_columns(
        "cls",
        pa.table({"id": [a, b], "uri": [str(secret), str(cls.root / "a" / ".." / ".." / "private" / "secret.png")]}),
    )
    store.update_columns("cls", pa.table({"id": [c], "uri": [str(link)]}))
    doc, _ = _plan(store, tmp_path, target="csv", ids=[a, b, c, cls.ids[3]], media="copy")
    summary = run_export(store, "cls", doc["id"])
    assert summary["rows_exported"] == 1 and summary["media_errors"] == 3
    errors = {e["id"]: e["message"] for e in store.get_doc("cls", "export", doc["id"])["errors"]}
    assert "outside the media roots" in errors[a] and "contains '..'" in errors[b]
    assert "symlink" in errors[c]
    copied = [p.read_bytes() for p in (Path(doc["path"]) / "images").iterdir()]
    assert b"not for export" not in copied and len(copied) == 1
    # the server's own media roots (settings.media_roots) allow more
    doc, _ = plan_export(
        store, "cls", ExportRequest(target="csv", ids=[a], media="copy"), data_dir=str(tmp_path / "db"), force=True
    )
    assert run_export(store, "cls", doc["id"], media_roots=[str(secret.parent)])["rows_exported"] == 1
