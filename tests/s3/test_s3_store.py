"""Datasets on object storage (issue 11, part 1): every command and the API against ``s3://bucket/prefix`` on
a loopback S3 server (moto's server mode, started by conftest.py), with the same results as a local data dir
on the same input; the files kept beside the data go to a local cache; a store that does not answer is one
line, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from s3server import BUCKET, S3Server, free_port, s3_server, write_manifest

from edgeminer.indexer.analysis.run import analyze, load_analysis
from edgeminer.indexer.errors import Unavailable
from edgeminer.indexer.store import Store, storage_options_for
from edgeminer.service.api.app import create_app
from edgeminer.service.cli import main
from edgeminer.service.settings import Settings

ANALYZE = ["--n-epochs", "30", "--min-cluster-size", "8", "--quiet"]
PRECOMPUTED = ["--dataset", "ds", "--embedder", "precomputed", "--quiet"]
TO_LABEL = {"s0003": "cat", "s0006": "bird", "s0012": "cat"}  # unlabeled rows (i % 3 == 0, i % 9 != 0)


def _pipeline(data_dir: str, manifest: Path, work: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """ingest -> analyze -> mine -> export -> labels import -> check through the CLI; what each left."""
    base = ["--data-dir", data_dir]
    assert main([*base, "ingest", str(manifest), *PRECOMPUTED]) == 0
    assert main([*base, "analyze", "--dataset", "ds", *ANALYZE]) == 0
    capsys.readouterr()
    assert main([*base, "mine", "--dataset", "ds", "--ids", "s0002", "s0005", "--budget", "6", "--json"]) == 0
    mined = [r["id"] for r in json.loads(capsys.readouterr().out)["items"]]
    ids = "s0001,s0002,s0004,s0005"
    assert main([*base, "export", "--dataset", "ds", "--target", "csv", "--ids", ids, "--json", "--quiet"]) == 0
    export = json.loads(capsys.readouterr().out)
    labels = work / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"{k},{v}\n" for k, v in TO_LABEL.items()))
    assert main([*base, "labels", "import", str(labels), "--dataset", "ds", "--format", "csv"]) == 0
    assert main([*base, "check", "--dataset", "ds", "--quiet"]) == 0
    capsys.readouterr()
    store = Store(data_dir)
    rows = store.query("ds", columns=["id", "label", "labeled", "cluster"]).to_pylist()
    with zipfile.ZipFile(export["zip"]) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        exported = sorted(r["id"] for r in csv.DictReader(io.TextIOWrapper(zf.open(name), "utf-8")))
    analysis = load_analysis(store, "ds")
    assert analysis is not None
    return {
        "labels": {r["id"]: r["label"] for r in rows},
        "clusters": len({r["cluster"] for r in rows if r["cluster"] is not None and r["cluster"] >= 0}),
        "mined": sorted(mined),
        "exported": exported,
        "zip": Path(export["zip"]),
        "state": analysis.get("state"),
    }


def test_cli_on_s3_gives_the_local_results(
    s3: S3Server, s3_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "data")
    local = _pipeline(str(tmp_path / "db"), manifest, tmp_path, capsys)
    remote = _pipeline(s3_uri, manifest, tmp_path, capsys)

    assert remote["labels"] == local["labels"] and len(local["labels"]) == 90
    assert all(remote["labels"][k] == v for k, v in TO_LABEL.items())
    assert remote["clusters"] == local["clusters"] >= 2
    assert remote["mined"] == local["mined"] and len(local["mined"]) == 6
    assert remote["exported"] == local["exported"] == ["s0001", "s0002", "s0004", "s0005"]
    # the tables are in the bucket; the export's files in the local cache of that store, not in the bucket
    prefix = s3_uri.split(f"{BUCKET}/", 1)[1]
    keys = s3.list_keys(BUCKET, prefix + "/")
    assert any(k.startswith(f"{prefix}/ds__samples.lance/") for k in keys)
    assert not any("_exports" in k or k.endswith(".zip") or k.endswith(".pkl") for k in keys)
    assert remote["zip"].is_relative_to(tmp_path / "s3cache" / "exports") and remote["zip"].is_file()
    assert local["zip"].is_relative_to(tmp_path / "db" / "_exports")
    # the fitted analysis state: a file beside local data, a document in the bucket for remote data
    assert "file" in local["state"] and remote["state"]["doc"] and "file" not in remote["state"]
    # `edgeminer check` reads the fragments from the bucket: a data object deleted there is found, not raised
    data = [k for k in keys if k.startswith(f"{prefix}/ds__samples.lance/data/")]
    for key in data:
        s3.delete_key(BUCKET, key)
    assert main(["--data-dir", s3_uri, "check", "--dataset", "ds"]) == 1
    out = capsys.readouterr()
    assert "unreadable_fragment" in out.out + out.err and "Traceback" not in out.err


def test_analysis_state_travels_with_the_bucket(s3_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second machine (another local cache, a new process's Store) places new rows on the map fitted by
    the first: the state lives in the bucket, not in a local file."""
    base = ["--data-dir", s3_uri]
    assert main([*base, "ingest", str(write_manifest(tmp_path / "a")), *PRECOMPUTED]) == 0
    first = analyze(Store(s3_uri), "ds", {"n_epochs": 30, "min_cluster_size": 8})
    assert first.mode == "fit"

    monkeypatch.setenv("EDGEMINER_CACHE_DIR", str(tmp_path / "machine-2"))
    more = write_manifest(tmp_path / "b", 15, start=90, seed=1)
    assert main([*base, "ingest", str(more), *PRECOMPUTED]) == 0
    second = Store(s3_uri)
    report = analyze(second, "ds", {"n_epochs": 30, "min_cluster_size": 8})
    assert report.mode == "transform"
    xy = second.query("ds", columns=["id", "x", "cluster"]).to_pylist()
    assert len(xy) == 105 and all(r["x"] is not None and r["cluster"] is not None for r in xy)


def _wait(client: TestClient, url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(url).json()
        if view["status"] in ("done", "failed", "interrupted", "cancelled"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"export still {view['status']} after {timeout} s")


def test_api_serves_a_dataset_on_s3(s3_uri: str, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data")
    assert main(["--data-dir", s3_uri, "ingest", str(manifest), *PRECOMPUTED]) == 0
    analyze(Store(s3_uri), "ds", {"n_epochs": 30, "min_cluster_size": 8})
    settings = Settings(data_dir=s3_uri, ui_dir=str(tmp_path / "no-ui"), allowed_hosts=["testserver"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = "/api/v1"
        assert client.get(f"{api}/health").json()["status"] == "ok"
        assert [d["name"] for d in client.get(f"{api}/datasets").json()] == ["ds"]
        assert len(client.get(f"{api}/datasets/ds/clusters").json()["clusters"]) >= 2
        thumb = client.get(f"{api}/datasets/ds/media/s0001", params={"size": "thumb"})
        assert thumb.status_code == 200, thumb.text
        assert settings.thumbnail_cache == tmp_path / "s3cache" / "thumbnails"
        assert list(settings.thumbnail_cache.rglob("*.jpg"))
        r = client.post(f"{api}/datasets/ds/exports", json={"target": "csv", "ids": ["s0001", "s0002"]})
        assert r.status_code == 202, r.text
        view = _wait(client, f"{api}/datasets/ds/exports/{r.json()['id']}")
        assert view["status"] == "done", view
        dl = client.get(f"{api}/datasets/ds/exports/{r.json()['id']}/download")
        assert dl.status_code == 200 and dl.headers["content-type"] == "application/zip"
        assert list((tmp_path / "s3cache" / "exports" / "ds").glob("*.zip"))


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_unreachable_missing_bucket_and_refused_keys_are_one_line(
    s3: S3Server, s3_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = ["stats", "--dataset", "ds"]
    err = _one_line_error(["--data-dir", "s3://no-such-bucket/x", *stats], capsys)
    assert "bucket 'no-such-bucket' does not exist" in err
    # the server opens the store before it binds: the same line, no startup traceback
    serve = ["--data-dir", "s3://no-such-bucket/x", "serve", "--port", str(free_port())]
    assert "bucket 'no-such-bucket' does not exist" in _one_line_error(serve, capsys)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    err = _one_line_error(["--data-dir", s3_uri, *stats], capsys)
    assert "cannot connect to http://127.0.0.1:" in err and "AWS_ENDPOINT_URL" in err
    # a server that checks signatures (moto with auth on: no key is known to it)
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with s3_server() as strict:
        monkeypatch.setenv("AWS_ENDPOINT_URL", strict.endpoint)
        err = _one_line_error(["--data-dir", f"s3://{BUCKET}/x", *stats], capsys)
        assert "refused the credentials" in err and "AWS_SECRET_ACCESS_KEY" in err
        assert s3.env["AWS_SECRET_ACCESS_KEY"] not in err
        with pytest.raises(Unavailable, match="refused the credentials"):
            Store(f"s3://{BUCKET}/x")


def test_storage_options_from_the_environment(tmp_path: Path) -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-central-1",
    }
    assert storage_options_for("s3://b/p", environ=env) == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "aws_region": "eu-central-1",
        "allow_http": "true",
    }
    env["EDGEMINER_STORAGE_OPTIONS"] = json.dumps(
        {"aws_endpoint": "https://s3.example.com", "virtual_hosted_style_request": True}
    )
    opts = storage_options_for("s3://b/p", {"aws_region": "us-west-2"}, environ=env)
    assert opts["aws_endpoint"] == "https://s3.example.com" and "allow_http" not in opts
    assert opts["virtual_hosted_style_request"] == "true" and opts["aws_region"] == "us-west-2"
    # the AWS variables are for s3:// only; a JSON that is not an object is refused with its name
    assert storage_options_for("gs://b/p", environ={"AWS_ACCESS_KEY_ID": "k"}) == {}
    from edgeminer.indexer.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="EDGEMINER_STORAGE_OPTIONS must be a JSON object"):
        storage_options_for("s3://b/p", environ={"EDGEMINER_STORAGE_OPTIONS": "[1]"})
    # two stores never share a local cache folder; a local store keeps its files beside the data
    a = Settings(data_dir="s3://b/one").thumbnail_cache
    b = Settings(data_dir="s3://b/two").thumbnail_cache
    assert a != b and a.name == b.name == "thumbnails"
    assert Settings(data_dir=str(tmp_path)).thumbnail_cache == tmp_path / "_cache"
