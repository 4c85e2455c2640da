"""Search benchmark: edgeminer's mine latency and recall@10 against numpy exact search and against
LanceDB with its default index settings, at 100k and 1M x 512, with 1% / 10% / 50% selective filters.

    .venv/bin/python bench/search.py                 # 100k and 1M (the 1M table is built once, cached)
    .venv/bin/python bench/search.py --sizes 100000  # only 100k
    .venv/bin/python bench/search.py --crossover     # also: exact vs index latency by candidate count

Data: synthetic clustered unit vectors (``--clusters`` Gaussian centres, noise 0.7 / sqrt(dim) per
coordinate), a uniform ``bucket`` metadata column in [0, 100) that the filters use (``bucket < 1`` is
1% selective...). Queries are perturbed copies of random rows. Every row is an unlabeled candidate.

Peers, all in the same run on the same machine:
- ``numpy``: brute force on an in-memory float32 matrix: X @ q, filter mask, argpartition (the truth);
- ``lancedb-default``: the same rows in a second table with IVF_PQ built with LanceDB's default
  parameters and queried with its default nprobes / no refine, filter prefiltered;
- ``edgeminer``: ``service.mining.mine`` with one seed vector, budget 10, which goes through
  ``Store.search``: exact when the filter leaves <= EXACT_SEARCH_MAX_CANDIDATES rows, else the IVF_PQ
  index (~sqrt(n) partitions, dim/8 sub-vectors) with nprobes and refine_factor.

Tables are cached under ``--cache`` (default ~/.cache/edgeminer-bench) keyed by size, dim and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeminer.indexer.store import (
    EXACT_SEARCH_MAX_CANDIDATES,
    SEARCH_NPROBES,
    SEARCH_PROBE_MATCHES,
    SEARCH_REFINE_FACTOR,
    Store,
)  # noqa: E402
from edgeminer.service.mining import ResolvedSeeds, mine, normalize  # noqa: E402

SELECTIVITY = (1, 10, 50)  # percent of rows the filter keeps
K = 10


def make_vectors(
    n: int, dim: int, clusters: int, seed: int, structure: str = "hierarchical"
) -> tuple[np.ndarray, np.ndarray]:
    """``flat``: ``clusters`` random centres (near-orthogonal in high dimension, so beyond a row's own
    cluster every other row is at distance ~1: its "nearest" neighbours there are ties broken by noise).
    ``hierarchical`` (default, closer to real embeddings): clusters/10 super-centres, 10 sub-centres
    around each, rows around the sub-centres, so neighbourhoods are nested as in real image data."""
    rng = np.random.default_rng(seed)
    if structure == "flat":
        centers = normalize(rng.normal(size=(clusters, dim)).astype(np.float32))
    else:
        supers = normalize(rng.normal(size=(max(1, clusters // 10), dim)).astype(np.float32))
        parent = np.arange(clusters) % len(supers)
        centers = normalize(
            supers[parent] + rng.normal(scale=0.8 / np.sqrt(dim), size=(clusters, dim)).astype(np.float32)
        )
    vecs = np.empty((n, dim), np.float32)
    buckets = rng.integers(0, 100, size=n).astype(np.int64)
    step = 50_000
    for start in range(0, n, step):
        m = min(step, n - start)
        assign = rng.integers(0, clusters, size=m)
        noise = rng.normal(scale=0.7 / np.sqrt(dim), size=(m, dim)).astype(np.float32)
        vecs[start : start + m] = normalize(centers[assign] + noise)
    return vecs, buckets


def build(store: Store, name: str, vecs: np.ndarray, buckets: np.ndarray, index: dict[str, Any] | None) -> None:
    n, dim = vecs.shape
    if store.has_dataset(name) and store.count(name) == n and store.has_vector_index(name):
        store.ensure_indexes(name)  # scalar indexes added since the table was cached
        return
    if store.has_dataset(name):
        store.drop_dataset(name)
    store.create_dataset(name, dim=dim, embedder={"kind": "precomputed", "dim": dim}, metadata_fields={"bucket": "int"})
    t0 = time.perf_counter()
    step = 50_000
    for start in range(0, n, step):
        m = min(step, n - start)
        ids = [f"v{i:07d}" for i in range(start, start + m)]
        table = pa.table(
            {
                "id": ids,
                "split": ["unlabeled"] * m,
                "labeled": [False] * m,
                "status": ["ok"] * m,
                "fingerprint": ids,
                "meta_bucket": buckets[start : start + m],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs[start : start + m].reshape(-1)), dim),
            }
        )
        store.upsert_samples(name, table)
        print(f"  {name}: {start + m}/{n} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    t1 = time.perf_counter()
    report = store.ensure_indexes(name, force=True, vector_index=index)
    print(f"  {name}: index {report['vector_index']} in {time.perf_counter() - t1:.0f} s", flush=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1000.0


def numpy_exact(vecs: np.ndarray, buckets: np.ndarray, q: np.ndarray, limit: int) -> np.ndarray:
    scores = vecs @ q
    scores[buckets >= limit] = -np.inf
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def run_size(store: Store, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    dim = args.dim
    print(f"\n== {n:,} x {dim} ==", flush=True)
    vecs, buckets = make_vectors(n, dim, args.clusters, args.seed, args.structure)
    ours, peer = f"bench{n}", f"bench{n}-default"
    build(store, ours, vecs, buckets, None)
    build(store, peer, vecs, buckets, {})
    if args.build_only:
        return []
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(n, size=args.queries, replace=False)
    queries = normalize(vecs[picks] + rng.normal(scale=0.3 / np.sqrt(dim), size=(args.queries, dim)).astype(np.float32))
    rows = []
    for sel in SELECTIVITY:
        where = f"meta_bucket < {sel}"
        t_np, t_em, t_ld, r_em, r_ld = [], [], [], [], []
        engine = ""
        for n_q, q in enumerate(queries):
            t0 = time.perf_counter()
            truth = numpy_exact(vecs, buckets, q, sel)
            t_np.append(time.perf_counter() - t0)
            truth_ids = {f"v{i:07d}" for i in truth}

            seeds = ResolvedSeeds([f"q{n_q}"], q[None, :], [None])
            t0 = time.perf_counter()
            res = mine(store, ours, seeds, budget=K, aggregation="min_distance", where=where, k=K)
            t_em.append(time.perf_counter() - t0)
            engine = res.engine
            r_em.append(len(truth_ids & {r["id"] for r in res.rows}) / K)

            t0 = time.perf_counter()
            got = store.search(peer, q, k=K, where=where, columns=["id"], exact=False, nprobes=None, refine_factor=None)
            t_ld.append(time.perf_counter() - t0)
            r_ld.append(len(truth_ids & set(got["id"].to_pylist())) / K)
        row = {
            "rows": n,
            "filter": f"{sel}%",
            "candidates": int((buckets < sel).sum()),
            "engine": engine,
            "numpy_p50_ms": pct(t_np, 50),
            "numpy_p95_ms": pct(t_np, 95),
            "edgeminer_p50_ms": pct(t_em, 50),
            "edgeminer_p95_ms": pct(t_em, 95),
            "edgeminer_recall": float(np.mean(r_em)),
            "lancedb_default_p50_ms": pct(t_ld, 50),
            "lancedb_default_p95_ms": pct(t_ld, 95),
            "lancedb_default_recall": float(np.mean(r_ld)),
        }
        row["speedup_vs_numpy_p50"] = row["numpy_p50_ms"] / row["edgeminer_p50_ms"]
        rows.append(row)
        print(_fmt_row(row), flush=True)
    if args.crossover:
        crossover(store, ours, queries, n)
    return rows


def crossover(store: Store, name: str, queries: np.ndarray, n: int) -> None:
    """Exact (flat, prefiltered) vs index latency by the number of rows the filter leaves."""
    print(f"  crossover on {n:,} rows: candidates | exact p50 ms | index p50 ms | index recall vs exact")
    for sel in (1, 2, 5, 10, 20, 50):
        where = f"meta_bucket < {sel}"
        te, ti, rec = [], [], []
        for q in queries[:20]:
            t0 = time.perf_counter()
            ex = store.search(name, q, k=K, where=where, columns=["id"], exact=True)
            te.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ix = store.search(name, q, k=K, where=where, columns=["id"], exact=False)
            ti.append(time.perf_counter() - t0)
            rec.append(len(set(ex["id"].to_pylist()) & set(ix["id"].to_pylist())) / K)
        cand = store.count(name, where)
        print(f"  {cand:>10,} | {pct(te, 50):8.1f} | {pct(ti, 50):8.1f} | {np.mean(rec):.3f}", flush=True)


HEADER = (
    f"{'rows':>9} {'filter':>6} {'cands':>8} {'engine':>6} | {'numpy p50/p95 ms':>17} | "
    f"{'edgeminer p50/p95 ms':>20} {'recall':>6} | {'lancedb-default p50/p95 ms':>26} {'recall':>6} | "
    f"{'p50 vs numpy':>12}"
)


def _fmt_row(r: dict[str, Any]) -> str:
    return (
        f"{r['rows']:>9,} {r['filter']:>6} {r['candidates']:>8,} {r['engine']:>6} | "
        f"{r['numpy_p50_ms']:>8.1f}/{r['numpy_p95_ms']:<8.1f} | "
        f"{r['edgeminer_p50_ms']:>10.1f}/{r['edgeminer_p95_ms']:<9.1f} {r['edgeminer_recall']:>6.3f} | "
        f"{r['lancedb_default_p50_ms']:>13.1f}/{r['lancedb_default_p95_ms']:<12.1f} "
        f"{r['lancedb_default_recall']:>6.3f} | {r['speedup_vs_numpy_p50']:>10.1f}x"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cache",
        default=os.environ.get("EDGEMINER_BENCH_CACHE", str(Path.home() / ".cache/edgeminer-bench")),
    )
    p.add_argument("--crossover", action="store_true", help="also time exact vs index by candidate count")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--structure", choices=["hierarchical", "flat"], default="hierarchical", help="see make_vectors")
    p.add_argument("--build-only", action="store_true", help="build (and cache) the tables, measure nothing")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    suffix = "" if args.structure == "flat" else f"-{args.structure}"
    store = Store(Path(args.cache) / f"d{args.dim}-c{args.clusters}-s{args.seed}{suffix}")
    print(
        f"edgeminer search bench: k={K}, {args.queries} queries per cell, exact up to "
        f"{EXACT_SEARCH_MAX_CANDIDATES:,} candidates, index: nprobes >= {SEARCH_NPROBES} (probed partitions hold "
        f"~{SEARCH_PROBE_MATCHES} matching rows), refine x{SEARCH_REFINE_FACTOR}"
    )
    rows = []
    for n in sizes:
        rows.extend(run_size(store, n, args))
    print("\n" + HEADER)
    for r in rows:
        print(_fmt_row(r))
    ok = all(r["edgeminer_recall"] >= 0.95 for r in rows)
    print(f"\nrecall@10 >= 0.95 everywhere: {'yes' if ok else 'NO'}")
    for r in rows:
        ratio = r["edgeminer_p50_ms"] / r["numpy_p50_ms"]
        print(
            f"  {r['rows']:>9,} {r['filter']:>4}: edgeminer p50 = {ratio:.2f} x numpy p50; "
            f"recall {r['edgeminer_recall']:.3f} vs lancedb-default {r['lancedb_default_recall']:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
