"""HTTP-level hardening, each test reproducing an attack against a real server on 127.0.0.1:

- DNS rebinding: a request whose Host header is not a name the server answers to is refused (400), even
  a write whose Origin equals that Host, and the dashboard's files too;
- request bodies over ``max_body_bytes``: 413 before the body is read (announced length) or as soon as
  a streamed body passes the cap, without the server's memory growing with the body;
- leaks: job responses never carry pid / host / runner; a missing or truncated data file is a 500
  naming ``edgeminer check``, never a 404 or a message with server paths and rustc source locations;
- ``edgeminer serve`` on a non-loopback address without an API key refuses to start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import make_synthetic
from fastapi.testclient import TestClient

from edgeminer.indexer.store import Store
from edgeminer.service import cli
from edgeminer.service.api.routes.jobs import public_job
from edgeminer.service.settings import Settings

PROBLEM = "application/problem+json"
NEW = {"name": "cars", "dim": 4, "embedder": {"kind": "precomputed"}}
LEAKS = ("/rustc/", ".cargo", "lance error", "LanceError", "__samples.lance")


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"] == PROBLEM
    return resp.json()  # type: ignore[no-any-return]


@pytest.fixture
def local(api_settings: Settings) -> Settings:
    """api_settings as a real deployment has them: no extra allowed host (the fixture allows TestClient's)."""
    return api_settings.model_copy(update={"allowed_hosts": []})


# -- 6: Host allow-list (DNS rebinding) ---------------------------------------------------------------


def test_rebound_host_is_refused_everywhere(live_server: Callable[..., str], local: Settings, tmp_path: Path) -> None:
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html><title>edgeminer dashboard</title>")
    base = live_server(local, ui_dir=str(ui))
    port = base.rsplit(":", 1)[1]
    evil = f"evil.example:{port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        # the attack: a page on evil.example re-binds its name to 127.0.0.1; its request is same-origin
        rebound = http.post("/api/v1/datasets", json=NEW, headers={"Host": evil, "Origin": f"http://{evil}"})
        body = problem(rebound, 400)
        assert "Host header 'evil.example' is not one this server answers to" in body["detail"]
        assert "EDGEMINER_ALLOWED_HOSTS" in body["detail"]
        assert http.get("/api/v1/datasets").json() == []  # nothing was created
        for path in ("/api/v1/health", "/api/v1/datasets", "/", "/index.html", "/openapi.json", "/docs"):
            problem(http.get(path, headers={"Host": evil}), 400)
        problem(http.get("/", headers={"Host": "127.0.0.1.evil.example"}), 400)
        problem(http.get("/", headers={"Host": "localhost.evil.example"}), 400)
        # the loopback names, with or without a port, are always answered
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
            assert "edgeminer dashboard" in http.get("/", headers={"Host": host}).text, host
        assert http.get("/api/v1/health").status_code == 200


def test_allowed_hosts_setting(live_server: Callable[..., str], local: Settings) -> None:
    base = live_server(local, allowed_hosts=["edgeminer.lan", "*.corp.example"])
    with httpx.Client(base_url=base, timeout=30) as http:
        for host in ("edgeminer.lan", "EDGEMINER.LAN:8000", "a.corp.example", "b.a.corp.example:1"):
            assert http.get("/api/v1/health", headers={"Host": host}).status_code == 200, host
        for host in ("corp.example", "evil.example", "edgeminer.lan.evil.example", "xcorp.example"):
            problem(http.get("/api/v1/health", headers={"Host": host}), 400)
        # a same-origin write through an allowed name still passes the cross-site check
        same = http.post(
            "/api/v1/datasets", json=NEW, headers={"Host": "edgeminer.lan", "Origin": "http://edgeminer.lan"}
        )
        assert same.status_code == 201, same.text
    anything = live_server(local, allowed_hosts=["*"])
    assert httpx.get(anything + "/api/v1/health", headers={"Host": "evil.example"}, timeout=30).status_code == 200


def test_the_host_setting_is_answered(make_client: Callable[..., TestClient], local: Settings) -> None:
    named = make_client(local, host="gpu-box.lan")
    assert named.get("/api/v1/health", headers={"Host": "gpu-box.lan:8000"}).status_code == 200
    assert named.get("/api/v1/health", headers={"Host": "other.lan"}).status_code == 400
    wildcard = make_client(local, host="0.0.0.0")
    assert wildcard.get("/api/v1/health", headers={"Host": "0.0.0.0"}).status_code == 400
    assert wildcard.get("/api/v1/health", headers={"Host": "evil.example"}).status_code == 400
    assert wildcard.get("/api/v1/health", headers={"Host": "localhost"}).status_code == 200


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEMINER_ALLOWED_HOSTS", "a.example, b.example")
    assert Settings().allowed_hosts == ["a.example", "b.example"]
    monkeypatch.setenv("EDGEMINER_ALLOWED_HOSTS", '["c.example"]')
    assert Settings().allowed_hosts == ["c.example"]
    monkeypatch.delenv("EDGEMINER_ALLOWED_HOSTS")
    assert Settings().allowed_hosts == []


# -- 7: request body limit -------------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@pytest.fixture
def peak_rss() -> Iterator[Callable[[], int]]:
    """``growth()`` -> how far this process's resident memory rose above where it was when the test
    started (the live server runs in this process): the peak when the kernel lets us reset it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        field = "VmHWM"
    except OSError:
        field = "VmRSS"
    start = _status_bytes("VmRSS")
    yield lambda: _status_bytes(field) - start


def test_announced_oversized_body_is_refused_before_it_is_read(
    live_server: Callable[..., str], local: Settings
) -> None:
    base = live_server(local)
    port = int(base.rsplit(":", 1)[1])
    announced = 150 * 1024 * 1024
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            "POST /api/v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {announced}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"[" + b"0," * 32_000)  # a bit of the body, then wait for the answer
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # the server answers without waiting for 150 MB (times out today)
            if not chunk:
                break
            reply += chunk
    assert time.monotonic() - started < 5
    head_text, _, body = reply.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"application/problem+json" in head_text
    assert b"payload-too-large" in body and b"EDGEMINER_MAX_BODY_BYTES" in body
    assert httpx.get(base + "/api/v1/datasets", timeout=30).json() == []


def test_streamed_body_is_cut_at_the_cap(
    live_server: Callable[..., str], local: Settings, peak_rss: Callable[[], int]
) -> None:
    cap = 4 * 1024 * 1024
    base = live_server(local, max_body_bytes=cap)
    chunk = b"0," * (512 * 1024)  # 1 MiB, the same object every time: the client holds no more than this

    def body() -> Iterator[bytes]:  # no length: sent chunked, 150 MiB in all
        yield b"["
        for _ in range(150):
            yield chunk
        yield b"0]"

    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=30) as http:
        resp = http.post("/api/v1/datasets", content=body(), headers={"Content-Type": "application/json"})
    elapsed = time.monotonic() - started
    body_json = problem(resp, 413)
    assert body_json["type"].endswith("payload-too-large") and str(cap) in body_json["detail"]
    growth = peak_rss()
    assert growth < 50 * 1024 * 1024, f"server memory rose {growth >> 20} MiB for a body it refused"
    assert elapsed < 10
    # under the cap, chunked or not, the body is read as before
    with httpx.Client(base_url=base, timeout=30) as http:
        small = [b"[", b"0," * 1000, b"0]"]
        problem(http.post("/api/v1/datasets", content=iter(small), headers={"Content-Type": "application/json"}), 422)
        big_but_ok = b"[" + b"0," * (cap // 2 - 16) + b"0]"
        problem(http.post("/api/v1/datasets", content=big_but_ok, headers={"Content-Type": "application/json"}), 422)
        assert http.post("/api/v1/datasets", json=NEW).status_code == 201


def test_the_default_cap_admits_an_image_upload(make_client: Callable[..., TestClient], api_settings: Settings) -> None:
    from edgeminer.service.api.routes.mining import MAX_IMAGE_BYTES

    largest_image_json = MAX_IMAGE_BYTES * 4 // 3 + 4 + 64 * 1024  # base64 of the largest image, plus JSON
    assert Settings().max_body_bytes >= largest_image_json
    client = make_client(api_settings, max_body_bytes=1000)
    body = problem(client.post("/api/v1/datasets", content=b"x" * 1001), 413)  # type: ignore[arg-type]
    assert body["max_body_bytes"] == 1000
    assert client.post("/api/v1/datasets", json=NEW).status_code == 201
    unlimited = make_client(api_settings, max_body_bytes=0)
    assert unlimited.post("/api/v1/datasets", content=b"[" + b"0," * 5000 + b"0]").status_code == 422
    spec = client.get("/openapi.json").json()
    assert "413" in spec["paths"]["/api/v1/datasets"]["post"]["responses"]


# -- 8: leaks ---------------------------------------------------------------------------------------


def test_job_responses_hide_process_bookkeeping_and_store_paths(
    live_server: Callable[..., str], local: Settings
) -> None:
    make_synthetic(Store(local.data_dir), "synth", n_clusters=2, per_cluster=10, dim=8)
    _damage(Path(local.data_dir), "truncate")  # the job fails fast, on a lance error full of paths
    base = live_server(local)
    private = {"pid", "host", "runner"}
    with httpx.Client(base_url=base + "/api/v1", timeout=60) as http:
        started = http.post("/datasets/synth/analyze", json={})
        assert started.status_code in (200, 201, 202), started.text
        job = started.json()
        assert not private & set(job), job
        deadline = time.monotonic() + 60
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = http.get(f"/jobs/{job['id']}").json()
        assert job["status"] == "failed", job
        assert not private & set(job)
        assert "cannot be read" in job["error"] and "edgeminer check --dataset" in job["error"]
        listed = http.get("/jobs").json()
        assert listed and all(not private & set(j) for j in listed)
        for text in (str(job), str(listed)):
            assert not any(leak in text for leak in (*LEAKS, local.data_dir)), text


def test_public_job_scrubs_storage_errors() -> None:
    doc = {
        "id": "j1",
        "dataset": "synth",
        "pid": 4242,
        "host": "box",
        "runner": "r",
        "error": "lance error: Not found: data/db/synth__samples.lance/data/x.lance, "
        "/root/.cargo/registry/src/lance-io-13.0.0/src/local.rs:273:40",
        "errors": [{"item": "a", "message": "LanceError(IO): /rustc/abc/library/core/src/ops/function.rs:250:5"}],
    }
    out = public_job(doc)
    assert not {"pid", "host", "runner"} & set(out)
    assert "edgeminer check --dataset synth" in out["error"]
    assert not any(leak in str(out) for leak in LEAKS)
    assert public_job({"id": "j2", "error": "manifest.csv row 4: no 'uri' column"})["error"].startswith("manifest")


def _damage(data_dir: Path, how: str) -> None:
    table = data_dir / "synth__samples.lance"
    files = sorted((table / "data").glob("*.lance"))
    assert files, list(table.iterdir())
    if how == "truncate":
        for f in files:
            with f.open("r+b") as fh:
                fh.truncate(f.stat().st_size // 2)
    elif how == "delete":
        for f in files:
            f.unlink()
    else:  # the table's manifests gone: LanceDB no longer finds the table the catalog lists
        for f in (table / "_versions").iterdir():
            f.unlink()


@pytest.mark.parametrize("how", ["truncate", "delete", "manifest"])
def test_damaged_data_file_is_not_a_404_and_leaks_no_paths(
    make_client: Callable[..., TestClient], api_settings: Settings, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_synthetic(Store(api_settings.data_dir), "synth", n_clusters=2, per_cluster=10, dim=8)
    _damage(Path(api_settings.data_dir), how)
    client = make_client(api_settings)
    paths = [
        "/api/v1/datasets/synth/samples",
        "/api/v1/datasets/synth/samples/c0-000",
        "/api/v1/datasets/synth/points",
        "/api/v1/datasets/synth/points/ids",
        "/api/v1/datasets/synth",
    ]
    for path in paths:
        resp = client.get(path)
        assert resp.status_code == 500, (path, resp.status_code, resp.text[:400])
        body = resp.json()
        assert resp.headers["content-type"] == PROBLEM
        assert body["type"].endswith("dataset-unreadable"), (path, body)
        assert "dataset 'synth' cannot be read" in body["detail"]
        assert "edgeminer check --dataset synth" in body["detail"]
        for leak in (*LEAKS, str(api_settings.data_dir), "tmp/"):
            assert leak not in resp.text, (path, leak, resp.text)
        logged = [r for r in caplog.records if body["reference"] in r.getMessage()]
        assert logged, "the store's own error goes to the server log, with the reference"
    assert client.get("/api/v1/datasets/nope/samples").status_code == 404  # an unknown dataset still is


# -- 9: serve on a non-loopback address ---------------------------------------------------------------


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn.run replaced by a recorder; EDGEMINER_API_KEY unset."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("EDGEMINER_API_KEY", raising=False)
    monkeypatch.delenv("EDGEMINER_ALLOWED_HOSTS", raising=False)
    return calls


def test_serve_refuses_an_exposed_address_without_a_key(
    no_run: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db")
    for host in ("0.0.0.0", "::", "192.168.1.20", "gpu-box.lan"):
        assert cli.main(["--data-dir", db, "serve", "--host", host]) == 1, host
        err = capsys.readouterr().err
        assert f"refusing to serve on {host} without an API key" in err
        assert "EDGEMINER_API_KEY" in err and "--insecure-no-key" in err
    assert no_run == []  # refused before binding


def test_serve_starts_with_a_key_or_the_explicit_flag(
    no_run: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "db")
    assert cli.main(["--data-dir", db, "serve", "--host", "0.0.0.0", "--insecure-no-key"]) == 0
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0 without an API key" in err
    assert "--allowed-host" in err and "localhost" in err  # which Host names it answers to
    assert cli.main(["--data-dir", db, "serve", "--host", "0.0.0.0", "--api-key", "k", "--allowed-host", "box"]) == 0
    assert "box" in capsys.readouterr().err
    monkeypatch.setenv("EDGEMINER_API_KEY", "from-env")
    assert cli.main(["--data-dir", db, "serve", "--host", "0.0.0.0"]) == 0
    monkeypatch.delenv("EDGEMINER_API_KEY")
    for host in ("127.0.0.1", "localhost", "::1"):
        assert cli.main(["--data-dir", db, "serve", "--host", host]) == 0
        assert "warning" not in capsys.readouterr().err
    assert [c["host"] for c in no_run] == ["0.0.0.0", "0.0.0.0", "0.0.0.0", "127.0.0.1", "localhost", "::1"]


def test_serve_exits_1_in_a_real_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEMINER_API_KEY", "EDGEMINER_DEBUG")}
    cli = [sys.executable, "-m", "edgeminer.service.cli"]
    cmd = [*cli, "--data-dir", str(tmp_path / "db"), "serve", "--host", "0.0.0.0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=Path(__file__).parents[2])
    assert proc.returncode == 1, proc.stderr
    assert "refusing to serve on 0.0.0.0 without an API key" in proc.stderr


def test_the_container_needs_a_key() -> None:
    """The image serves on 0.0.0.0, so compose must require EDGEMINER_API_KEY (or the image pass the flag)."""
    root = Path(__file__).parents[2] / "docker"
    dockerfile = (root / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert "0.0.0.0" in cmd
    if "--insecure-no-key" not in cmd:
        compose = (root / "compose.yml").read_text()
        assert "EDGEMINER_API_KEY: ${EDGEMINER_API_KEY:?" in compose
