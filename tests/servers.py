"""A real uvicorn server on 127.0.0.1 for tests, serving an app from a daemon thread."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for a server a test starts as a subprocess)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving ``app`` from a daemon thread on an already-bound 127.0.0.1 socket."""

    def __init__(self, app: Any):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it; without it every response waits ~40 ms (Nagle + delayed ACK)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


CHECKS = "not_a_server_error,content_type_conformance,response_schema_conformance,status_code_conformance"


def wait_job(client: Any, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll ``/api/v1/jobs/{job_id}`` through ``client`` (a TestClient or an httpx.Client on a live server)
    until the job is no longer queued or running; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if doc["status"] not in ("queued", "running"):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)


def failures(stdout: str) -> str:
    """The FAILURES / ERRORS sections of a schemathesis report (long query strings cut)."""
    start = min((i for i in (stdout.find("= FAILURES ="), stdout.find("= ERRORS =")) if i >= 0), default=0)
    end = stdout.find("= WARNINGS =")
    text = stdout[start : end if end > start else None]
    return "\n".join(line[:400] for line in text.splitlines())[:8000]


def run_schemathesis(
    base_url: str, cwd: Path, *extra: str, max_examples: int = 5, timeout: float = 600
) -> subprocess.CompletedProcess:
    """schemathesis' CLI against ``base_url``/openapi.json: bounded (few examples, fixed seed, no shrinking)."""
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(exe),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--seed",
        "1",
        "--workers",
        "1",
        "--no-shrink",
        "--request-timeout",
        "60",
        *extra,
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
