"""Server paths in API requests stay under ``settings.ingest_roots`` (security: ingest must not make any
folder of the server a media root, nor tell whether a path outside the roots exists).

Layout of every test: ``tmp_path/roots`` is the ingest root, ``tmp_path/outside`` holds files the API
must never read (not under the media roots either), ``tmp_path/media`` is the server's media root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import wait_job

from edgeminer.indexer.sources import SourceError, open_source
from edgeminer.indexer.store import Store
from edgeminer.service.paths import names_a_file, require_under_roots
from edgeminer.service.settings import Settings

INGEST = "/api/v1/datasets/ds/ingest"
OUTSIDE_ROOTS = "must be under EDGEMINER_INGEST_ROOTS"


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "roots"
    root.mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def client(make_client: Callable[..., TestClient], api_settings: Settings, roots: Path) -> TestClient:
    return make_client(api_settings, ingest_roots=[str(roots)])


def vec(i: int) -> list[float]:
    v = [0.0] * 4
    v[i % 4] = 1.0
    return v


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def same_apart_from(a: str, value_a: str, b: str, value_b: str) -> bool:
    return a.replace(value_a, "<PATH>") == b.replace(value_b, "<PATH>")


# -- no roots configured ------------------------------------------------------------------------


def test_without_ingest_roots_every_path_request_is_refused(
    api_client: TestClient, roots: Path, make_png: Callable[..., Path]
) -> None:
    png = make_png(roots / "a.png")
    manifest = write_jsonl(roots / "m.jsonl", [{"uri": str(png), "embedding": vec(0)}])
    resp = api_client.post(INGEST, json={"source": str(manifest), "embedder": {"kind": "precomputed"}})
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["type"].endswith("path-outside-roots") and problem["field"] == "source"
    assert "set EDGEMINER_INGEST_ROOTS to the folders ingest may read" in problem["detail"]
    assert problem["setting"] == "EDGEMINER_INGEST_ROOTS"
    assert api_client.get("/api/v1/datasets").json() == []  # nothing created

    # a recorded embedder config naming a model file is a server path too
    torch_ds = {"name": "t", "dim": 4, "embedder": {"kind": "torchscript", "model_file": str(roots / "m.pt")}}
    refused = api_client.post("/api/v1/datasets", json=torch_ds)
    assert refused.status_code == 403 and "EDGEMINER_INGEST_ROOTS" in refused.json()["detail"]
    # requests that name no server path are not affected
    assert api_client.post("/api/v1/datasets", json={"name": "plain", "dim": 4}).status_code == 201
    clip = {"name": "clip", "dim": 512, "embedder": {"kind": "open_clip", "pretrained": "laion2b_s34b_b79k"}}
    assert api_client.post("/api/v1/datasets", json=clip).status_code == 201


def test_ingest_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEMINER_INGEST_ROOTS", "/data/a, /data/b")
    assert Settings(data_dir=str(tmp_path)).ingest_roots == ["/data/a", "/data/b"]
    monkeypatch.setenv("EDGEMINER_INGEST_ROOTS", '["/data/c"]')
    assert Settings(data_dir=str(tmp_path)).ingest_roots == ["/data/c"]
    monkeypatch.delenv("EDGEMINER_INGEST_ROOTS")
    assert Settings(data_dir=str(tmp_path)).ingest_roots == []


# -- paths outside the roots --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "source",
        "image_root",
        "unlabeled",
        "coco_results",
        "embedder.vectors",
        "embedder.model_file",
        "embedder.pretrained",
    ],
)
def test_an_outside_path_gets_the_same_403_whether_it_exists_or_not(
    client: TestClient, roots: Path, outside: Path, field: str
) -> None:
    (outside / "here.jsonl").write_text('{"uri": "x.png"}\n')
    (outside / "here.pt").write_bytes(b"not a model")
    (outside / "dirA").mkdir()
    pairs = {  # (exists, missing), same length
        "source": ("here.jsonl", "gone.jsonl"),
        "image_root": ("dirA", "dirB"),
        "unlabeled": ("dirA", "dirB"),
        "coco_results": ("here.jsonl", "gone.jsonl"),
        "embedder.vectors": ("here.jsonl", "gone.jsonl"),
        "embedder.model_file": ("here.pt", "gone.pt"),
        "embedder.pretrained": ("here.pt", "gone.pt"),
    }[field]
    answers = []
    for name in pairs:
        value = str(outside / name)
        body: dict[str, Any] = {"source": str(roots / "m.jsonl")}  # inside (missing: never looked at)
        if field.startswith("embedder."):
            body["embedder"] = {field.split(".", 1)[1]: value}
        else:
            body[field] = value
        resp = client.post(INGEST, json=body)
        assert resp.status_code == 403, resp.text
        problem = resp.json()
        assert problem["field"] == field and OUTSIDE_ROOTS in problem["detail"] and value in problem["detail"]
        answers.append((resp.text, value, dict(resp.headers)))
    (text_a, value_a, headers_a), (text_b, value_b, headers_b) = answers
    assert same_apart_from(text_a, value_a, text_b, value_b)
    assert {k: v for k, v in headers_a.items() if k != "content-length"} == {
        k: v for k, v in headers_b.items() if k != "content-length"
    }
    assert client.get("/api/v1/datasets").json() == []


def test_escapes_and_symlinks_out_of_the_roots_are_refused(
    client: TestClient, roots: Path, outside: Path, make_png: Callable[..., Path]
) -> None:
    png = make_png(outside / "secret.png")
    manifest = write_jsonl(outside / "m.jsonl", [{"uri": str(png), "embedding": vec(0)}])
    (roots / "link.jsonl").symlink_to(manifest)
    (roots / "linkdir").symlink_to(outside, target_is_directory=True)
    (outside / "sub").mkdir()
    (roots / "linksub").symlink_to(outside / "sub", target_is_directory=True)
    escapes = [
        str(roots / ".." / "outside" / "m.jsonl"),
        str(roots / "linksub" / ".." / "m.jsonl"),  # opens outside/m.jsonl: '..' climbs from the target
        str(roots / "link.jsonl"),
        str(roots / "linkdir"),
        str(roots / "linkdir" / "m.jsonl"),
        os.path.relpath(manifest),  # relative to the server's working directory
        "/",
        str(roots) + "\x00/m.jsonl",
    ]
    for value in escapes:
        resp = client.post(INGEST, json={"source": value, "embedder": {"kind": "precomputed"}})
        assert resp.status_code == 403, (value, resp.text)
        detail = resp.json()["detail"]
        assert OUTSIDE_ROOTS in detail and f"{value!r} is not" in detail  # the caller's own string
        if value.startswith(str(roots / "link")):
            assert str(outside) not in detail  # never where a symlink points
    # a symlink whose target lies inside the roots is fine
    inner = write_jsonl(
        roots / "sub" / "m.jsonl", [{"uri": str(make_png(roots / "sub" / "a.png")), "embedding": vec(1)}]
    )
    (roots / "inner-link.jsonl").symlink_to(inner)
    ok = client.post(INGEST, json={"source": str(roots / "inner-link.jsonl"), "embedder": {"kind": "precomputed"}})
    assert ok.status_code == 202, ok.text
    assert wait_job(client, ok.json()["id"])["status"] == "succeeded"


def test_a_model_file_outside_the_roots_cannot_be_recorded(client: TestClient, roots: Path, outside: Path) -> None:
    for embedder in (
        {"kind": "torchscript", "model_file": str(outside / "m.pt")},
        {"kind": "open_clip", "pretrained": str(outside / "ckpt.bin")},
        {"kind": "open_clip", "pretrained": "../ckpt"},
    ):
        resp = client.post("/api/v1/datasets", json={"name": "t", "dim": 4, "embedder": embedder})
        assert resp.status_code == 403, (embedder, resp.text)
    inside = {"kind": "torchscript", "model_file": str(roots / "m.pt")}
    assert client.post("/api/v1/datasets", json={"name": "t", "dim": 4, "embedder": inside}).status_code == 201
    bad = client.post("/api/v1/datasets", json={"name": "u", "dim": 4, "embedder": {"model_file": 3}})
    assert bad.status_code == 422


# -- what a source inside the roots names -------------------------------------------------------


def test_manifest_rows_pointing_outside_become_error_rows_never_served(
    client: TestClient, roots: Path, outside: Path, make_png: Callable[..., Path]
) -> None:
    inside_png = make_png(roots / "imgs" / "ok.png")
    secret = make_png(outside / "secret.png")
    (roots / "imgs" / "sneaky.png").symlink_to(secret)
    rows = [
        {"id": "ok", "uri": str(inside_png), "embedding": vec(0)},
        {"id": "abs", "uri": str(secret), "embedding": vec(1)},
        {"id": "absgone", "uri": str(outside / "gonee.png"), "embedding": vec(1)},
        {"id": "rel", "uri": "../../outside/secret.png", "embedding": vec(2)},
        {"id": "link", "uri": "sneaky.png", "embedding": vec(3)},
        {"id": "fileuri", "uri": f"file://{secret}", "embedding": vec(3)},
    ]
    manifest = write_jsonl(roots / "imgs" / "m.jsonl", rows)
    resp = client.post(INGEST, json={"source": str(manifest), "embedder": {"kind": "precomputed"}})
    assert resp.status_code == 202, resp.text
    done = wait_job(client, resp.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["counts"]["ok"] == 1 and done["counts"]["errors"] == 5
    errors = {e["item"]: e["message"] for e in done["errors"]}
    assert set(errors) == {"abs", "absgone", "rel", "link", "fileuri"}
    assert all("outside the folders this ingest may read" in m for m in errors.values())
    # a file that exists and one that does not give the same error, apart from the path
    assert same_apart_from(errors["abs"], str(secret), errors["absgone"], str(outside / "gonee.png"))

    detail = client.get("/api/v1/datasets/ds").json()
    real_roots = os.path.realpath(roots)
    assert detail["media_roots"] and all(os.path.realpath(r).startswith(real_roots) for r in detail["media_roots"])
    assert detail["counts"]["errors"] == 5

    store = Store(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    stored = {r["id"]: r for r in store.query("ds", columns=["id", "status", "error", "width"]).to_pylist()}
    for sid in errors:
        assert stored[sid]["status"] == "error" and "ingest_roots" in stored[sid]["error"]
        assert stored[sid]["width"] is None  # the image was never opened

    assert client.get("/api/v1/datasets/ds/media/ok").status_code == 200
    for sid in ("abs", "rel", "link", "fileuri"):
        for size in ("thumb", "full"):
            media = client.get(f"/api/v1/datasets/ds/media/{sid}", params={"size": size})
            assert media.status_code == 403, (sid, size, media.status_code)
            assert media.headers["content-type"] == "application/problem+json"


def test_a_valid_ingest_inside_the_roots_with_a_vectors_file(
    client: TestClient, roots: Path, make_png: Callable[..., Path]
) -> None:
    lines = ["id,uri,label"]
    for i in range(5):
        png = make_png(roots / "data" / "cats" / f"c{i}.png", color=(i * 40, 10, 10))
        lines.append(f"c{i},{png.relative_to(roots / 'data')},{'cat' if i % 2 else 'dog'}")
    (roots / "data" / "m.csv").write_text("\n".join(lines) + "\n")
    np.save(roots / "data" / "v.npy", np.eye(5, 4, dtype=np.float32) + 0.01)
    body = {
        "source": str(roots / "data" / "m.csv"),
        "image_root": str(roots / "data"),
        "embedder": {"kind": "precomputed", "vectors": str(roots / "data" / "v.npy")},
    }
    resp = client.post(INGEST, json=body)
    assert resp.status_code == 202, resp.text
    done = wait_job(client, resp.json()["id"])
    assert done["status"] == "succeeded" and done["counts"]["ok"] == 5 and done["counts"]["errors"] == 0
    detail = client.get("/api/v1/datasets/ds").json()
    assert detail["media_roots"] == [str(roots / "data" / "cats")]
    thumb = client.get("/api/v1/datasets/ds/media/c3")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    # errors about a source inside the roots may be detailed: that is the caller's own data
    (roots / "nouri.csv").write_text("path,label\na.png,x\n")
    bad = client.post(INGEST, json={"source": str(roots / "nouri.csv"), "embedder": {"kind": "precomputed"}})
    assert bad.status_code == 422 and "no 'uri' column (found: path, label)" in bad.json()["detail"]


def test_coco_images_outside_the_roots_are_never_looked_at(
    roots: Path, outside: Path, make_png: Callable[..., Path]
) -> None:
    make_png(outside / "exists.png")

    def coco(name: str, file_name: str) -> Path:
        gt = {
            "images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
            "categories": [{"id": 1, "name": "car"}],
        }
        path = roots / name
        path.write_text(json.dumps(gt))
        return path

    # without roots (the CLI) a missing image is reported; with roots the outside image is never probed
    missing = coco("b.json", str(outside / "gone00.png"))
    with pytest.raises(SourceError, match="none of the first images exists"):
        open_source(missing)
    sources = [
        open_source(coco("a.json", str(outside / "exists.png")), allowed_roots=[str(roots)]),
        open_source(missing, allowed_roots=[str(roots)]),
    ]
    for src in sources:
        assert src.roots == [str(roots)]
        (rec,) = list(src)
        assert rec.error and "outside the folders this ingest may read" in rec.error
    with pytest.raises(SourceError, match="outside the folders"):
        open_source(outside / "nothing.json", allowed_roots=[str(roots)])


def test_folder_walks_skip_what_resolves_outside(roots: Path, outside: Path, make_png: Callable[..., Path]) -> None:
    make_png(roots / "ds" / "car" / "a.png")
    make_png(outside / "truck" / "t.png")
    make_png(outside / "loose.png")
    (roots / "ds" / "truck").symlink_to(outside / "truck", target_is_directory=True)
    (roots / "ds" / "car" / "b.png").symlink_to(outside / "loose.png")
    free = open_source(roots / "ds")  # the CLI follows the links
    assert free.classes == ["car", "truck"] and len(free) == 3
    src = open_source(roots / "ds", allowed_roots=[str(roots)])
    assert src.classes == ["car"] and [Path(r.uri).name for r in src] == ["a.png"]
    assert src.roots == [str((roots / "ds").resolve())]


def test_the_path_guard(roots: Path, outside: Path) -> None:
    assert require_under_roots(str(roots / "x" / ".." / "y"), [str(roots)], field="f") == roots.resolve() / "y"
    assert require_under_roots(str(roots), [str(roots)], field="f") == roots.resolve()
    sibling = roots.parent / (roots.name + "2")  # a prefix is not a parent
    for value in (str(sibling), str(outside), str(roots / ".." / "outside")):
        with pytest.raises(Exception, match=OUTSIDE_ROOTS):
            require_under_roots(value, [str(roots)], field="f")
    assert not names_a_file("laion2b_s34b_b79k") and not names_a_file("openai") and not names_a_file("")
    assert names_a_file("/x/ckpt") and names_a_file("ckpt.pt") and names_a_file("~/c") and names_a_file("a b")


# -- the CLI stays free -------------------------------------------------------------------------


def test_the_cli_ingests_a_folder_outside_any_ingest_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, roots: Path, outside: Path, make_png: Callable[..., Path]
) -> None:
    from edgeminer.service import cli

    monkeypatch.setenv("EDGEMINER_INGEST_ROOTS", str(roots))  # set, and ignored by the CLI
    png = make_png(outside / "imgs" / "a.png")
    manifest = write_jsonl(outside / "m.jsonl", [{"id": "a", "uri": str(png), "embedding": vec(0)}])
    db = str(tmp_path / "cli-db")
    assert (
        cli.main(["--data-dir", db, "ingest", str(manifest), "--dataset", "c", "--embedder", "precomputed", "--quiet"])
        == 0
    )
    store = Store(db)
    assert store.query("c", columns=["id", "status"]).to_pylist() == [{"id": "a", "status": "ok"}]
    assert store.get_dataset("c").media_roots == [str(outside / "imgs")]
