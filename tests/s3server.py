"""A loopback S3 server for the tests, and a small dataset of real PNGs to put on it.

The server is moto's server mode (``moto_server`` from the ``moto[server]`` dev extra), started as a subprocess
on 127.0.0.1 and a free port; :class:`S3Server` makes buckets, lists keys and gives the standard AWS
variables that point edgeminer at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from servers import free_port

#: the credentials moto accepts (any, when IAM is not enforced) and the region the buckets live in
ACCESS_KEY = "edgeminer-test"
SECRET_KEY = "edgeminer-test-secret"
REGION = "us-east-1"
#: the bucket the session server starts with, and the classes of the test dataset
BUCKET = "edgeminer-test"
CLASSES = ["cat", "dog", "bird"]



@dataclass
class S3Server:
    """A running moto S3 server: its endpoint and the environment that points boto / Lance at it."""

    endpoint: str
    process: subprocess.Popen[bytes]
    buckets: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (a plain S3 PUT: moto accepts it unsigned) and return it."""
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        self.buckets.append(name)
        return name

    def delete_key(self, bucket: str, key: str) -> None:
        """Delete one object (signed, with boto3: moto's server refuses an anonymous DELETE)."""
        import boto3  # moto's own dependency

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        client.delete_object(Bucket=bucket, Key=key)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The object keys under ``prefix`` in ``bucket`` (ListObjectsV2, first 1000)."""
        import xml.etree.ElementTree as ET

        url = f"{self.endpoint}/{bucket}?list-type=2&prefix={urllib.parse.quote(prefix)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            root = ET.fromstring(resp.read())
        ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        return [el.text or "" for el in root.iter(f"{ns}Key")]


def _wait_until_up(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=2) as resp:
                resp.read()
            return
        except urllib.error.HTTPError:  # it answers (a server checking signatures refuses the anonymous GET)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {endpoint} within {timeout:.0f} s")


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start ``moto_server -H 127.0.0.1 -p <free port>`` (the venv's own), yield it, stop it."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, proc)
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_manifest(folder: Path, n: int = 90, *, start: int = 0, seed: int = 0) -> Path:
    """``n`` rows of real 16x16 PNGs in three tight blobs of 8-d vectors (one per class); the model is wrong
    on most of the 'bird' blob (predicts 'dog'); every third row is unlabeled."""
    rng = np.random.default_rng(seed)
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    centres = np.eye(8, dtype=np.float64)[:3] * 5.0
    rows = []
    for i in range(start, start + n):
        c = i % 3
        path = img / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        pred = 1 if c == 2 and i % 5 else c
        probs = [0.1, 0.1, 0.1]
        probs[pred] = 0.8
        row = {
            "id": f"s{i:04d}",
            "uri": str(path),
            "embedding": (centres[c] + rng.normal(0, 0.3, 8)).round(5).tolist(),
            "probs": probs,
            "classes": CLASSES,
            "split": "unlabeled" if i % 3 == 0 and i % 9 else "train",
        }
        if row["split"] == "train":
            row["label"] = CLASSES[c]
        rows.append(row)
    path = folder / f"manifest-{start}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
