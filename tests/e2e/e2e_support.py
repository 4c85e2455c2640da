"""Helpers of the browser tests and bench/dashboard.py: Debian's Chromium, and `edgeminer serve` in a
subprocess on a free port of 127.0.0.1. (A module with its own name, so importing it never depends on
which conftest.py pytest loaded last.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("EDGEMINER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_browser() -> None:
    if Path(CHROMIUM).is_file():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (`make browser` or `apt-get install -y chromium`)"
    if _in_ci():
        pytest.fail(message + " (CI is set, so browser tests may not skip)")
    pytest.skip(message)



@dataclass
class Server:
    url: str
    data_dir: Path
    api_key: str | None
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str) -> str:
        return f"{self.url}/api/v1{path}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_server(
    data_dir: Path, log: Path, *, api_key: str | None = None, media_roots: tuple[Path, ...] = ()
) -> Server:
    """`edgeminer serve` in a subprocess on a free port; returns once /api/v1/health answers."""
    port = free_port()
    script = Path(sys.executable).with_name("edgeminer")
    exe = [str(script)] if script.is_file() else [sys.executable, "-m", "edgeminer.service.cli"]
    cmd = [*exe, "--data-dir", str(data_dir), "serve", "--port", str(port)]
    cmd += ["--host", "127.0.0.1"]
    if api_key:
        cmd += ["--api-key", api_key]
    for root in media_roots:
        cmd += ["--media-root", str(root)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGEMINER_API_KEY", None)
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", data_dir, api_key, proc, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edgeminer serve exited with {proc.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.api("/health"), timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"edgeminer serve did not answer within 90 s:\n{server.log_text()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def give_images(store: Any, name: str, media: Path) -> None:
    """Real PNG files for a synthetic dataset's rows (one colour per cluster: ids are c<cluster>-<n>), the
    rows' uris pointed there."""
    import pyarrow as pa
    from PIL import Image

    folder = media / name
    folder.mkdir(parents=True, exist_ok=True)
    ids = store.query(name, columns=["id"])["id"].to_pylist()
    uris = []
    for sid in ids:
        shade = 60 + 70 * int(sid[1])
        path = folder / f"{sid}.png"
        Image.new("RGB", (32, 32), (shade, 200 - shade // 2, 120)).save(path)
        uris.append(str(path))
    store.update_columns(name, pa.table({"id": ids, "uri": uris}))


def mine_from_cluster(page: Any, cid: int, budget: int = 12) -> list[str]:
    """In the dashboard's Mine tab: mine ``budget`` rows from cluster ``cid`` (exported rows included); the
    ids of the tiles shown."""
    page.click(".tabs button[data-tab=mine]")
    page.select_option("#mine-form select[name=source]", "cluster")
    page.select_option("#mine-form select[name=cluster]", str(cid))
    page.fill("#mine-form input[name=budget]", str(budget))
    page.check("#mine-form input[name=include_exported]")
    page.click("#mine-form button[type=submit]")
    page.wait_for_selector("#mine-grid .tile", timeout=60_000)
    return page.eval_on_selector_all("#mine-grid .tile", "ts => ts.map(t => t.dataset.id)")  # type: ignore[no-any-return]
