"""Search benchmark: edgeminer's mine latency and recall@10 against numpy exact search and against
LanceDB with its default index settings, with 1% / 10% / 50% selective filters.

    .venv/bin/python bench/search.py --sizes 1000000            # the README's table (tables built once, cached)
    .venv/bin/python bench/search.py --sizes 100000 --reps 1    # quick
    .venv/bin/python bench/search.py --sizes 10000000 --queries 20  # 10M: exact truth by a chunked scan
    .venv/bin/python bench/search.py --crossover --batch 8      # also: exact vs index by candidate count,
                                                                # 8 seeds in one batched query vs one by one

Data: synthetic clustered unit vectors (see make_vectors), a uniform ``bucket`` metadata column in
[0, 100) that the filters use (``bucket < 1`` is 1% selective...). Queries are perturbed copies of random
rows. Every row is an unlabeled candidate.

Peers, all in the same run, interleaved query by query:
- ``numpy``: brute force on the float32 matrix held in memory: X @ q over every row, the filter's rows
  kept (a boolean mask), argpartition (the truth; the mask is computed inside the timed call). The
  issue's peer, and the README's ratio.
- ``numpy filter-first``: the same answer from the filter's rows only (X[idx] @ q with idx =
  flatnonzero(mask)): it copies the selected rows, so it wins at small filters (at 1% it reads 1/100 of
  the matrix) and loses at large ones. "vs best numpy" divides by the faster of the two, per repetition.
- ``lancedb-default``: the same rows in a second table with the IVF_PQ index LanceDB builds by default,
  queried with Lance's default settings (no nprobes, no refine), the filter prefiltered;
- ``edgeminer``: ``service.mining.mine`` with one seed vector and budget 10 (so k = 30 neighbours are
  searched, as mine does), through ``Store.search_many``: exact when the filter leaves few rows
  (``Store.prefer_exact``), else the IVF_SQ index, prefiltered, with nprobes and a 2 x k re-rank.

Each cell runs ``--reps`` repetitions (default 3) and reports the median and the min-max of the per
repetition p50s. Warm: the tables open and their vector indexes loaded whole into the readers' index
caches (``Store.prewarm_vector_index``, the same for both tables). Cold: the
first query through a freshly opened Store (new connection, new Lance reader, empty index and metadata
caches); with ``--drop-caches`` (root only) the OS page cache is dropped before it too (echo 3 >
/proc/sys/vm/drop_caches), else the table's files may still sit in the page cache. numpy has no cold
figure: its matrix is in memory by construction.

When the float32 matrix would not fit in a third of the available memory (10M x 512 = 20 GB), numpy is
not timed: the exact answers come from a chunked scan over the regenerated vectors (cached under the
bench cache), and the LanceDB-defaults table is skipped when the disk cannot hold a second copy.

Tables are cached under ``--cache`` (default ~/.cache/edgeminer-bench) keyed by size, dim and seed; a
cached table whose vector index is of another type than the one wanted is rebuilt. The build time is
kept beside the table (``<table>.build.json``) and printed with the index's size on disk and in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeminer.indexer.store import (  # noqa: E402
    EXACT_SEARCH_MAX_CANDIDATES,
    REFINE_FACTORS,
    SEARCH_NPROBES,
    SEARCH_PROBE_MATCHES,
    VECTOR_INDEX_TYPE,
    Store,
)
from edgeminer.service.mining import ResolvedSeeds, mine, normalize  # noqa: E402

SELECTIVITY = (1, 10, 50)  # percent of rows the filter keeps
K = 10
STEP = 50_000  # rows generated at a time
WRITE_ROWS = 500_000  # rows written at a time (one fragment each; see _write_batches)
Chunks = Callable[[], Iterator[tuple[int, np.ndarray]]]


# -- data -------------------------------------------------------------------------------------------


def _centers(rng: np.random.Generator, dim: int, clusters: int, structure: str) -> np.ndarray:
    if structure == "flat":
        return normalize(rng.normal(size=(clusters, dim)).astype(np.float32))
    supers = normalize(rng.normal(size=(max(1, clusters // 10), dim)).astype(np.float32))
    parent = np.arange(clusters) % len(supers)
    return normalize(supers[parent] + rng.normal(scale=0.8 / np.sqrt(dim), size=(clusters, dim)).astype(np.float32))


def vector_chunks(
    n: int, dim: int, clusters: int, seed: int, structure: str = "hierarchical"
) -> tuple[np.ndarray, Chunks]:
    """(buckets, a function yielding (start, vectors) chunks of STEP rows): the rows of make_vectors,
    regenerated chunk by chunk (the same numbers) so a 10M x 512 matrix never has to be in memory."""
    rng = np.random.default_rng(seed)
    centers = _centers(rng, dim, clusters, structure)
    buckets = rng.integers(0, 100, size=n).astype(np.int64)
    state = rng.bit_generator.state

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        gen = np.random.default_rng()
        gen.bit_generator.state = state
        for start in range(0, n, STEP):
            m = min(STEP, n - start)
            assign = gen.integers(0, clusters, size=m)
            noise = gen.normal(scale=0.7 / np.sqrt(dim), size=(m, dim)).astype(np.float32)
            yield start, normalize(centers[assign] + noise)

    return buckets, chunks


def make_vectors(
    n: int, dim: int, clusters: int, seed: int, structure: str = "hierarchical"
) -> tuple[np.ndarray, np.ndarray]:
    """``flat``: ``clusters`` random centres (near-orthogonal in high dimension, so beyond a row's own
    cluster every other row is at distance ~1: its "nearest" neighbours there are ties broken by noise).
    ``hierarchical`` (default, closer to real embeddings): clusters/10 super-centres, 10 sub-centres
    around each, rows around the sub-centres, so neighbourhoods are nested as in real image data.
    Noise 0.7 / sqrt(dim) a coordinate."""
    buckets, chunks = vector_chunks(n, dim, clusters, seed, structure)
    vecs = np.empty((n, dim), np.float32)
    for start, part in chunks():
        vecs[start : start + len(part)] = part
    return vecs, buckets


def pick_queries(n: int, dim: int, count: int, seed: int, chunks: Chunks) -> np.ndarray:
    """``count`` perturbed copies of random rows (normalised)."""
    rng = np.random.default_rng(seed + 1)
    picks = rng.choice(n, size=count, replace=False)
    rows = np.empty((count, dim), np.float32)
    for start, part in chunks():
        hit = (picks >= start) & (picks < start + len(part))
        rows[hit] = part[picks[hit] - start]
    return normalize(rows + rng.normal(scale=0.3 / np.sqrt(dim), size=(count, dim)).astype(np.float32))


# -- tables -----------------------------------------------------------------------------------------


def build(
    store: Store, name: str, n: int, dim: int, buckets: np.ndarray, chunks: Chunks, index: dict[str, Any] | None
) -> dict[str, Any]:
    """The table ``name`` with the rows and the vector index ``index`` (None: edgeminer's), built unless
    cached with that index type; returns its build record (seconds to write and to index)."""
    want = VECTOR_INDEX_TYPE if index is None else str(index.get("type", "IVF_PQ")).upper()
    sidecar = Path(store.uri) / f"{name}.build.json"
    if store.has_dataset(name) and store.count(name) == n:
        info = store.vector_index_info(name)
        if info is not None and info["type"] == want:
            store.ensure_indexes(name)  # scalar indexes added since the table was cached
            return json.loads(sidecar.read_text()) if sidecar.exists() else {}
        if info is None:  # every row written, the index not built yet (an interrupted build): index only
            written = json.loads(sidecar.read_text()).get("write_s") if sidecar.exists() else None
            return _index(store, name, index, sidecar, write_s=written)
    if store.has_dataset(name):
        store.drop_dataset(name)
    store.create_dataset(name, dim=dim, embedder={"kind": "precomputed", "dim": dim}, metadata_fields={"bucket": "int"})
    t0 = time.perf_counter()
    for start, part in _write_batches(chunks):
        m = len(part)
        ids = [row_id(i) for i in range(start, start + m)]
        table = pa.table(
            {
                "id": ids,
                "split": ["unlabeled"] * m,
                "labeled": [False] * m,
                "status": ["ok"] * m,
                "fingerprint": ids,
                "meta_bucket": buckets[start : start + m],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim),
            }
        )
        store.upsert_samples(name, table)
        if (start // WRITE_ROWS) % 2 == 1 or start + m == n:
            print(f"  {name}: {start + m:,}/{n:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    write_s = round(time.perf_counter() - t0, 1)
    sidecar.write_text(json.dumps({"write_s": write_s}))  # an interrupted index build resumes from here
    return _index(store, name, index, sidecar, write_s=write_s)


def _write_batches(chunks: Chunks) -> Iterator[tuple[int, np.ndarray]]:
    """The generator's STEP-row chunks joined into WRITE_ROWS-row writes: each write is one Lance
    fragment, and fragments under 100k rows are "small" ones that compaction would rewrite (at 10M rows
    written 50k at a time, compaction rewrote the whole 20 GB table and filled the disk)."""
    parts: list[np.ndarray] = []
    first = 0
    for start, part in chunks():
        if not parts:
            first = start
        parts.append(part)
        if sum(len(p) for p in parts) >= WRITE_ROWS:
            yield first, np.concatenate(parts)
            parts = []
    if parts:
        yield first, np.concatenate(parts)


def _index(
    store: Store, name: str, index: dict[str, Any] | None, sidecar: Path, write_s: float | None
) -> dict[str, Any]:
    """Build the vector (and scalar) indexes of ``name``, timed; the build record kept beside the table."""
    print(f"  {name}: building the vector index", flush=True)
    t1 = time.perf_counter()
    report = store.ensure_indexes(name, force=True, vector_index=index)
    record = {"write_s": write_s, "index_s": round(time.perf_counter() - t1, 1), "index": report["vector_index"]}
    print(f"  {name}: index {record['index']} in {record['index_s']:.0f} s", flush=True)
    sidecar.write_text(json.dumps(record))
    return record


def row_id(i: int) -> str:
    return f"v{i:07d}"  # the ids of cached tables: do not change


# -- truth ------------------------------------------------------------------------------------------


def numpy_exact(vecs: np.ndarray, buckets: np.ndarray, q: np.ndarray, limit: int) -> np.ndarray:
    """The peer: every row scored, the filter's rows kept, the top K."""
    scores = vecs @ q
    scores[buckets >= limit] = -np.inf
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def numpy_filter_first(vecs: np.ndarray, buckets: np.ndarray, q: np.ndarray, limit: int) -> np.ndarray:
    """The other competent numpy: rank only the filter's rows (a gathered copy)."""
    idx = np.flatnonzero(buckets < limit)
    scores = vecs[idx] @ q
    top = np.argpartition(-scores, K)[:K] if len(idx) > K else np.arange(len(idx))
    return idx[top[np.argsort(-scores[top])]]


def chunked_truth(buckets: np.ndarray, chunks: Chunks, queries: np.ndarray) -> dict[int, list[set[str]]]:
    """Exact top-K ids per filter and query by one scan over the regenerated vectors."""
    best = {sel: [(np.full(0, -np.inf), np.zeros(0, np.int64)) for _ in queries] for sel in SELECTIVITY}
    t0 = time.perf_counter()
    for start, part in chunks():
        scores = part @ queries.T  # (rows, queries)
        rows = np.arange(start, start + len(part))
        for sel in SELECTIVITY:
            keep = buckets[start : start + len(part)] < sel
            s, r = scores[keep], rows[keep]
            for j, (bs, br) in enumerate(best[sel]):
                cs, cr = np.concatenate([bs, s[:, j]]), np.concatenate([br, r])
                top = np.argpartition(-cs, K)[:K] if len(cs) > K else np.arange(len(cs))
                best[sel][j] = (cs[top], cr[top])
        if (start // STEP) % 20 == 19:
            print(f"  exact scan: {start + len(part):,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {sel: [{row_id(int(i)) for i in br} for _, br in best[sel]] for sel in SELECTIVITY}


# -- measuring --------------------------------------------------------------------------------------


def drop_os_caches(enabled: bool) -> bool:
    """Drop the OS page cache (root only); whether it was dropped."""
    if not enabled or os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return True


def mine_ids(store: Store, name: str, q: np.ndarray, where: str) -> tuple[list[str], str]:
    res = mine(
        store, name, ResolvedSeeds(["q"], q[None, :], [None]), budget=K, aggregation="min_distance", where=where, k=K
    )
    return [r["id"] for r in res.rows], res.engine


def peer_ids(store: Store, name: str, q: np.ndarray, where: str) -> list[str]:
    got = store.search(name, q, k=K, where=where, columns=["id"], exact=False, lancedb_defaults=True)
    return list(got["id"].to_pylist())


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def one_rep(ctx: dict[str, Any], sel: int, truths: list[set[str]]) -> dict[str, Any]:
    """One repetition of one cell: every query through every peer, interleaved."""
    store, ours, peer, queries = ctx["store"], ctx["ours"], ctx["peer"], ctx["queries"]
    where = f"meta_bucket < {sel}"
    t: dict[str, list[float]] = {"numpy": [], "numpy_first": [], "edgeminer": [], "lancedb": []}
    recall: dict[str, list[float]] = {"edgeminer": [], "lancedb": []}
    engine = ""
    for q, truth in zip(queries, truths, strict=True):
        if ctx["vecs"] is not None:
            t["numpy"].append(timed(partial(numpy_exact, ctx["vecs"], ctx["buckets"], q, sel))[0])
            t["numpy_first"].append(timed(partial(numpy_filter_first, ctx["vecs"], ctx["buckets"], q, sel))[0])
        dt, (ids, engine) = timed(partial(mine_ids, store, ours, q, where))
        t["edgeminer"].append(dt)
        recall["edgeminer"].append(len(truth & set(ids)) / K)
        if peer:
            dt, ids = timed(partial(peer_ids, store, peer, q, where))
            t["lancedb"].append(dt)
            recall["lancedb"].append(len(truth & set(ids)) / K)
    out: dict[str, Any] = {"engine": engine}
    for key, xs in t.items():
        if xs:
            out[f"{key}_p50"] = float(np.percentile(xs, 50)) * 1000
            out[f"{key}_p95"] = float(np.percentile(xs, 95)) * 1000
    for key, xs in recall.items():
        if xs:
            out[f"{key}_recall"] = float(np.mean(xs))
    return out


def cold_rep(ctx: dict[str, Any], sel: int, n_rep: int) -> dict[str, float]:
    """The first query through a freshly opened Store (after dropping the page cache when asked)."""
    where = f"meta_bucket < {sel}"
    q = ctx["queries"][n_rep % len(ctx["queries"])]
    out = {}
    ctx["dropped"] = drop_os_caches(ctx["drop_caches"])
    fresh = Store(ctx["store"].uri)  # a new connection: nothing of the tables opened or cached yet
    out["edgeminer_cold"] = timed(partial(mine_ids, fresh, ctx["ours"], q, where))[0] * 1000
    if ctx["peer"]:
        drop_os_caches(ctx["drop_caches"])
        fresh = Store(ctx["store"].uri)
        out["lancedb_cold"] = timed(partial(peer_ids, fresh, ctx["peer"], q, where))[0] * 1000
    return out


def summarize(n: int, sel: int, candidates: int, reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and min-max over the repetitions of every figure of a cell."""
    row: dict[str, Any] = {"rows": n, "filter": f"{sel}%", "candidates": candidates, "engine": reps[-1]["engine"]}
    for key in sorted({k for r in reps for k in r if k != "engine"}):
        xs = [r[key] for r in reps if key in r]
        row[key] = {"median": float(np.median(xs)), "min": float(min(xs)), "max": float(max(xs))}
    if "numpy_p50" in row:
        ratios = [r["edgeminer_p50"] / r["numpy_p50"] for r in reps]
        row["ratio_p50"] = {"median": float(np.median(ratios)), "min": float(min(ratios)), "max": float(max(ratios))}
        best = [r["edgeminer_p50"] / min(r["numpy_p50"], r["numpy_first_p50"]) for r in reps]
        row["ratio_best_p50"] = {"median": float(np.median(best)), "min": float(min(best)), "max": float(max(best))}
    return row


def load_note() -> str:
    load = os.getloadavg()
    note = f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"
    if load[0] >= 1:
        note += "\nWARNING: the machine is busy (1-min load >= 1): timings are indicative only"
    return note


# -- one size ---------------------------------------------------------------------------------------


def fits_in_memory(n: int, dim: int) -> bool:
    """Whether numpy's float32 matrix fits in a third of the memory available now."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return n * dim <= 250_000_000
    return n * dim * 4 * 3 <= avail


def peer_fits_on_disk(store: Store, n: int, dim: int, ours_built: bool) -> bool:
    """Whether the LanceDB-defaults table (a second copy of the vectors) fits on the disk beside ours (still
    to be written unless ``ours_built``): ~1.3 x the float32 vectors a table (ids, index), 10% spare."""
    table = n * dim * 4 * 1.3
    return table * (1 if ours_built else 2) * 1.1 <= shutil.disk_usage(store.uri).free


def truths_for(ctx: dict[str, Any], n: int, args: argparse.Namespace, chunks: Chunks) -> dict[int, list[set[str]]]:
    if ctx["vecs"] is not None:
        vecs, buckets, queries = ctx["vecs"], ctx["buckets"], ctx["queries"]
        return {
            sel: [{row_id(int(i)) for i in numpy_exact(vecs, buckets, q, sel)} for q in queries] for sel in SELECTIVITY
        }
    cache = Path(ctx["store"].uri) / f"truth-{n}-q{len(ctx['queries'])}-s{args.seed}.json"
    if cache.exists():
        return {int(k): [set(x) for x in v] for k, v in json.loads(cache.read_text()).items()}
    print(f"  exact answers by a chunked scan of {n:,} regenerated rows", flush=True)
    truth = chunked_truth(ctx["buckets"], chunks, ctx["queries"])
    cache.write_text(json.dumps({str(k): [sorted(x) for x in v] for k, v in truth.items()}))
    return truth


def setup_size(store: Store, n: int, args: argparse.Namespace) -> tuple[dict[str, Any], Chunks]:
    dim = args.dim
    buckets, chunks = vector_chunks(n, dim, args.clusters, args.seed, args.structure)
    ours, peer = f"bench{n}", f"bench{n}-default"
    in_memory = fits_in_memory(n, dim)
    ours_built = store.has_dataset(ours) and store.count(ours) == n
    with_peer = not args.no_peer and (store.has_dataset(peer) or peer_fits_on_disk(store, n, dim, ours_built))
    if not in_memory:
        print(
            f"  numpy's {n * dim * 4 / 2**30:.0f} GiB matrix does not fit in memory: not timed; exact by chunked scan"
        )
    if not with_peer:
        print("  LanceDB-defaults table skipped (--no-peer, or no room on the disk for a second copy)")
    records = {"edgeminer": build(store, ours, n, dim, buckets, chunks, None)}
    if with_peer:
        records["lancedb_default"] = build(store, peer, n, dim, buckets, chunks, {})
    vecs = (
        make_vectors(n, dim, args.clusters, args.seed, args.structure)[0] if in_memory and not args.build_only else None
    )
    queries = pick_queries(n, dim, args.queries, args.seed, chunks) if not args.build_only else np.zeros((0, dim))
    if not args.build_only:  # warm: both indexes whole in the readers' caches (cold: see cold_rep)
        for name in (ours, peer) if with_peer else (ours,):
            store.prewarm_vector_index(name)
    ctx = {
        "store": store,
        "ours": ours,
        "peer": peer if with_peer else None,
        "vecs": vecs,
        "buckets": buckets,
        "queries": queries,
        "drop_caches": args.drop_caches,
        "dropped": False,
        "records": records,
    }
    return ctx, chunks


def run_size(store: Store, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    print(f"\n== {n:,} x {args.dim} ==", flush=True)
    ctx, chunks = setup_size(store, n, args)
    if args.build_only:
        return []
    truths = truths_for(ctx, n, args, chunks)
    rows = []
    # every warm repetition first: a cold one drops the page cache, which the next warm one would pay for
    warm = {sel: [one_rep(ctx, sel, truths[sel]) for _ in range(args.reps)] for sel in SELECTIVITY}
    for sel in SELECTIVITY:
        reps = warm[sel]
        for r, rep in enumerate(reps):
            rep.update(cold_rep(ctx, sel, r))
        row = summarize(n, sel, int((ctx["buckets"] < sel).sum()), reps)
        row["cold_page_cache_dropped"] = ctx["dropped"]
        rows.append(row)
        print(_fmt_row(row), flush=True)
    print_index_costs(ctx, n)
    if args.crossover:
        crossover(store, ctx["ours"], ctx["queries"], n)
    if args.batch > 1:
        batched(store, ctx["ours"], ctx["queries"], args.batch)
    for row in rows:
        row["build"] = ctx["records"]
    return rows


def print_index_costs(ctx: dict[str, Any], n: int) -> None:
    for label, name in (("edgeminer", ctx["ours"]), ("lancedb-default", ctx["peer"])):
        if not name:
            continue
        info = ctx["store"].vector_index_info(name) or {}
        rec = ctx["records"].get(label.replace("-", "_"), {})
        built = (
            f"built in {rec['index_s']:.0f} s (rows written in {rec.get('write_s') or '?'} s)"
            if rec.get("index_s") is not None
            else "build time unknown"
        )
        print(
            f"  {label} index on {n:,} rows: {info.get('type')}, {built}; {info.get('disk_bytes', 0) / 2**20:,.0f} MiB "
            f"on disk, {info.get('cache_bytes', 0) / 2**20:,.0f} MiB in this process's index cache after the queries",
            flush=True,
        )


def crossover(store: Store, name: str, queries: np.ndarray, n: int) -> None:
    """Exact (the candidates' vectors read and ranked) vs index latency by the rows the filter leaves."""
    print(f"  crossover on {n:,} rows: candidates | exact p50 ms | index p50 ms | index recall vs exact")
    for sel in (1, 2, 5, 10, 20, 50):
        where = f"meta_bucket < {sel}"
        te, ti, rec = [], [], []
        for q in queries[:20]:
            dt, ex = timed(partial(store.search, name, q, k=K, where=where, columns=["id"], exact=True))
            te.append(dt)
            dt, ix = timed(partial(store.search, name, q, k=K, where=where, columns=["id"], exact=False))
            ti.append(dt)
            rec.append(len(set(ex["id"].to_pylist()) & set(ix["id"].to_pylist())) / K)
        cand = store.count(name, where)
        print(
            f"  {cand:>10,} | {np.median(te) * 1000:8.1f} | {np.median(ti) * 1000:8.1f} | {np.mean(rec):.3f}",
            flush=True,
        )


def _one_by_one(store: Store, name: str, qs: np.ndarray, where: str) -> list[pa.Table]:
    return [store.search(name, q, k=30, where=where, columns=["id"], exact=False) for q in qs]


def batched(store: Store, name: str, queries: np.ndarray, size: int) -> None:
    """``size`` query vectors (a mine with that many seeds) in one batched index query vs one at a time."""
    print(f"  {size} query vectors, index path, k=30: one batched query vs {size} single queries (p50 ms)")
    for sel in SELECTIVITY:
        where = f"meta_bucket < {sel} AND status = 'ok'"
        tb, ts, same = [], [], True
        for start in range(0, len(queries) - size + 1, size):
            qs = queries[start : start + size]
            dt, many = timed(partial(store.search_many, name, qs, k=30, where=where, columns=["id"], exact=False))
            tb.append(dt)
            dt, singles = timed(partial(_one_by_one, store, name, qs, where))
            ts.append(dt)
            same &= all(a["id"].to_pylist() == b["id"].to_pylist() for a, b in zip(many, singles, strict=True))
        b, o = np.median(tb) * 1000, np.median(ts) * 1000
        print(f"  {sel:>3}%: batched {b:7.1f} | one by one {o:7.1f} | same answers: {same}")


# -- output -----------------------------------------------------------------------------------------


def _mm(row: dict[str, Any], key: str, fmt: str = "{:.1f}") -> str:
    v = row.get(key)
    if not v:
        return "-"
    return f"{fmt.format(v['median'])} [{fmt.format(v['min'])}-{fmt.format(v['max'])}]"


HEADER = (
    "rows | filter | cands | engine | numpy p50 ms | numpy filter-first p50 ms | edgeminer p50 ms | "
    "edgeminer p95 ms | recall | p50 vs numpy | p50 vs best numpy | edgeminer cold ms | "
    "lancedb-default p50 ms | recall | lancedb-default cold ms"
)


def _fmt_row(r: dict[str, Any]) -> str:
    rec = r.get("edgeminer_recall", {}).get("min", float("nan"))
    prec = r.get("lancedb_recall", {}).get("min")
    return " | ".join(
        [
            f"{r['rows']:,}",
            r["filter"],
            f"{r['candidates']:,}",
            r["engine"],
            _mm(r, "numpy_p50"),
            _mm(r, "numpy_first_p50"),
            _mm(r, "edgeminer_p50"),
            _mm(r, "edgeminer_p95"),
            f"{rec:.3f}",
            _mm(r, "ratio_p50", "{:.2f}"),
            _mm(r, "ratio_best_p50", "{:.2f}"),
            _mm(r, "edgeminer_cold"),
            _mm(r, "lancedb_p50"),
            "-" if prec is None else f"{prec:.3f}",
            _mm(r, "lancedb_cold"),
        ]
    )


def print_summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nmedian [min-max] of {args.reps} repetitions x {args.queries} queries; recall@10 = the lowest repetition's"
    )
    print(HEADER)
    for r in rows:
        print(_fmt_row(r))
    ok = all(r["edgeminer_recall"]["min"] >= 0.95 for r in rows)
    print(f"\nrecall@10 >= 0.95 everywhere: {'yes' if ok else 'NO'}")
    for r in rows:
        if "ratio_p50" in r:
            ratio = r["ratio_p50"]["median"]
            verdict = "<= 0.5x: yes" if ratio <= 0.5 else "<= 0.5x: NO"
            best = r["ratio_best_p50"]["median"]
            print(
                f"  {r['rows']:>10,} {r['filter']:>4}: edgeminer p50 = {ratio:.2f} x numpy p50 ({verdict}); "
                f"{best:.2f} x the faster of numpy and numpy filter-first"
            )
    print(load_note())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    p.add_argument("--dim", type=int, default=512, help="vector dimension")
    p.add_argument("--clusters", type=int, default=1000, help="cluster centres of the synthetic data")
    p.add_argument("--queries", type=int, default=50, help="queries per cell and repetition")
    p.add_argument("--reps", type=int, default=3, help="repetitions per cell (median and min-max reported)")
    p.add_argument("--seed", type=int, default=0, help="data seed (tables are cached per seed)")
    p.add_argument(
        "--cache",
        default=os.environ.get("EDGEMINER_BENCH_CACHE", str(Path.home() / ".cache/edgeminer-bench")),
        help="where the tables (and 10M exact answers) are cached",
    )
    p.add_argument("--drop-caches", action="store_true", help="cold runs also drop the OS page cache (root only)")
    p.add_argument("--no-peer", action="store_true", help="skip the LanceDB-defaults table")
    p.add_argument("--crossover", action="store_true", help="also time exact vs index by candidate count")
    p.add_argument("--batch", type=int, default=0, help="also time N query vectors batched vs one by one")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--structure", choices=["hierarchical", "flat"], default="hierarchical", help="see make_vectors")
    p.add_argument("--build-only", action="store_true", help="build (and cache) the tables, measure nothing")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    suffix = "" if args.structure == "flat" else f"-{args.structure}"
    store = Store(Path(args.cache) / f"d{args.dim}-c{args.clusters}-s{args.seed}{suffix}")
    print(load_note())
    print(
        f"edgeminer search bench: k={K} (mine searches 3k for one seed), {args.queries} queries x {args.reps} reps "
        f"per cell; exact up to {EXACT_SEARCH_MAX_CANDIDATES:,} candidates, else {VECTOR_INDEX_TYPE}: nprobes >= "
        f"{SEARCH_NPROBES} (probed partitions hold ~{SEARCH_PROBE_MATCHES} matching rows), refine "
        f"x{REFINE_FACTORS[VECTOR_INDEX_TYPE]}; cold = a fresh Store"
        + (" + dropped OS page cache" if args.drop_caches and os.geteuid() == 0 else " (OS page cache kept)")
    )
    rows = []
    for n in sizes:
        rows.extend(run_size(store, n, args))
    if rows:
        print_summary(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
