"""A real multi-process Ray cluster (issue 11, part 5): a head and a second node started as separate processes on
127.0.0.1 (``ray start --head`` / ``ray start --address``, one CPU each), the Ray ingest pointed at it with
``--ray-address`` against a dataset on the loopback S3 server (tests/s3server.py), and its result checked
against the local engine's on the same images.

The cluster is this test's own: a private ``--temp-dir`` and private ports, and its teardown ends only the
processes it started (the ``ray start --block`` processes, their children, and anything else whose command
line names its temp dir), never ``ray stop`` (which would end every Ray on the machine, another test's or
another user's too).

No ``__init__.py`` in this folder on purpose: a package named ``ray`` here would shadow the real one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import ray
from raysupport import assert_same_rows, comparable_run_doc, make_images, rows_by_id
from s3server import BUCKET, S3Server, s3_server
from servers import free_port

from edgeminer.indexer.store import Store

RAY = Path(sys.executable).parent / "ray"
START_TIMEOUT = 120.0


@dataclass
class Cluster:
    """A Ray cluster of processes this test started: the head's GCS address, the ``ray start --block``
    processes and the temp dirs (one per node)."""

    address: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """End this cluster's processes only: each ``ray start`` process and its process tree, then any
        process left whose command line names one of this cluster's temp dirs; SIGTERM, then SIGKILL."""
        victims: dict[int, psutil.Process] = {}
        for proc in self.procs:
            try:
                parent = psutil.Process(proc.pid)
                victims[parent.pid] = parent
                victims.update({c.pid: c for c in parent.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(p.info.get("cmdline") or [])
            if any(t in cmdline for t in self.temp_dirs):
                victims[p.pid] = p
        victims.pop(os.getpid(), None)
        for p in victims.values():
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(victims.values()), timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for t in self.temp_dirs:
            shutil.rmtree(t, ignore_errors=True)


def _node_ports() -> list[str]:
    """Private ports for one node's side services (two nodes on one host must not share the defaults)."""
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port"]
    names += ["--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port", "--dashboard-port"]
    return [arg for name in names for arg in (name, str(free_port()))]


def _start_node(cluster: Cluster, extra: list[str]) -> None:
    temp = tempfile.mkdtemp(prefix=f"em-ray2-{uuid.uuid4().hex[:6]}-")  # short: socket paths < 108 chars
    cluster.temp_dirs.append(temp)
    cmd = [str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    cmd += ["--disable-usage-stats", "--temp-dir", temp, *_node_ports(), *extra]
    log = open(os.path.join(temp, "ray-start.log"), "wb")  # noqa: SIM115 - kept open for the process's life
    env = {**os.environ, **DRIVER_ENV, "RAY_USAGE_STATS_ENABLED": "0"}  # a joining node needs the token too
    cluster.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))


def _wait_port(port: int, cluster: Cluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in cluster.procs):
            raise RuntimeError(f"ray start exited:\n{_start_log(cluster)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not listen on 127.0.0.1:{port} within {START_TIMEOUT:.0f} s")


#: a driver connecting to an explicit address sends the token `ray start` made (~/.ray/auth_token) only in
#: token mode; Ray reads the mode when it loads, so every driver here is a separate process
DRIVER_ENV = {"RAY_AUTH_MODE": "token"}
#: variables of this process that would point the drivers elsewhere than the loopback S3 server
NOT_INHERITED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "EDGEMINER_STORAGE_OPTIONS")
NODES_SCRIPT = "import ray, sys; ray.init(address=sys.argv[1]); print(sum(bool(n['Alive']) for n in ray.nodes()))"


def _inherited() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}


def _alive_nodes(address: str) -> int:
    """How many of the cluster's nodes are alive, asked by a separate driver process."""
    env = {**_inherited(), **DRIVER_ENV}
    out = subprocess.run(
        [sys.executable, "-c", NODES_SCRIPT, address], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.strip().splitlines()[-1])


def _edgeminer(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``edgeminer`` command as a separate process (the Ray driver), with ``env`` added."""
    exe = Path(sys.executable).parent / "edgeminer"
    return subprocess.run([str(exe), *args], env={**_inherited(), **env}, capture_output=True, text=True, timeout=600)


def _wait_two_nodes(address: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    alive = 0
    while time.monotonic() < deadline:
        alive = _alive_nodes(address)
        if alive >= 2:
            return
        time.sleep(1)
    raise RuntimeError(f"the second Ray node did not join within {START_TIMEOUT:.0f} s ({alive} alive)")


def _start_log(cluster: Cluster) -> str:
    return Path(cluster.temp_dirs[-1], "ray-start.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    """A Ray head and a second node, separate processes on 127.0.0.1, one CPU each; always torn down."""
    if ray.is_initialized():  # another module's session: this test's driver must be the cluster's
        ray.shutdown()
    port = free_port()
    cluster = Cluster(address=f"127.0.0.1:{port}")
    try:
        _start_node(cluster, ["--head", "--port", str(port), "--include-dashboard=false"])
        _wait_port(port, cluster)
        _start_node(cluster, ["--address", cluster.address])
        try:
            _wait_two_nodes(cluster.address)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; the second node's ray start said:\n{_start_log(cluster)}") from None
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.mark.slow
def _map_columns(store: Store) -> dict[str, tuple[float, float, int]]:
    """id -> (x, y, cluster) of every row the analysis placed."""
    table = store.query("ds", where="x IS NOT NULL", columns=["id", "x", "y", "cluster"])
    return {r["id"]: (round(r["x"], 5), round(r["y"], 5), r["cluster"]) for r in table.to_pylist()}


def test_ingest_on_two_node_cluster_equals_local_engine(two_nodes: Cluster, s3: S3Server) -> None:
    work = Path(tempfile.mkdtemp(prefix="em-ray2-data-"))
    env = {**s3.env, **DRIVER_ENV, "EDGEMINER_CACHE_DIR": str(work / "s3cache")}
    try:
        manifest, model = make_images(work / "images")
        prefix = uuid.uuid4().hex[:12]
        local_uri, ray_uri = f"s3://{BUCKET}/{prefix}-local", f"s3://{BUCKET}/{prefix}-ray"
        common = ["ingest", str(manifest), "--dataset", "ds", "--embedder", "torchscript", "--model-file", str(model)]
        common += ["--batch-size", "8", "--mc-passes", "3", "--device", "cpu", "--quiet"]
        local = _edgeminer(["--data-dir", local_uri, *common], env)
        assert local.returncode == 0, local.stderr[-3000:]
        ray_args = ["--engine", "ray", "--ray-address", two_nodes.address]
        on_ray = _edgeminer(["--data-dir", ray_uri, *common, *ray_args], env)
        assert on_ray.returncode == 0, on_ray.stderr[-3000:]
        # the work ran on the cluster, on both nodes (one CPU each: the actor holds one, decode tasks the other)
        assert f"ray at {two_nodes.address}: 2 node(s)" in on_ray.stdout, on_ray.stdout
        assert _alive_nodes(two_nodes.address) == 2  # the engine disconnected; the cluster is still up

        with pytest.MonkeyPatch.context() as mp:  # this process reads both datasets from the loopback S3
            for var, value in env.items():
                mp.setenv(var, value)
            for var in NOT_INHERITED:
                mp.delenv(var, raising=False)
            s_local, s_ray = Store(local_uri), Store(ray_uri)
            assert_same_rows(rows_by_id(s_local), rows_by_id(s_ray))
            assert s_ray.count("ds", "status = 'error'") == 4
            assert s_local.get_dataset("ds").embedder == s_ray.get_dataset("ds").embedder
            run_local, run_ray = (s.list_docs("ds", "run")[-1] for s in (s_local, s_ray))
            assert comparable_run_doc(s_local, run_local["id"]) == comparable_run_doc(s_ray, run_ray["id"])
            version = s_ray.version("ds")

            # a second run on the cluster changes nothing (its exit code is the local engine's for a re-run that
            # found nothing new, whatever that is: cmd_ingest decides it from the same report)
            again = _edgeminer(["--data-dir", ray_uri, *common, *ray_args], env)
            assert again.returncode == 0, again.stderr[-3000:]
            assert "0 new, 0 updated" in again.stdout and f"version {version} -> {version}" in again.stdout, again
            assert Store(ray_uri).version("ds") == version

            # the scaled analysis on the cluster: fitted on a 20-row sample, the other rows placed by Ray tasks
            # on the two nodes; then the same analysis with local worker processes must give the same map
            analyze = ["--data-dir", ray_uri, "analyze", "--dataset", "ds", "--sample-rows", "20", "--quiet"]
            on_cluster = _edgeminer([*analyze, "--engine", "ray", "--ray-address", two_nodes.address], env)
            assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
            mapped = _map_columns(Store(ray_uri))
            assert len(mapped) == Store(ray_uri).count("ds", "status = 'ok'")
            locally = _edgeminer([*analyze, "--engine", "local", "--refit"], env)
            assert locally.returncode == 0, locally.stderr[-3000:]
            assert _map_columns(Store(ray_uri)) == mapped
    finally:
        shutil.rmtree(work, ignore_errors=True)
