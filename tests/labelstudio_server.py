"""A real Label Studio server on 127.0.0.1 for the live push / pull tests.

Label Studio pins its own Django stack, so it lives in its own virtual environment,
``<repo>/.venv-labelstudio`` (``LABEL_STUDIO_VENV`` overrides), made with ``pip install
label-studio==1.23.2`` when it is missing and reused afterwards. The server runs with its data in a
temporary folder, bound to 127.0.0.1 (``--internal-host``; Label Studio's default is 0.0.0.0), with a
known user token (accepted as ``Authorization: Token ...`` because of
``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``) and local-files serving enabled under ``document_root``.

When it cannot be installed or started the tests skip with the reason, except in CI (``CI`` set):
there they fail, since CI must run them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
VERSION = "1.23.2"
VENV = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
USER = "edgeminer@example.com"
PASSWORD = "edgeminer-test-pw"
TOKEN = "edgeminer0test0token0123456789abcdef0000"
#: the first start runs Label Studio's migrations (about 90 s here; longer on a busy machine)
START_TIMEOUT_S = 600.0
INSTALL_TIMEOUT_S = 1800.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip outside CI, fail in CI."""
    if in_ci():
        pytest.fail(f"Label Studio is needed in CI: {reason}")
    pytest.skip(f"Label Studio not available: {reason}")


@dataclass
class LabelStudio:
    url: str
    token: str
    document_root: Path  # LOCAL_FILES_DOCUMENT_ROOT
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=60)


def executable() -> Path:
    """Label Studio's command in its venv, installing it first if needed (skip / fail when that fails)."""
    exe = VENV / "bin" / "label-studio"
    if exe.is_file():
        return exe
    try:
        if not (VENV / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", f"label-studio=={VERSION}"],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        unavailable(f"installing label-studio=={VERSION} into {VENV} failed: {exc} {detail[-500:]!r}")
    if not exe.is_file():
        unavailable(f"{exe} is missing after installing label-studio=={VERSION}")
    return exe



def start(base: Path) -> LabelStudio:
    """Start Label Studio with its data under ``base`` and wait for ``/health``."""
    exe = executable()
    port = free_port()
    data_dir, doc_root, log = base / "ls-data", base / "ls-files", base / "label-studio.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    doc_root.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_", "EDGEMINER_"))},
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(doc_root),
    }
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--host",
        f"http://127.0.0.1:{port}",
        "--port",
        str(port),
        "--username",
        USER,
        "--password",
        PASSWORD,
        "--user-token",
        TOKEN,
        "--data-dir",
        str(data_dir),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = LabelStudio(f"http://127.0.0.1:{port}", TOKEN, doc_root, proc, log)
    _wait_healthy(server)
    return server


def _wait_healthy(server: LabelStudio) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            stop(server)
            unavailable(f"label-studio exited with {server.proc.returncode}: {_tail(server.log)}")
        try:
            if httpx.get(server.url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop(server)
    unavailable(f"label-studio did not answer /health within {START_TIMEOUT_S:.0f} s: {_tail(server.log)}")


def _tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def stop(server: LabelStudio) -> None:
    """Stop the server's process group (the process this module started, and its children)."""
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
            server.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.proc.wait(timeout=10)
