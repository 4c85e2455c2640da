"""`analyze` wall time and peak memory against plain umap-learn + hdbscan, same data, same run.

    .venv/bin/python bench/analyze.py [--sizes 10000,100000] [--dim 512] [--clusters 100] [--skip-peer]
        [--sample-rows N] [--workers N] [--engine local|ray]

    .venv/bin/python bench/analyze.py --sizes 1000000 --skip-peer   # the issue-11 target: <= 3 min, <= 4 GiB

For each size: seeded clustered vectors (``--clusters`` Gaussian blobs in ``--dim`` dims, 10 classes, a
tenth of the blobs mispredicted) are written once to a LanceDB store and to a .npy file. Then, each in
a fresh child process so that peak memory (``ru_maxrss``) is its own:

* ``edgeminer``: ``indexer.analysis.run.analyze`` with default parameters: read the rows from LanceDB
  chunk by chunk, PCA to 50 dims (from 20k rows on), UMAP to 2-D (seeded, so umap-learn's optimisation
  runs single-threaded; its neighbour graph comes from faiss on every core) and HDBSCAN (``hdbscan``
  package) on a seeded sample of ``--sample-rows`` rows (default: the ``analysis_sample_rows`` default,
  50,000), every other row placed from its nearest sampled rows by ``--workers`` processes (default: the
  cores) while UMAP runs, cluster summaries over every row, write x / y / cluster back, save state.
* ``peer``: ``np.load`` the vectors, ``umap.UMAP().fit_transform`` (all defaults: 512 dims, euclidean,
  unseeded so numba may use every core) and ``hdbscan.HDBSCAN().fit`` (defaults) on the map. No
  summaries, no store.

Both children first run a tiny UMAP to load numba's compiled functions, not timed. Peak memory includes
the interpreter, the imports and the loaded data, and is the larger of the child's own ``ru_maxrss`` and
the peak sum of the proportional set sizes (PSS) of the child and every process below it (the placement
workers, a local Ray), sampled every 0.25 s. Ratios are edgeminer / peer (time < 1 = faster,
memory < 1 = leaner). 1M rows (``--sizes 1000000``) needs about 2 GiB of vectors per copy plus a long
UMAP run; it is not in the default set on a 2-core machine.

Measured on this machine before the sampled fit (issue 11 part 3; every row fitted, 2 cores shared with
other jobs, load 5-7; 100 true blobs); re-measure with the current code::

         rows        who   seconds  peak MiB clusters
        10000  edgeminer      30.9      1002      100
        10000       peer      24.7       667      114   ratio time 1.25, memory 1.50
       100000  edgeminer      61.2      2064      100
       100000       peer     123.9      1358      206   ratio time 0.49, memory 1.52
      1000000  edgeminer     766.6     10495      100   (peer skipped: UMAP on raw 512-d at 1M)

At 1M rows, three runs gave 767-934 s and a 10.2-10.3 GiB peak whether PCA was fitted on all rows or on
a 100k sample and whether the vectors were read in one piece or chunk by chunk, so the peak is elsewhere
(UMAP's neighbour graph or LanceDB's scan; not profiled yet).

edgeminer's extra memory is LanceDB / Arrow reading the rows and the summaries; its UMAP runs seeded
(single-threaded) yet is faster at 100k thanks to PCA-50. The peer's default ``min_cluster_size=5``
splits the 100 blobs into 114 / 206 clusters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_data(n: int, dim: int, n_clusters: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    assign = rng.integers(0, n_clusters, size=n)
    vecs = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):  # float32 chunks: 1M x 512 needs 2 GiB, not 4 GiB of float64 noise
        sl = slice(start, min(n, start + 50_000))
        vecs[sl] = centres[assign[sl]] + 0.35 * rng.standard_normal(size=(sl.stop - sl.start, dim), dtype=np.float32)
    labels = assign % 10
    wrong_clusters = np.arange(n_clusters) % 10 == 3  # a tenth of the blobs is mispredicted
    pred = np.where(wrong_clusters[assign], (labels + 1) % 10, labels)
    flip = rng.random(n) < 0.03  # and a little noise everywhere
    pred = np.where(flip, (pred + 2) % 10, pred)
    labeled = rng.random(n) < 0.5
    return {"vectors": vecs, "labels": labels, "pred": pred, "labeled": labeled}


def write_store(root: Path, data: dict[str, np.ndarray]) -> None:
    import pyarrow as pa

    from edgeminer.indexer.store import Store

    store = Store(root / "db")
    vecs = data["vectors"]
    n, dim = vecs.shape
    store.create_dataset("bench", dim=dim, embedder={"kind": "precomputed"}, classes=[str(i) for i in range(10)])
    step = 20_000
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        lab = data["labeled"][sl]
        gt = data["labels"][sl]
        pr = data["pred"][sl]
        m = len(gt)
        store.upsert_samples(
            "bench",
            pa.table(
                {
                    "id": [f"r{i:08d}" for i in range(sl.start, sl.stop)],
                    "split": ["train" if v else "unlabeled" for v in lab],
                    "labeled": pa.array(lab),
                    "label": [str(g) if v else None for g, v in zip(gt, lab, strict=True)],
                    "pred_label": [str(p) for p in pr],
                    "confidence": pa.array(np.full(m, 0.8, dtype=np.float32)),
                    "correct": [bool(g == p) if v else None for g, p, v in zip(gt, pr, lab, strict=True)],
                    "status": ["ok"] * m,
                    "fingerprint": [f"f{i}" for i in range(sl.start, sl.stop)],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs[sl].reshape(-1)), dim),
                }
            ),
        )


def _warm_up() -> None:
    import umap

    # big enough for umap-learn's nearest-neighbour descent path (>= 4096 rows), seeded and unseeded
    x = np.random.default_rng(0).normal(size=(5000, 16)).astype(np.float32)
    umap.UMAP(n_epochs=5, random_state=0).fit_transform(x)
    umap.UMAP(n_epochs=5).fit_transform(x)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _tree_mib(root: int) -> float:
    """Memory of ``root`` and every process below it (placement workers, a local Ray): the sum of their
    proportional set sizes (shared pages split between the processes sharing them), in MiB. Linux /proc."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        kids = [c for c, pp in parent.items() if pp == pid and c not in tree]
        tree.update(kids)
        todo.extend(kids)
    kib = 0
    for pid in tree:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        kib += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
    return kib / 1024.0


class _TreePeak:
    """Samples :func:`_tree_mib` of this process every 0.25 s in a thread; ``peak`` is the largest seen.
    ``ru_maxrss`` alone would miss the worker processes the analysis starts."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_mib(os.getpid()))
            self._stop.wait(0.25)

    def __enter__(self) -> _TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child(which: str, root: Path) -> dict[str, float]:
    import warnings

    warnings.filterwarnings("ignore")
    _warm_up()
    with _TreePeak() as tree:
        out = _timed(which, root)
    out["peak_mib"] = max(out["peak_mib"], tree.peak)
    return out


def _timed(which: str, root: Path) -> dict[str, float]:
    start = time.perf_counter()
    extra: dict[str, float] = {}
    if which == "edgeminer":
        from edgeminer.indexer.analysis.run import analyze
        from edgeminer.indexer.store import Store

        opts = json.loads(os.environ.get("EDGEMINER_BENCH_ANALYZE", "{}"))
        params = {"sample_rows": opts["sample_rows"]} if opts.get("sample_rows") else None
        report = analyze(
            Store(root / "db"), "bench", params, workers=opts.get("workers"), engine=opts.get("engine") or "local"
        )
        extra = {
            "clusters": report.n_clusters,
            "failure_clusters": report.n_failure_clusters,
            "fitted": report.fitted,
            "placed": report.placed,
        }
        extra.update({f"t_{k}": v for k, v in report.timings.items()})
    else:
        import hdbscan
        import umap

        x = np.load(root / "vectors.npy")
        xy = umap.UMAP().fit_transform(x)
        labels = hdbscan.HDBSCAN().fit(xy).labels_
        extra = {"clusters": int(labels.max()) + 1}
    return {"seconds": time.perf_counter() - start, "peak_mib": _peak_mib(), **extra}


def pca_sweep(sizes: list[int], dim: int, n_clusters: int) -> None:
    """Where PCA-50 before UMAP pays: the projection's fit time with pca off and on, same data."""
    import warnings

    from edgeminer.indexer.analysis.projection import Projector

    warnings.filterwarnings("ignore")
    _warm_up()
    warm = make_data(5000, dim, n_clusters, seed=1)["vectors"]
    for mode in ("off", "on"):  # compile both paths (512-d and 50-d distance kernels) before timing
        Projector(pca=mode, n_epochs=5).fit(warm)
    print(f"{'rows':>9} {'pca off s':>10} {'pca on s':>9} {'on/off':>7}")
    for n in sizes:
        x = make_data(n, dim, n_clusters)["vectors"]
        took = {}
        for mode in ("off", "on"):
            start = time.perf_counter()
            Projector(pca=mode).fit(x)
            took[mode] = time.perf_counter() - start
        print(f"{n:>9} {took['off']:>10.1f} {took['on']:>9.1f} {took['on'] / took['off']:>7.2f}", flush=True)


def run_child(which: str, root: Path, opts: dict[str, Any] | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "EDGEMINER_BENCH_ANALYZE": json.dumps(opts or {})},
    )
    if out.returncode != 0:
        raise SystemExit(f"{which} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--skip-peer", action="store_true", help="only edgeminer (e.g. for 1M rows)")
    ap.add_argument("--sample-rows", type=int, default=None, help="edgeminer's sample size (default: its default)")
    ap.add_argument("--workers", type=int, default=None, help="edgeminer's placement processes (default: cores)")
    ap.add_argument("--engine", choices=["local", "ray"], default="local", help="edgeminer's placement engine")
    ap.add_argument("--pca-sweep", default=None, help="sizes at which to time the projection with and without PCA")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pca_sweep:
        pca_sweep([int(s) for s in args.pca_sweep.split(",")], args.dim, args.clusters)
        return
    if args.child:
        print(json.dumps(child(args.child, Path(args.root))))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"analyze benchmark: {args.dim}-d clustered vectors ({args.clusters} blobs), cpu cores {os.cpu_count()}")
    print(f"{'rows':>9} {'who':>10} {'seconds':>9} {'peak MiB':>9} {'clusters':>8}  details")
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="edgeminer-bench-analyze-") as tmp:
            root = Path(tmp)
            data = make_data(n, args.dim, args.clusters)
            np.save(root / "vectors.npy", data["vectors"])
            write_store(root, data)
            del data
            opts = {"sample_rows": args.sample_rows, "workers": args.workers, "engine": args.engine}
            ours = run_child("edgeminer", root, opts)
            details = " ".join(f"{k[2:]}={v:.1f}s" for k, v in ours.items() if k.startswith("t_"))
            details += f", fitted={int(ours['fitted'])} placed={int(ours['placed'])}"
            print(
                f"{n:>9} {'edgeminer':>10} {ours['seconds']:>9.1f} {ours['peak_mib']:>9.0f} "
                f"{int(ours['clusters']):>8}  {details}, failure clusters={int(ours['failure_clusters'])}",
                flush=True,
            )
            peer = None
            if not args.skip_peer:
                peer = run_child("peer", root)
                print(
                    f"{n:>9} {'peer':>10} {peer['seconds']:>9.1f} {peer['peak_mib']:>9.0f} "
                    f"{int(peer['clusters']):>8}  umap-learn + hdbscan defaults",
                    flush=True,
                )
                print(
                    f"{n:>9} {'ratio':>10} {ours['seconds'] / peer['seconds']:>9.2f} "
                    f"{ours['peak_mib'] / peer['peak_mib']:>9.2f}           edgeminer / peer",
                    flush=True,
                )
            rows.append({"rows": n, "edgeminer": ours, "peer": peer})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
