"""The Ray engine for ingest (issue 11): the local engine's steps (indexer/pipeline.py) as a Ray Data pipeline.

What runs where:

- the **driver** (the process running ``edgeminer ingest --engine ray``) reads the source, fingerprints the
  records and skips the unchanged ones (one store query per chunk, as the local engine does), and puts the
  rest into Ray's object store as blocks of chunks. It streams the finished chunks back and writes them with
  :meth:`Store.upsert_samples` (the local engine's idempotent merge by id), a few thousand rows per write,
  then builds the indexes and closes the run document;
- **tasks** decode the images of a chunk (read, crop, preprocess), on any node;
- an **actor pool** holds the model (one GPU per actor when it runs on CUDA): each actor embeds a chunk in
  one batch and builds its rows (vectors, scores, predictions, error rows) with the local engine's functions.

One Ray row is one chunk of ``batch_size`` records, so each batch the model sees is the batch the local
engine embeds: the same vectors, the same error rows, the same MC-dropout seeds.

Fault tolerance (Ray Data's defaults, which Ray 2.60 no longer lets a caller set per call): a decode task
whose worker dies is retried, a dead actor is restarted and its chunk retried, for as long as it takes (a
file that crashes its worker every time would be retried on and on: Pillow raises on bad files rather than
crash, and those become error rows). The driver counts each chunk once (by its sequence number) and the
upsert is idempotent by id, so a killed worker loses no row and duplicates none. If the driver itself dies,
re-run: what was written is skipped by fingerprint.

Ray is an optional dependency (``pip install 'edgeminer[ray]'``); this module imports it inside functions.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import math
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from edgeminer.indexer.embedders import Embedder, load_embedder
from edgeminer.indexer.errors import NotSupported, Unavailable, ValidationFailed
from edgeminer.indexer.pipeline import (
    WRITE_ROWS,
    ChunkRows,
    IngestReport,
    IngestRun,
    ProgressFn,
    RowSpec,
    RowWriter,
    abort_ingest,
    build_chunk_rows,
    changed_chunks,
    decode_record,
    finish_ingest,
    record_ingest,
    start_ingest,
)
from edgeminer.indexer.store import Store

INSTALL_HINT = "the Ray engine needs Ray: pip install 'edgeminer[ray]'"
#: blocks the source's chunks are grouped into: enough to keep every decode task and actor busy with some to
#: spare, few enough that Ray's per-call cost is small; more on big inputs, where a block holds at most
#: MAX_BLOCK_CHUNKS chunks (a block's decoded images are in memory at once: 8 x 64 images of 224 x 224 x 3
#: float32 are ~300 MB)
BLOCKS = 64
MAX_BLOCK_CHUNKS = 8
#: seconds to wait for a TCP connection to a --ray-address before calling it unreachable
CONNECT_TIMEOUT = 5.0

EmbedderFactory = Callable[[], Embedder]


@dataclass
class RayIngestReport(IngestReport):
    """An :class:`IngestReport` plus where the work ran: the Ray address (``local`` for a Ray started for this
    ingest) and the node ids that decoded and embedded."""

    engine: str = "ray"
    address: str = "local"
    nodes: dict[str, list[str]] = field(default_factory=dict)  # "decode" / "embed" -> node ids

    def summary(self) -> str:
        decode, embed = self.nodes.get("decode", []), self.nodes.get("embed", [])
        used = len(set(decode) | set(embed))
        where = f"ray at {self.address}: {used} node(s) (decode on {len(decode)}, embed on {len(embed)})"
        return f"{super().summary()}\n  {where}"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`NotSupported` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError:
        raise NotSupported(INSTALL_HINT) from None
    return ray


# ---------------------------------------------------------------------------------------------
# connecting
# ---------------------------------------------------------------------------------------------


def _check_reachable(address: str) -> None:
    """A ``host:port`` or ``ray://host:port`` that accepts no TCP connection: :class:`Unavailable` at once
    (Ray itself would retry for a minute)."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValidationFailed(
            f"--ray-address {address!r}: expected auto, host:port (the head's GCS port) or ray://host:10001"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise Unavailable(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one with `ray start --head` "
            "or check --ray-address"
        ) from None


def _quiet_ray_data(ray: Any) -> None:
    """Our own progress bar instead of Ray Data's, and no per-run log lines on the terminal."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextmanager
def ray_session(address: str | None = None) -> Iterator[str]:
    """Connect to Ray for one ingest and yield the address used.

    Already connected (``ray.init`` done by the caller): that session, left running. ``address`` given
    (``auto``, ``host:port``, ``ray://host:port``): connect to that cluster, disconnect at the end. Neither:
    start a local Ray on 127.0.0.1 with this machine's CPUs and no dashboard, its logs in a temporary folder
    (removed after a clean run), shut down at the end. An address that does not answer: :class:`Unavailable`.
    """
    ray = import_ray()
    if ray.is_initialized():
        _quiet_ray_data(ray)
        yield "existing session"
        return
    temp_dir = None
    if address:
        if address != "auto":
            _check_reachable(address)
        kwargs: dict[str, Any] = {"address": address}
    else:
        temp_dir = tempfile.mkdtemp(prefix="edgeminer-ray-")  # short: Ray's socket paths must stay < 108 chars
        kwargs = {
            "address": "local",  # never join a cluster someone else started on this machine
            "num_cpus": os.cpu_count() or 1,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
            "_temp_dir": temp_dir,
        }
    try:
        ray.init(logging_level=logging.WARNING, log_to_driver=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a cluster that is not there or refuses us: one line
        text = str(exc).strip()
        if "InvalidAuthToken" in text or "AuthenticationError" in type(exc).__name__:
            reason = (
                "the cluster requires its token: set RAY_AUTH_MODE=token and give the token in ~/.ray/auth_token "
                "or RAY_AUTH_TOKEN"
            )
        else:
            reason = text.splitlines()[0][:300] if text else type(exc).__name__
        raise Unavailable(f"cannot connect to Ray at {address or 'a new local instance'}: {reason}") from None
    _quiet_ray_data(ray)
    ok = False
    try:
        yield address or "local"
        ok = True
    finally:
        ray.shutdown()
        if temp_dir and ok:
            shutil.rmtree(temp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the steps run by Ray
# ---------------------------------------------------------------------------------------------


def preprocessor(embedder: Embedder) -> Any:
    """A copy of ``embedder`` without its model (torch modules, tokenizer), for the decode tasks: they only
    call ``preprocess``, which needs the image size and normalisation, not the weights."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return embedder
    light = copy.copy(embedder)
    for name, value in list(vars(light).items()):
        if isinstance(value, torch.nn.Module) or name == "_tokenizer":
            setattr(light, name, None)
    return light


def load_actor_embedder(config: dict[str, Any], device: str, seed: int) -> Embedder:
    """The default :data:`EmbedderFactory`: the dataset's embedder rebuilt from its record on the actor's node
    (the model file or weights must be at the same path there), with the driver's MC-dropout seed."""
    embedder = load_embedder(config, device=device)
    if hasattr(embedder, "seed"):
        embedder.seed = seed
    return embedder


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def decode_chunks(batch: pa.Table, pre: Any) -> pa.Table:
    """Ray task: decode the images of each chunk in ``batch`` (its records are pickled in ``payload``)."""
    node = _node_id()
    decoded = []
    for payload in batch.column("payload").to_pylist():
        records, _fps = pickle.loads(payload)
        decoded.append(pickle.dumps([decode_record(rec, pre) for rec in records], protocol=5))
    return batch.append_column("decoded", pa.array(decoded, pa.binary())).append_column(
        "decode_node", pa.array([node] * batch.num_rows, pa.string())
    )


class ChunkEmbedder:
    """Ray actor: holds the model, embeds each decoded chunk in one batch and builds its rows
    (:func:`pipeline.build_chunk_rows`); the rows go back to the driver as Arrow IPC bytes."""

    def __init__(self, factory: EmbedderFactory, spec: RowSpec):
        self.embedder = factory()
        self.spec = spec
        self.node = _node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list[Any]] = {"seq": [], "n": [], "rows": [], "ok": [], "errors": [], "decode_node": []}
        for row in batch.select(["seq", "n", "payload", "decoded", "decode_node"]).to_pylist():
            records, fps = pickle.loads(row["payload"])
            rows = build_chunk_rows(records, fps, pickle.loads(row["decoded"]), self.embedder, self.spec)
            out["seq"].append(row["seq"])
            out["n"].append(row["n"])
            out["rows"].append(_ipc(rows.table))
            out["ok"].append(rows.ok)
            out["errors"].append(pickle.dumps(rows.errors))
            out["decode_node"].append(row["decode_node"])
        out["embed_node"] = [self.node] * len(out["seq"])
        return pa.table(out, schema=_OUT_SCHEMA)


_OUT_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("n", pa.int64()),
        ("rows", pa.binary()),
        ("ok", pa.int64()),
        ("errors", pa.binary()),
        ("decode_node", pa.string()),
        ("embed_node", pa.string()),
    ]
)


def _ipc(table: pa.Table | None) -> bytes:
    sink = io.BytesIO()
    if table is not None:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes) -> pa.Table | None:
    return pa.ipc.open_stream(data).read_all() if data else None


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


def ingest_ray(
    store: Store,
    dataset: str,
    source: Any,
    embedder: Embedder,
    *,
    address: str | None = None,
    batch_size: int = 64,
    workers: int = 2,
    actors: int | None = None,
    device: str | None = None,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
    model_version: str | None = None,
    run_id: str | None = None,
    build_indexes: bool = True,
    write_rows: int = WRITE_ROWS,
    embedder_factory: EmbedderFactory | None = None,
) -> RayIngestReport:
    """:func:`pipeline.ingest` on Ray: the same rows, error rows, embedder record, fingerprints and run
    document, computed by Ray tasks (decode) and an actor pool (embed + score), written by the driver.

    Parameters
    ----------
    store, dataset, source, embedder
        As :func:`pipeline.ingest` (``embedder`` on the driver gives the dataset its record and dimension).
    address
        ``auto``, ``host:port`` or ``ray://host:port`` of a running cluster; None: a local Ray for this
        ingest (an already initialised Ray session is used as it is).
    batch_size, workers, actors, device
        Records per chunk (one model batch); decode tasks at a time (one CPU each); model actors (default
        one per GPU on CUDA, else half the cluster's CPUs); the actors' device (default: the embedder's;
        ``auto`` picks CUDA when the cluster has GPUs).
    progress, on_progress, model_version, run_id, build_indexes
        As :func:`pipeline.ingest`.
    write_rows, embedder_factory
        Rows per upsert on the driver; how an actor builds its embedder (default: the dataset's
        embedder record, :func:`load_actor_embedder`).

    Raises
    ------
    NotSupported
        Ray is not installed.
    Unavailable
        ``address`` does not answer (nothing is created).
    ValidationFailed
        ``batch_size``, ``actors`` or ``write_rows`` below 1.
    """
    if (actors is not None and actors < 1) or write_rows < 1:
        raise ValidationFailed("actors and write_rows must be >= 1")
    ray = import_ray()
    with ray_session(address) as used:
        run = start_ingest(
            store,
            dataset,
            source,
            embedder,
            batch_size=batch_size,
            workers=workers,
            model_version=model_version,
            run_id=run_id,
        )
        report = RayIngestReport(**run.report.as_dict(), address=used)
        run.report = report
        bar = _progress_bar(dataset, run.total) if progress else None
        try:
            plan = _Plan.make(ray, embedder, device, actors)
            factory = embedder_factory or functools.partial(
                load_actor_embedder, embedder.config(), plan.device, int(getattr(embedder, "seed", 0))
            )
            refs, skipped = _put_chunks(ray, run, batch_size, bar, on_progress)
            if refs:
                ds = _dataset(ray, refs, preprocessor(embedder), factory, run.spec, plan, workers)
                _drain(run, ds, bar, on_progress, write_rows, skipped)
            record_ingest(run)
        except BaseException as exc:
            abort_ingest(run, exc)
            raise
        finally:
            if bar is not None:
                bar.close()
        finish_ingest(run, build_indexes=build_indexes)
    return report


@dataclass
class _Plan:
    """How many model actors, and what each asks Ray for."""

    actors: int
    device: str
    num_gpus: float

    @classmethod
    def make(cls, ray: Any, embedder: Embedder, device: str | None, actors: int | None) -> _Plan:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        wanted = (device or str(getattr(embedder, "device", "auto"))).lower()
        needs_model = embedder.kind != "precomputed"
        on_gpu = needs_model and (wanted.startswith("cuda") or (wanted == "auto" and gpus > 0))
        if on_gpu and gpus < 1:
            raise Unavailable("the embedder runs on CUDA but the Ray cluster has no GPU: pass --device cpu")
        count = actors or (gpus if on_gpu else max(1, cpus // 2))
        actor_device = ("cuda" if wanted == "auto" else wanted) if on_gpu else "cpu"  # never an unreserved GPU
        return cls(actors=count, device=actor_device, num_gpus=1.0 if on_gpu else 0.0)


def _progress_bar(dataset: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=f"ingest {dataset} (ray)", dynamic_ncols=True)


def _tick(run: IngestRun, bar: Any, on_progress: ProgressFn | None, n: int, done: int) -> None:
    report = run.report
    if bar is not None and n:
        bar.update(n)
        bar.set_postfix(ok=report.ok_rows, errors=report.error_rows, skipped=report.skipped)
    if on_progress is not None:
        on_progress(done, run.total, f"{report.ok_rows} ok, {report.error_rows} errors")


def _put_chunks(
    ray: Any, run: IngestRun, batch_size: int, bar: Any, on_progress: ProgressFn | None
) -> tuple[list[Any], int]:
    """Read the source on the driver (fingerprints, skips) and put the changed chunks into the object store,
    a few chunks per block (so the driver never holds them all); the blocks' references and the records
    skipped."""
    # about BLOCKS blocks, each one Ray task and one actor call: one chunk per task made Ray's per-call cost
    # the bulk of a small model's ingest (313 tasks for 20k images at batch 64)
    per_block = min(MAX_BLOCK_CHUNKS, max(1, math.ceil(run.total / batch_size / BLOCKS)))
    refs: list[Any] = []
    block: dict[str, list[Any]] = {"seq": [], "n": [], "payload": []}
    done = 0
    for seq, (chunk, todo, fps) in enumerate(changed_chunks(run, batch_size)):
        done += len(chunk) - len(todo)
        _tick(run, bar, on_progress, len(chunk) - len(todo), done)
        if not todo:
            continue
        block["seq"].append(seq)
        block["n"].append(len(todo))
        block["payload"].append(pickle.dumps((todo, fps), protocol=5))
        if len(block["seq"]) >= per_block:
            refs.append(ray.put(_block(block)))
            block = {"seq": [], "n": [], "payload": []}
    if block["seq"]:
        refs.append(ray.put(_block(block)))
    return refs, done


def _block(block: dict[str, list[Any]]) -> pa.Table:
    return pa.table(
        {
            "seq": pa.array(block["seq"], pa.int64()),
            "n": pa.array(block["n"], pa.int64()),
            "payload": pa.array(block["payload"], pa.binary()),
        }
    )


def _dataset(
    ray: Any, refs: list[Any], pre: Any, factory: EmbedderFactory, spec: RowSpec, plan: _Plan, workers: int
) -> Any:
    """The Ray Data pipeline: blocks of chunks -> decode tasks -> the model actors."""
    ds = ray.data.from_arrow_refs(refs)
    ds = ds.map_batches(
        decode_chunks,
        fn_kwargs={"pre": pre},
        batch_size=None,  # a whole block (its chunks embedded one model batch each)
        batch_format="pyarrow",
        num_cpus=1,
        concurrency=workers,
    )
    return ds.map_batches(
        ChunkEmbedder,
        fn_constructor_kwargs={"factory": factory, "spec": spec},
        batch_size=None,  # a whole block (its chunks embedded one model batch each)
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=1,
        num_gpus=plan.num_gpus or None,
    )


def _drain(run: IngestRun, ds: Any, bar: Any, on_progress: ProgressFn | None, write_rows: int, done: int) -> None:
    """Stream the finished chunks back, count each once, and upsert them ``write_rows`` at a time."""
    report = run.report
    assert isinstance(report, RayIngestReport)
    seen: set[int] = set()
    errors = _FirstErrors()
    with RowWriter(run, write_rows) as writer:  # a failure still writes what came back
        nodes: dict[str, set[str]] = {"decode": set(), "embed": set()}
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            for row in batch.to_pylist():
                if row["seq"] in seen:  # a retried chunk delivered twice is counted and written once
                    continue
                seen.add(row["seq"])
                chunk_errors = pickle.loads(row["errors"])
                run.add_chunk(ChunkRows(None, row["ok"], chunk_errors))
                errors.add(row["seq"], chunk_errors)
                nodes["decode"].add(row["decode_node"])
                nodes["embed"].add(row["embed_node"])
                table = _from_ipc(row["rows"])
                if table is not None:
                    writer.add(table)
                done += row["n"]
                _tick(run, bar, on_progress, row["n"], done)
    report.errors = errors.first(100)  # in source order, as the local engine lists them
    report.nodes = {k: sorted(v) for k, v in nodes.items()}


class _FirstErrors:
    """The error rows of the chunks earliest in the source, at least ``keep`` of them, whatever order the
    chunks come back in."""

    def __init__(self, keep: int = 100):
        self.keep = keep
        self.by_seq: dict[int, list[dict[str, str]]] = {}

    def add(self, seq: int, errors: list[dict[str, str]]) -> None:
        if not errors:
            return
        self.by_seq[seq] = errors
        total = 0
        for s in sorted(self.by_seq):  # drop chunks after the first ``keep`` errors
            if total >= self.keep:
                del self.by_seq[s]
            else:
                total += len(self.by_seq[s])

    def first(self, n: int) -> list[dict[str, str]]:
        return [e for s in sorted(self.by_seq) for e in self.by_seq[s]][:n]
