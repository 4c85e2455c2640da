"""Which aggregation should mining use by default? Measured on the demo's planted slices.

    .venv/bin/python bench/mine_demo.py            # builds the demo once under the cache, then measures

Seeds: every val failure (split val, correct = false): mixed seeds, the common case. Precision@budget =
share of the mined rows whose ``meta_slice`` != 'none' (the planted long-tail slices the model fails
on), for every aggregation, against random selection (mean of 20 seeds) and least-confidence selection
of the same size from the same candidates (the unlabeled pool).

Then the issue's "done when" check: seeds = the val failures of the top-ranked failure cluster; the
mined rows' precision for the slice behind that cluster (the seeds' majority slice), and the recall of
the index path against exact search for the same request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeminer.indexer.store import Store  # noqa: E402
from edgeminer.service.mining import (  # noqa: E402
    AGGREGATIONS,
    DEFAULT_AGGREGATION,
    DEFAULT_MODE_WEIGHTING,
    MODE_WEIGHTINGS,
    Seeds,
    mine,
)
from edgeminer.service.selection import select  # noqa: E402


def demo_store(cache: Path) -> Store:
    store = Store(cache / "db")
    if not store.has_dataset("demo") or store.count("demo") == 0:
        from edgeminer.indexer.demo import build_demo

        print("building the demo (once)...", flush=True)
        build_demo(cache / "demo", store, seed=0, progress=False)
    if store.count("demo", "cluster IS NOT NULL") == 0:
        from edgeminer.indexer.analysis.run import analyze

        print("analyzing the demo (once)...", flush=True)
        analyze(store, "demo")
    return store


def slice_of(store: Store, ids: list[str]) -> list[str]:
    return [r or "none" for r in store.get_samples("demo", ids, columns=["meta_slice"])["meta_slice"].to_pylist()]


def precision(store: Store, ids: list[str], target: str | None = None) -> float:
    if not ids:
        return float("nan")
    s = slice_of(store, ids)
    hits = [x == target for x in s] if target else [x != "none" for x in s]
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cache",
        default=os.environ.get("EDGEMINER_BENCH_CACHE", str(Path.home() / ".cache/edgeminer-bench")) + "/demo",
    )
    p.add_argument("--budgets", default="25,50,100,150")
    args = p.parse_args(argv)
    store = demo_store(Path(args.cache))
    pool = store.count("demo", "labeled = false")
    pool_slices = Counter(
        slice_of(store, store.query("demo", where="labeled = false", columns=["id"])["id"].to_pylist())
    )
    seeds = Seeds(failures=True, split="val")
    n_seeds = store.count("demo", "split = 'val' AND correct = false")
    base = 1 - pool_slices["none"] / pool
    print(f"demo: {pool} unlabeled rows, {base:.1%} of them in planted slices; {n_seeds} val failures as seeds")
    budgets = [int(b) for b in args.budgets.split(",")]
    print("\nprecision@budget (share of mined rows in a planted slice)")
    head = "".join(f"{'@' + str(b):>9}" for b in budgets)
    print(f"{'method':<30}{head}{'mean':>9}{'ms@' + str(budgets[-1]):>9}")
    table: dict[str, list[float]] = {}
    variants: list[tuple[str, dict[str, Any]]] = [(a, {"aggregation": a}) for a in AGGREGATIONS]
    variants += [
        (f"modes/{w}", {"aggregation": "modes", "mode_weighting": w})
        for w in MODE_WEIGHTINGS
        if w != DEFAULT_MODE_WEIGHTING  # the default is the "modes" row
    ]
    for name, kw in variants:
        vals, took = [], 0.0
        for b in budgets:
            t0 = time.perf_counter()
            res = mine(store, "demo", seeds, budget=b, **kw)
            took = (time.perf_counter() - t0) * 1000
            vals.append(precision(store, [r["id"] for r in res.rows]))
        table[name] = vals
        print(f"{'mine ' + name:<30}" + "".join(f"{v:>9.3f}" for v in vals) + f"{np.mean(vals):>9.3f}{took:>9.0f}")
    for name, kw in (
        ("least_confidence", {"strategy": "least_confidence"}),
        ("entropy", {"strategy": "entropy"}),
    ):
        vals = [precision(store, [r["id"] for r in select(store, "demo", budget=b, **kw).rows]) for b in budgets]
        table[name] = vals
        print(f"{'select ' + name:<30}" + "".join(f"{v:>9.3f}" for v in vals) + f"{np.mean(vals):>9.3f}")
    vals = []
    for b in budgets:
        runs = [select(store, "demo", strategy="random", budget=b, seed=s).rows for s in range(20)]
        vals.append(float(np.mean([precision(store, [r["id"] for r in rows]) for rows in runs])))
    table["random"] = vals
    print(f"{'select random (20 seeds)':<30}" + "".join(f"{v:>9.3f}" for v in vals) + f"{np.mean(vals):>9.3f}")
    best = max(AGGREGATIONS, key=lambda a: (np.mean(table[a]), a == "modes"))
    print(f"\nbest aggregation by mean precision over the budgets: {best} (the default is {DEFAULT_AGGREGATION})")

    # -- the top failure cluster ----------------------------------------------------------------
    from edgeminer.indexer.analysis.run import load_analysis

    doc: dict[str, Any] = load_analysis(store, "demo") or {}
    clusters = [c for c in doc.get("clusters", []) if c.get("failure_rank")]
    clusters.sort(key=lambda c: c["failure_rank"])
    if not clusters:
        print("no failure clusters in the analysis")
        return 0
    top = clusters[0]
    cseeds = Seeds(cluster=int(top["id"]), failures=True, split="val")
    seed_rows = store.query(
        "demo", where=f"cluster = {int(top['id'])} AND split = 'val' AND correct = false", columns=["id"]
    )["id"].to_pylist()
    behind = Counter(slice_of(store, seed_rows)).most_common(1)[0][0]
    in_pool = pool_slices[behind]
    budget = min(30, in_pool)
    exact = mine(store, "demo", cseeds, budget=budget, exact=True)
    store.ensure_indexes("demo", force=True)
    approx = mine(store, "demo", cseeds, budget=budget, exact=False)
    rec = len({r["id"] for r in exact.rows} & {r["id"] for r in approx.rows}) / max(1, len(exact.rows))
    lc = select(store, "demo", strategy="least_confidence", budget=budget).rows
    rnd = [select(store, "demo", strategy="random", budget=budget, seed=s).rows for s in range(20)]
    print(
        f"\ntop failure cluster {top['id']} (rank 1): {len(seed_rows)} val failure seeds, mostly slice {behind!r} "
        f"({in_pool} of the pool's rows); budget {budget}"
    )
    print(f"  mined rows returned: {len(approx.rows)} (index path), recall vs exact {rec:.3f}")
    print(
        f"  precision for {behind!r}: mine {precision(store, [r['id'] for r in approx.rows], behind):.3f}, "
        f"least_confidence {precision(store, [r['id'] for r in lc], behind):.3f}, "
        f"random {np.mean([precision(store, [r['id'] for r in x], behind) for x in rnd]):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
