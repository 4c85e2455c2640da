"""Malformed input through a real server on 127.0.0.1: labels files that are broken in every way we
could think of, a table version that cannot exist, object rows whose box is not a box. Every one is a
422 problem+json that says what is wrong (never a 500), and nothing is written.

Also the class-set policy end to end: an import that adds a class (``add_classes=true``) leaves every
route working: stream with the model's original number of probs, mine, select, confusion stats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from exportdata import build_classification, build_detection
from servers import LiveServer

from edgeminer.indexer.store import Store
from edgeminer.service.api.app import create_app
from edgeminer.service.settings import Settings

BOM = b"\xef\xbb\xbf"
CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("bad-inputs")
    store = Store(base / "db")
    cls = build_classification(store, base / "media" / "cls")
    build_classification(store, base / "media" / "grow", name="grow")
    det = build_detection(store, base / "media" / "det")
    uri = det.rows["photo-0#0"]["uri"]
    bad_boxes = {
        "box-inf": [float("inf"), 0.0, 10.0, 10.0],
        "box-nan": [0.0, float("nan"), 10.0, 10.0],
        "box-neg": [1.0, 1.0, -5.0, 10.0],
        "box-huge": [1e38, 1e38, 3e38, 3e38],
    }
    rows = [
        {**det.rows["photo-0#0"], "id": sid, "bbox": box, "fingerprint": f"fp-{sid}"} for sid, box in bad_boxes.items()
    ]
    store.upsert_samples("det", rows)
    settings = Settings(data_dir=str(base / "db"), media_roots=[str(base / "media")], cache_dir=str(base / "cache"))
    srv = LiveServer(create_app(settings, store=store))
    srv.start()
    try:
        yield f"{srv.url}/api/v1", store, {"cls": cls, "det": det, "uri": uri}
    finally:
        srv.stop()


@pytest.fixture
def api(server: tuple[str, Store, dict[str, Any]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=60) as client:
        yield client


def _problem(resp: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["detail"] and body["type"].startswith("urn:edgeminer:problem:")
    return body


def _pool(server: tuple[str, Store, dict[str, Any]]) -> list[str]:
    cls = server[2]["cls"]
    return [i for i in cls.ids if not cls.rows[i]["labeled"]]


def _task(sid: Any, result: Any = None, **extra: Any) -> dict[str, Any]:
    if result is None:
        result = [{"type": "choices", "value": {"choices": ["cat"]}}]
    return {
        "id": 1,
        "data": {"edgeminer_id": sid, "image": "/data/local-files/?d=x.png"},
        "annotations": [{"result": result}],
        **extra,
    }


def _coco(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "photo0.png", "width": 64, "height": 48, "edgeminer_id": "photo-0"}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [3.5, 4.25, 20.75, 10.5]}],
    }
    doc.update(over)
    return doc


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _coco_box(raw: str) -> bytes:
    """A COCO file whose one box is written as ``raw`` (JSON text Python's json also reads: NaN, Infinity)."""
    doc = _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": "BOX"}])
    return _j(doc).replace(b'"BOX"', raw.encode())


def _rect(region: dict[str, Any] | None = None, **value: Any) -> list[dict[str, Any]]:
    base = {"x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0, "rectanglelabels": ["cat"]}
    rect = {"type": "rectanglelabels", "original_width": 64, "original_height": 48, "value": {**base, **value}}
    return [{**rect, **(region or {})}]


SID = "img-006"  # an unlabeled row of build_classification

#: (case id, dataset, file name, content, form fields, a fragment of the detail)
BAD_FILES: list[tuple[str, str, str, bytes, dict[str, str], str]] = [
    # the ones the issue names
    ("annotations-not-objects", "cls", "ls.json", _j([_task(SID) | {"annotations": [1, "x"]}]), {}, "annotations[0]"),
    (
        "coco-missing-category-id",
        "det",
        "coco.json",
        _j(_coco(annotations=[{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5]}])),
        {},
        "category_id: missing",
    ),
    (
        "list-as-edgeminer-id",
        "cls",
        "ls.json",
        _j([_task(["img-006"])]),
        {},
        "data.edgeminer_id: an id must be a string",
    ),
    (
        "csv-field-over-limit",
        "cls",
        "big.csv",
        b"id,label\n" + SID.encode() + b",cat\n" + b"x" * 140_000 + b",cat\n",
        {},
        "field larger than field limit",
    ),
    # not a labels file at all
    ("not-json", "cls", "x.json", b"{nope", {}, "is not valid JSON"),
    ("json-string", "cls", "x.json", b'"hello"', {}, "not a labels export"),
    ("json-number-as-ls", "cls", "x.json", b"42", {"format": "label_studio"}, "a JSON list of tasks, not a number"),
    ("json-list-as-coco", "cls", "x.json", b"[]", {"format": "coco"}, "a COCO labels file is a JSON object"),
    ("json-object-unknown", "cls", "x.json", b'{"hello": 1}', {}, "cannot tell the format"),
    ("empty-list", "cls", "x.json", b"[]", {}, "holds no tasks"),
    ("empty-file-json", "cls", "x.json", b"", {}, "is empty"),
    ("empty-file-csv", "cls", "x.csv", b"", {}, "is empty"),
    ("bom-only", "cls", "x.json", BOM, {}, "is empty"),
    ("bom-then-garbage", "cls", "x.json", BOM + b"{oops", {}, "is not valid JSON"),
    ("binary-garbage", "cls", "x.bin", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\xfd" * 20, {}, "is not UTF-8 text"),
    ("latin1-csv", "cls", "x.csv", b"id,label\nimg-006,caf\xe9\n", {}, "is not UTF-8 text"),
    ("deep-nesting", "cls", "x.json", b"[" * 100_000 + b"]" * 100_000, {}, "is not JSON this server reads"),
    ("huge-int-literal", "cls", "x.json", b'[{"edgeminer_id": ' + b"9" * 5000 + b', "label": "cat"}]', {}, "not JSON"),
    # Label Studio structure
    ("task-not-object", "cls", "ls.json", _j([1, "two"]), {}, "a task must be an object"),
    ("task-without-data", "cls", "ls.json", _j([{"annotations": [{"result": []}]}]), {}, "needs a 'data' object"),
    ("task-data-not-object", "cls", "ls.json", _j([_task(SID) | {"data": "img.png"}]), {}, "needs a 'data' object"),
    ("task-empty-object", "cls", "ls.json", _j([{}]), {}, "has neither data/annotations"),
    ("annotations-not-list", "cls", "ls.json", _j([_task(SID) | {"annotations": {"result": []}}]), {}, "annotations"),
    ("result-not-list", "cls", "ls.json", _j([_task(SID, result="cat")]), {}, "must be a list of regions"),
    ("region-not-object", "cls", "ls.json", _j([_task(SID, result=[3])]), {}, "must be an object"),
    ("value-not-object", "cls", "ls.json", _j([_task(SID, result=[{"value": [1]}])]), {}, "value: must be an object"),
    ("choices-not-list", "cls", "ls.json", _j([_task(SID, result=[{"value": {"choices": "cat"}}])]), {}, "choices"),
    (
        "choice-not-string",
        "cls",
        "ls.json",
        _j([_task(SID, result=[{"value": {"choices": [{"a": 1}]}}])]),
        {},
        "string",
    ),
    ("json-min-label-number", "cls", "min.json", _j([{"edgeminer_id": SID, "label": 3}]), {}, "must be a class name"),
    ("id-too-large", "cls", "min.json", _j([{"edgeminer_id": 10**30, "label": "cat"}]), {}, "too large"),
    ("id-with-nul", "cls", "min.json", _j([{"edgeminer_id": "img\x00006", "label": "cat"}]), {}, "control characters"),
    # labels
    ("label-nul", "cls", "min.json", _j([{"edgeminer_id": SID, "label": "c\x00at"}]), {}, "control characters"),
    ("label-too-long", "cls", "x.csv", b"id,label\nimg-006," + b"c" * 300 + b"\n", {}, "at most 200"),
    ("label-typo", "cls", "x.csv", b"id,label\nimg-006,china_lft\n", {}, "Known classes: cat, dog, bird"),
    (
        "coco-null-category-name",
        "cls",
        "c.json",
        _j(_coco(categories=[{"id": 1, "name": None}])),
        {},
        "name: a label must be a string, not null",
    ),
    # boxes
    (
        "ls-box-strings",
        "det",
        "ls.json",
        _j([_task("photo-0", result=_rect(x="ten"))]),
        {},
        "value.x: must be a number",
    ),
    ("ls-box-negative-size", "det", "ls.json", _j([_task("photo-0", result=_rect(width=-5))]), {}, "positive width"),
    (
        "ls-box-no-size",
        "det",
        "ls.json",
        _j([_task("photo-0", result=_rect({"original_width": None}))]),
        {},
        "JSON-MIN",
    ),
    (
        "ls-box-no-label",
        "det",
        "ls.json",
        _j([_task("photo-0", result=_rect(rectanglelabels=[]))]),
        {},
        "needs its class",
    ),
    ("ls-box-overflow", "det", "ls.json", _j([_task("photo-0", result=_rect(x=1e308, width=1e308))]), {}, "overflows"),
    (
        "coco-box-negative",
        "det",
        "c.json",
        _j(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, -5, 5]}])),
        {},
        "positive width",
    ),
    (
        "coco-box-nan",
        "det",
        "c.json",
        _coco_box("[NaN, 0, 5, 5]"),
        {},
        "finite",
    ),
    (
        "coco-box-infinity",
        "det",
        "c.json",
        _coco_box("[0, 0, Infinity, 5]"),
        {},
        "finite",
    ),
    (
        "coco-box-strings",
        "det",
        "c.json",
        _j(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": ["a", 0, 5, 5]}])),
        {},
        "must be a number",
    ),
    (
        "coco-box-missing",
        "det",
        "c.json",
        _j(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1}])),
        {},
        "needs a bbox",
    ),
    ("csv-box-nan", "det", "x.csv", b"id,label,bbox_x,bbox_y,bbox_w,bbox_h\nphoto-0#0,cat,nan,0,5,5\n", {}, "finite"),
    (
        "csv-box-partial",
        "det",
        "x.csv",
        b"id,label,bbox_x,bbox_y,bbox_w,bbox_h\nphoto-0#0,cat,1,,5,5\n",
        {},
        "all four",
    ),
    # COCO structure
    (
        "coco-images-not-list",
        "cls",
        "c.json",
        _j({"images": {"id": 1}, "annotations": []}),
        {},
        "'images' must be a list",
    ),
    ("coco-image-without-id", "cls", "c.json", _j(_coco(images=[{"file_name": "a.png"}])), {}, "id: missing"),
    ("coco-image-not-object", "cls", "c.json", _j(_coco(images=["a.png"])), {}, "an image must be an object"),
    ("coco-annotation-not-object", "cls", "c.json", _j(_coco(annotations=[[1, 1, 1]])), {}, "an annotation must be"),
    ("coco-missing-image-id", "cls", "c.json", _j(_coco(annotations=[{"id": 1, "category_id": 1}])), {}, "image_id"),
    (
        "coco-duplicate-image-ids",
        "cls",
        "c.json",
        _j(_coco(images=[{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}])),
        {},
        "duplicate image id 1",
    ),
    (
        "coco-duplicate-category-ids",
        "cls",
        "c.json",
        _j(_coco(categories=[{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}])),
        {},
        "duplicate category id 1",
    ),
    (
        "coco-duplicate-annotation-ids",
        "cls",
        "c.json",
        _j(_coco(annotations=[{"id": 7, "image_id": 1, "category_id": 1}] * 2)),
        {},
        "duplicate annotation id 7",
    ),
    (
        "coco-unknown-category",
        "cls",
        "c.json",
        _j(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 9}])),
        {},
        "not one of the file's categories",
    ),
    (
        "coco-category-id-inf",
        "cls",
        "c.json",
        b'{"images": [], "annotations": [], "categories": [{"id": 1e400, "name": "cat"}]}',
        {},
        "integer id",
    ),
    ("coco-category-id-bool", "cls", "c.json", _j(_coco(categories=[{"id": True, "name": "cat"}])), {}, "integer id"),
    # CSV structure and form fields
    ("csv-wrong-columns", "cls", "x.csv", b"name,label\nq,cat\n", {}, "'id' or 'uri' column"),
    ("csv-header-only", "cls", "x.csv", b"id,label\n", {}, "no rows"),
    ("csv-nul-in-id", "cls", "x.csv", b"id,label\nimg\x00006,cat\n", {}, "control characters"),
    ("split-control-char", "cls", "x.csv", b"id,label\nimg-006,cat\n", {"split": "tr\x01ain"}, "split name"),
]


@pytest.mark.parametrize(
    ("dataset", "name", "content", "form", "fragment"),
    [c[1:] for c in BAD_FILES],
    ids=[c[0] for c in BAD_FILES],
)
def test_malformed_labels_files_are_422(
    server: tuple[str, Store, dict[str, Any]],
    api: httpx.Client,
    dataset: str,
    name: str,
    content: bytes,
    form: dict[str, str],
    fragment: str,
) -> None:
    store = server[1]
    before = store.version(dataset)
    classes = list(store.get_dataset(dataset).classes)
    resp = api.post(
        f"/datasets/{dataset}/labels", files={"file": (name, content, "application/octet-stream")}, data=form
    )
    body = _problem(resp, 422)
    assert fragment in body["detail"], body["detail"]
    assert len(body["detail"]) < 6000
    assert store.version(dataset) == before and store.get_dataset(dataset).classes == classes == CLASSES


def test_problems_name_the_file_item_and_field(api: httpx.Client) -> None:
    content = _j([_task("img-006"), _task("img-007") | {"annotations": ["x"]}])
    body = _problem(api.post("/datasets/cls/labels", files={"file": ("export (3).json", content)}))
    assert body["type"].endswith("invalid-labels")
    assert body["detail"].startswith("export (3).json: 1 problem: task 1 (item 1), annotations[0]: an annotation")
    assert body["errors"] == [
        {
            "source": "task 1 (item 1)",
            "field": "annotations[0]",
            "message": "an annotation must be an object, not a string",
        }
    ]
    body = _problem(
        api.post("/datasets/cls/labels", files={"file": ("x.csv", b"id,label\nimg-006,china_lft\nimg-007,bird\n")})
    )
    assert body["type"].endswith("unknown-labels") and body["known_classes"] == CLASSES
    assert body["unknown_labels"] == [{"label": "china_lft", "count": 1, "sources": ["line 2"]}]
    assert "add_classes=true" in body["detail"]


def test_a_bom_before_a_valid_file_is_fine(server: tuple[str, Store, dict[str, Any]], api: httpx.Client) -> None:
    sid = _pool(server)[-1]
    resp = api.post(
        "/datasets/cls/labels", files={"file": ("x.json", BOM + _j([{"edgeminer_id": sid, "label": "dog"}]))}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["matched"] == 1
    resp = api.post("/datasets/cls/labels", files={"file": ("x.csv", BOM + f"id,label\n{sid},dog\n".encode())})
    assert resp.status_code == 200 and resp.json()["matched"] == 1


@pytest.mark.parametrize("version", ["99999", str(2**63 - 1), str(2**63), str(2**64), "1" + "0" * 30, "0", "-1"])
def test_points_version_that_cannot_exist_is_422(api: httpx.Client, version: str) -> None:
    for path in ("/datasets/cls/points", "/datasets/cls/points/ids"):
        body = _problem(api.get(path, params={"version": version}), 422)
        assert "version" in body["detail"]
    assert api.get("/datasets/cls/points").status_code == 200


@pytest.mark.parametrize("sample_id", ["box-inf", "box-nan", "box-neg"])
def test_media_of_a_row_with_a_broken_box_is_422(api: httpx.Client, sample_id: str) -> None:
    for size in ("thumb", "full"):
        body = _problem(api.get(f"/datasets/det/media/{sample_id}", params={"size": size}), 422)
        assert body["field"] == "bbox" and "unusable bbox" in body["detail"] and sample_id in body["detail"]
    assert api.get("/datasets/det/media/photo-0#0".replace("#", "%23")).status_code == 200


def test_media_of_a_huge_box_is_not_a_crash(api: httpx.Client) -> None:
    # finite but far outside the image: the crop is empty -> 422, not an overflow
    _problem(api.get("/datasets/det/media/box-huge"), 422)


# ----------------------------------------------------------------------------------------------
# The class-set policy end to end
# ----------------------------------------------------------------------------------------------


def test_add_classes_keeps_every_route_working(server: tuple[str, Store, dict[str, Any]], api: httpx.Client) -> None:
    store = server[1]
    pool = [f"img-{k:03d}" for k in range(6, 12)]  # the unlabeled half of the "grow" dataset
    csv_text = f"id,label\n{pool[0]},zebra\n{pool[1]},zebra\n{pool[2]},cat\n".encode()
    before = store.version("grow")
    body = _problem(api.post("/datasets/grow/labels", files={"file": ("l.csv", csv_text)}))
    assert body["type"].endswith("unknown-labels") and store.version("grow") == before

    resp = api.post("/datasets/grow/labels", files={"file": ("l.csv", csv_text)}, data={"add_classes": "true"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["new_classes"] == ["zebra"] and resp.json()["matched"] == 3
    info = store.get_dataset("grow")
    assert info.classes == [*CLASSES, "zebra"] and info.model_classes == 3

    # the unchanged model still sends 3 probabilities; a retrained one may send 4
    for n, probs in enumerate(([0.2, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7])):
        resp = api.post(
            "/datasets/grow/stream",
            json={"embedding": [0.5, 1.0, 0.0, 0.5], "probs": probs, "id": f"new-{n}", "issue_distance": None},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["pred_label"] == ("dog" if n == 0 else "zebra")
    body = _problem(api.post("/datasets/grow/stream", json={"embedding": [0.5, 1.0, 0.0, 0.5], "probs": [0.5, 0.5]}))
    assert "send 3 to 4 values" in body["detail"]

    # img-007 is predicted dog (see exportdata.build_classification): the new confusion cell is a seed
    seeds = {"confusion": {"label": "zebra", "pred_label": "dog"}}
    mined = api.post("/datasets/grow/mine", json={"seeds": seeds, "budget": 3})
    assert mined.status_code == 200, mined.text
    assert mined.json()["seed_ids"] == [pool[1]] and mined.json()["returned"] >= 1
    selected = api.post("/datasets/grow/select", json={"budget": 3, "per_class_cap": 2})
    assert selected.status_code == 200, selected.text
    assert selected.json()["returned"] >= 1
    confusion = api.get("/datasets/grow/stats/confusion")
    assert confusion.status_code == 200, confusion.text
    assert confusion.json()["labels"][:4] == [*CLASSES, "zebra"]
    assert sum(confusion.json()["matrix"][3]) == 2  # the two zebra rows, both predicted as something else
    labels = api.get("/datasets/grow/stats/labels")
    assert labels.status_code == 200 and "zebra" in labels.json()["classes"]
    rows = store.get_samples("grow", ["new-0", "new-1"], columns=["probs", "pred_label"]).to_pylist()
    assert [len(r["probs"]) for r in rows] == [3, 4]
