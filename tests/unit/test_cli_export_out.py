"""`edgeminer export --out`: a folder gets a named zip, an existing file is refused without --overwrite;
a Label Studio export with local-files images says what Label Studio needs to show them; the Label
Studio server URL and token checks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from exportdata import build_classification

from edgeminer.indexer.store import Store
from edgeminer.service.cli import main
from edgeminer.service.export.labelstudio_live import LabelStudioError, Server, check_server_url, server_from
from edgeminer.service.settings import Settings


@pytest.fixture
def data(tmp_path: Path) -> tuple[Store, Path]:
    store = Store(tmp_path / "db")
    build_classification(store, tmp_path / "media")
    return store, tmp_path


def _export(store: Store, *extra: str) -> int:
    return main(["--data-dir", str(store.uri), "export", "--dataset", "cls", "--quiet", *extra])


def test_out_to_a_new_folder_writes_a_named_zip(data: tuple[Store, Path], capsys: pytest.CaptureFixture[str]) -> None:
    store, tmp = data
    folder = tmp / "new-folder"
    assert _export(store, "--target", "coco", "--ids", "img-000,img-001", "--out", f"{folder}/") == 0
    zips = list(folder.iterdir())
    assert len(zips) == 1 and zips[0].name.startswith("cls-exp-") and zips[0].suffix == ".zip"
    assert "annotations/instances_default.json" in zipfile.ZipFile(zips[0]).namelist()
    assert str(zips[0]) in capsys.readouterr().out


def test_out_to_an_existing_folder_and_a_name_without_extension(data: tuple[Store, Path]) -> None:
    store, tmp = data
    folder = tmp / "there"
    folder.mkdir()
    assert _export(store, "--target", "csv", "--ids", "img-002", "--out", str(folder)) == 0
    assert [p.suffix for p in folder.iterdir()] == [".zip"]
    assert _export(store, "--target", "csv", "--ids", "img-003", "--out", str(tmp / "plain")) == 0
    assert zipfile.is_zipfile(tmp / "plain.zip")


def test_out_onto_an_existing_file_is_refused_without_overwrite(
    data: tuple[Store, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, tmp = data
    dest = tmp / "mine.zip"
    dest.write_bytes(b"an earlier export")
    assert _export(store, "--target", "csv", "--ids", "img-004", "--out", str(dest)) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err == f"edgeminer: error: --out {dest}: the file exists; pass --overwrite to replace it, or name another file"
    )
    assert dest.read_bytes() == b"an earlier export"
    assert _export(store, "--target", "csv", "--ids", "img-004", "--out", str(dest), "--overwrite") == 0
    assert zipfile.is_zipfile(dest)


def test_label_studio_export_prints_the_local_files_hint(
    data: tuple[Store, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, tmp = data
    assert _export(store, "--target", "label_studio", "--ids", "img-000,img-001") == 0
    out = capsys.readouterr().out
    root = (tmp / "media").resolve()
    assert f"LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT={root}" in out
    assert _export(store, "--target", "label_studio", "--ids", "img-002", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert f"LOCAL_FILES_DOCUMENT_ROOT={root}" in shown["hint"]
    base = "http://127.0.0.1:8000/api/v1/datasets/{dataset}/media/{id}?size=full"
    assert _export(store, "--target", "label_studio", "--ids", "img-003", "--media", "url", "--base-url", base) == 0
    assert "LOCAL_FILES" not in capsys.readouterr().out  # URLs need no Label Studio setting
    assert _export(store, "--target", "coco", "--ids", "img-003") == 0
    assert "LOCAL_FILES" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "url,why",
    [
        ("ftp://ls.example.com", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
        ("http://", "http(s)"),
        ("http://user:secret@127.0.0.1:8080", "user name or password"),
        ("http://127.0.0.1:8080/?next=x", "without ?query"),
    ],
)
def test_server_url_check(url: str, why: str) -> None:
    with pytest.raises(LabelStudioError, match=why.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        check_server_url(url)


def test_server_url_and_token_come_from_settings_or_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_server_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    monkeypatch.setenv("EDGEMINER_LABEL_STUDIO_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("EDGEMINER_LABEL_STUDIO_TOKEN", "s3cret-token")
    server = server_from(Settings())
    assert server.url == "http://127.0.0.1:8080" and "s3cret" not in repr(server)
    assert "s3cret" not in repr(Settings())
    monkeypatch.setenv("MY_LS_TOKEN", "other-token")
    assert server_from(Settings(), "https://ls.example.com", "MY_LS_TOKEN").url == "https://ls.example.com"
    with pytest.raises(LabelStudioError, match="'UNSET_VAR' .* not set"):
        server_from(Settings(), None, "UNSET_VAR")
    monkeypatch.delenv("EDGEMINER_LABEL_STUDIO_TOKEN")
    with pytest.raises(LabelStudioError, match="no Label Studio token"):
        server_from(Settings())
    monkeypatch.delenv("EDGEMINER_LABEL_STUDIO_URL")
    with pytest.raises(LabelStudioError, match="no Label Studio server"):
        server_from(Settings())
    with pytest.raises(LabelStudioError):
        Server("http://127.0.0.1:1", "  ")


def test_push_to_a_server_that_is_not_there_is_one_line(
    data: tuple[Store, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = data
    monkeypatch.setenv("EDGEMINER_LABEL_STUDIO_TOKEN", "s3cret-token")
    args = ["--target", "label_studio", "--ids", "img-000", "--project", "p", "--to-server", "http://127.0.0.1:9"]
    assert _export(store, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgeminer: error: Label Studio at http://127.0.0.1:9 is not reachable")
    assert len(err.strip().splitlines()) == 1 and "s3cret" not in err
    assert _export(store, "--target", "coco", "--ids", "img-000", "--project", "p", "--to-server", "") == 1
    assert "use --target label_studio" in capsys.readouterr().err
    assert _export(store, "--target", "label_studio", "--ids", "img-000", "--project", "p") == 1
    assert "--project names a Label Studio project: it needs --to-server" in capsys.readouterr().err
