"""Client text never becomes a path outside the folders it belongs to: stream upload ids, sample ids,
uris and class names in exports, the paths an export document stores; and a media_base_url is a
template with four placeholders, never a format string. Real LanceDB tables, real PNGs, a real
TorchScript embedder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pyarrow as pa
import pytest
import torch
from exportdata import build_classification
from PIL import Image
from torch import nn

from edgeminer.indexer.embedders import TorchScriptEmbedder
from edgeminer.indexer.store import Store
from edgeminer.service.errors import to_problem
from edgeminer.service.export.common import (
    ExportError,
    ExportRequest,
    check_media_base_url,
    fill_media_url,
    unique_file_name,
)
from edgeminer.service.export.runner import TARGET_MODULES, export_path, exports_dir, plan_export, run_export
from edgeminer.service.stream import StreamBudget, StreamError, StreamPolicy, StreamSample, decide

CLASSES = ["circle", "square", "none"]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.body(x)
        return e, self.head(e)


def _png_bytes(seed: int = 0, size: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def cam(store: Store, tmp_path: Path) -> TorchScriptEmbedder:
    """Dataset ``cam`` whose embedder is a real (tiny) TorchScript model."""
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    meta = {"classes": CLASSES, "image_size": 16}
    torch.jit.script(_Net()).save(str(model), _extra_files={"edgeminer.json": json.dumps(meta)})
    emb = TorchScriptEmbedder(model, device="cpu")
    store.create_dataset("cam", dim=emb.dim, embedder=emb.config(), classes=CLASSES)
    return emb


# -- 1. stream uploads ----------------------------------------------------------------------------

ATTACK_IDS = ["../../../escaped", "../escaped-too", "a/b/c", "..", ".", "x\x00y", "C:\\evil", "%2e%2e%2fpct"]


def test_stream_upload_ids_never_become_paths(store: Store, cam: TorchScriptEmbedder, tmp_path: Path) -> None:
    uploads = tmp_path / "data" / "_stream"
    outside = tmp_path / "outside"
    outside.mkdir()
    ids = [*ATTACK_IDS, str(outside / "abs-target"), str(tmp_path / "data" / "planted")]
    for n, sample_id in enumerate(ids):
        doc = decide(
            store,
            "cam",
            StreamSample(image=_png_bytes(n), id=sample_id),
            StreamPolicy(),
            StreamBudget(),
            embedder=cam,
            upload_dir=uploads,
        )
        assert doc["sample_id"] == sample_id  # the id is kept as the row's id, only never as a path
        uri = store.get_samples("cam", [sample_id], columns=["uri"])["uri"].to_pylist()[0]
        want = uploads.resolve() / "cam" / (hashlib.sha256(sample_id.encode()).hexdigest()[:40] + ".png")
        assert uri == str(want) and want.read_bytes() == _png_bytes(n)
    # every file the uploads wrote is directly in the dataset's upload folder, nothing anywhere else
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".png")
    assert written and all(p.parent == uploads.resolve() / "cam" for p in written), written
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "data" / "escaped-too.png").exists()
    assert store.get_dataset("cam").media_roots == [str(uploads.resolve() / "cam")]


def test_stream_upload_does_not_follow_symlinks_out(store: Store, cam: TorchScriptEmbedder, tmp_path: Path) -> None:
    uploads = tmp_path / "_stream"
    (uploads / "cam").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    # a symlink planted where the upload's file will go is replaced, its target left alone
    name = hashlib.sha256(b"frame-1").hexdigest()[:40] + ".png"
    (uploads / "cam" / name).symlink_to(victim)
    decide(
        store,
        "cam",
        StreamSample(image=_png_bytes(1), id="frame-1"),
        StreamPolicy(),
        StreamBudget(),
        embedder=cam,
        upload_dir=uploads,
    )
    assert victim.read_text() == "keep me"
    assert not (uploads / "cam" / name).is_symlink() and (uploads / "cam" / name).read_bytes() == _png_bytes(1)
    # an upload folder that is a symlink to elsewhere is refused
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "cam").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StreamError, match="not a plain folder"):
        decide(
            store,
            "cam",
            StreamSample(image=_png_bytes(2), id="frame-2"),
            StreamPolicy(),
            StreamBudget(),
            embedder=cam,
            upload_dir=linked,
        )
    assert list(elsewhere.iterdir()) == []
    assert not list(tmp_path.glob("**/.upload-*"))  # no temp file left behind


def test_stream_decode_error_names_what_is_wrong(store: Store, cam: TorchScriptEmbedder, tmp_path: Path) -> None:
    for data, reason in [
        (b"certainly not an image", "not an image format Pillow can identify"),
        (_png_bytes(3)[:80], "truncated or corrupt PNG data"),
    ]:
        with pytest.raises(StreamError) as info:
            decide(
                store,
                "cam",
                StreamSample(image=data, image_field="image_base64"),
                StreamPolicy(),
                StreamBudget(),
                embedder=cam,
                upload_dir=tmp_path / "up",
            )
        text = str(info.value)
        assert text.startswith("image_base64 is not readable as an image") and reason in text, text
        assert "BytesIO" not in text and " at 0x" not in text


# -- exports: names inside the export folder --------------------------------------------------------

WEIRD_CLASSES = ["../../evil", "a/b", "nul\x00x", "..", "/abs/x", "C:\\win\\x"]


def _weird_dataset(store: Store, media: Path) -> list[str]:
    """Rows whose ids, uris and predicted classes are path-like; two files share one long base name."""
    long_stem = "L" * 247  # + ".png" = 251 bytes: a legal name on disk, too long with a suffix added
    files = [
        media / "d0" / "plain.png",
        media / "d1" / (long_stem + ".png"),
        media / "d2" / (long_stem + ".png"),
        media / "d3" / "..png",
        media / "d4" / " .. .png",
        media / "d5" / "...",
    ]
    rows = []
    for k, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8 + k, 8), (40 * k, 0, 0)).save(path, format="PNG")
        rows.append(
            {
                "id": ["../../../../tmp/pwn", "/etc/passwd", "a\x00b", "..", "x/../../y", "C:\\z"][k],
                "uri": str(path),
                "width": 8 + k,
                "height": 8,
                "split": "unlabeled",
                "labeled": False,
                "label": None,
                "pred_label": WEIRD_CLASSES[k],
                "probs": [1 / 6] * 6,
                "confidence": 0.5,
                "status": "ok",
                "fingerprint": f"fp{k}",
                "embedding": [1.0, float(k)],
            }
        )
    store.create_dataset(
        "weird", dim=2, embedder={"kind": "precomputed"}, classes=WEIRD_CLASSES, media_roots=[str(media)]
    )
    store.upsert_samples("weird", pa.Table.from_pylist(rows))
    return [r["id"] for r in rows]


@pytest.mark.parametrize("target", sorted(TARGET_MODULES))
def test_path_like_ids_uris_and_class_names_stay_inside_the_export(store: Store, tmp_path: Path, target: str) -> None:
    ids = _weird_dataset(store, tmp_path / "media")
    data_dir = str(tmp_path / "db")
    before = {p for p in tmp_path.rglob("*") if "db" not in p.relative_to(tmp_path).parts}
    # a YOLO classification export holds images in class folders, so it only exists with copied media
    medias = ("copy",) if target == "yolo" else ("copy", "relative", "url")
    for media in medias:
        kw: dict[str, Any] = {"media_base_url": "https://cdn.example/{dataset}/{id}/{name}"} if media == "url" else {}
        req = ExportRequest(target=target, ids=ids, media=media, **kw)
        doc, _ = plan_export(store, "weird", req, data_dir=data_dir)
        summary = run_export(store, "weird", doc["id"])
        assert summary["status"] == "done" and summary["rows_exported"] == len(ids), summary
        out = Path(doc["path"]).resolve()
        assert out.parent == (exports_dir(data_dir) / "weird").resolve()
        for path in out.rglob("*"):
            assert path.resolve().is_relative_to(out) and not path.is_symlink(), path
            assert len(path.name.encode()) <= 255 and "\x00" not in path.name
            if path.suffix == ".xml":
                ET.parse(path)  # well-formed even with a NUL in a class name
        with zipfile.ZipFile(summary["zip"]) as zf:
            for name in zf.namelist():
                parts = name.split("/")
                assert not name.startswith("/") and ".." not in parts and "\x00" not in name, name
        if media == "copy":
            copied = sorted(p.name for p in out.rglob("*.png"))
            assert len(copied) == len(ids)  # one file per image, both long names kept apart
            assert all(len(n) <= 128 for n in copied), copied
    after = {p for p in tmp_path.rglob("*") if "db" not in p.relative_to(tmp_path).parts}
    assert after == before  # nothing was written outside the data dir
    assert not Path("/tmp/pwn").exists() and not Path("/tmp/pwn.png").exists()


def test_unique_file_name_is_always_one_safe_name() -> None:
    taken: set[str] = set()
    cases = [
        (None, "../../x"),
        (None, "/etc/passwd"),
        (None, "\x00"),
        ("https://h/a/..%2F..%2Fb.png", "k"),
        ("s3://bucket/", ".."),
        ("/x/" + "a" * 400 + ".png", "k1"),
        ("/y/" + "a" * 400 + ".png", "k2"),
        ("/x/a." + "p" * 300, "k3"),
        ("/x/.png", "k4"),
        ("/x/a.\x00png", "k5"),
    ]
    names = [unique_file_name(uri, key, taken) for uri, key in cases]
    assert len(set(names)) == len(names)
    for name in names:
        stem = os.path.splitext(name)[0]
        assert stem and not stem.startswith(".") and name not in (".", "..")
        assert all(ch.isalnum() or ch in "._-" for ch in name) and len(name) <= 128, name
        assert os.path.basename(name) == name


# -- the paths an export document stores --------------------------------------------------------------


def test_export_document_stores_paths_relative_to_the_exports_folder(store: Store, tmp_path: Path) -> None:
    cls = build_classification(store, tmp_path / "media", n=4)
    data_dir = str(tmp_path / "db")
    doc, _ = plan_export(store, "cls", ExportRequest(target="csv", ids=cls.ids), data_dir=data_dir)
    run_export(store, "cls", doc["id"])
    saved = store.get_doc("cls", "export", doc["id"])
    assert saved["path"] == f"cls/{doc['id']}" and saved["zip"] == f"cls/{doc['id']}.zip"
    assert doc["zip"] == str((exports_dir(data_dir) / "cls" / f"{doc['id']}.zip").resolve())
    # a document written before (absolute paths) still resolves, and a run rewrites it relative
    old = {**saved, "path": doc["path"], "zip": doc["zip"], "status": "running"}
    store.put_doc("cls", "export", doc["id"], {k: v for k, v in old.items() if not k.startswith("_")})
    assert export_path(old, "zip", data_dir=data_dir, dataset="cls") == Path(doc["zip"])
    run_export(store, "cls", doc["id"])
    assert store.get_doc("cls", "export", doc["id"])["zip"] == f"cls/{doc['id']}.zip"


def test_export_path_never_leaves_the_datasets_exports_folder(store: Store, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "db")
    home = (exports_dir(data_dir) / "cls").resolve()
    home.mkdir(parents=True)
    (exports_dir(data_dir) / "other").mkdir()
    (exports_dir(data_dir) / "other" / "exp-x.zip").write_bytes(b"other dataset")
    (home / "exp-link.zip").symlink_to("/etc/passwd")
    tampered = ["/etc/passwd", "../../../../etc/passwd", "cls/../../../etc/passwd", "other/exp-x.zip"]
    tampered.append("cls/exp-link.zip")  # a symlink inside the folder, to a file outside
    for value in tampered:
        try:
            got = export_path({"id": "e", "zip": value}, "zip", data_dir=data_dir, dataset="cls")
        except ExportError:
            continue
        # the only other answer: a file of that name directly in this dataset's folder (none exists)
        assert got.parent == home and not got.is_file(), (value, got)
    for value in ["", "\x00", None, 3]:
        with pytest.raises(ExportError):
            export_path({"id": "e", "zip": value}, "zip", data_dir=data_dir, dataset="cls")
    with pytest.raises(ExportError, match="invalid dataset name"):
        export_path({"id": "e", "zip": "x.zip"}, "zip", data_dir=data_dir, dataset="../cls")


# -- 3. media_base_url is a template, not a format string ------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example/{id:>40000000}",
        "https://cdn.example/{id.__class__.__mro__}",
        "https://cdn.example/{id!r}",
        "https://cdn.example/{0}",
        "https://cdn.example/{}",
        "https://cdn.example/{unknown}",
        "https://cdn.example/{id",
        "https://cdn.example/id}",
        "https://cdn.example/" + "x" * 2001,
    ],
)
def test_media_base_url_refuses_anything_but_the_placeholders(store: Store, tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError):
        check_media_base_url(url)
    cls = build_classification(store, tmp_path / "media", n=2)
    req = ExportRequest(target="csv", ids=cls.ids, media="url", media_base_url=url)
    with pytest.raises(ExportError, match="media_base_url") as info:
        plan_export(store, "cls", req, data_dir=str(tmp_path / "db"))
    assert to_problem(info.value).status == 422 and len(str(info.value)) < 1000
    assert "<class" not in str(info.value)


def test_media_base_url_placeholders_are_replaced_literally(store: Store, tmp_path: Path) -> None:
    values = {"id": "{name}/../?#%", "dataset": "cls", "path": "a b/c.png", "name": "{id}"}
    url = fill_media_url("https://h/{dataset}/{path}?id={id}&n={name}&x={id}", values)
    assert url == "https://h/cls/a%20b/c.png?id=%7Bname%7D%2F..%2F%3F%23%25&n=%7Bid%7D&x=%7Bname%7D%2F..%2F%3F%23%25"
    # through an export: a row id holding a format spec or a placeholder stays text
    cls = build_classification(store, tmp_path / "media", n=2)
    tricky = "{id:>40000000}{name}"
    store.upsert_samples("cls", pa.Table.from_pylist([{**cls.rows[cls.ids[1]], "id": tricky}]))
    ids = [cls.ids[0], tricky]
    req = ExportRequest(target="csv", ids=ids, media="url", media_base_url="https://h/{dataset}/{id}/{path}")
    doc, _ = plan_export(store, "cls", req, data_dir=str(tmp_path / "db"))
    run_export(store, "cls", doc["id"])
    out = Path(doc["path"])
    text = (out / "samples.csv").read_text()
    assert f"https://h/cls/{cls.ids[0]}/b/pic00.png" in text
    assert "https://h/cls/%7Bid%3A%3E40000000%7D%7Bname%7D/a/pic00.png" in text
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 100_000
