"""How edgeminer's steps scale: the Ray engine against the local one, and each step's cost by row count, on
local disk and on a loopback S3 server.

    .venv/bin/python bench/scale.py                                 # (a) 20k images, (b) 100k + 1M rows
    .venv/bin/python bench/scale.py --images 0 --rows 100000 --reps 1   # quick
    .venv/bin/python bench/scale.py --images 0 --rows 100000,1000000 --s3-rows 20000   # the README's (b), (c)

(a) **Engines.** ``--images`` (default 20,000) 32x32 PNG digits (scikit-learn's digits rendered as the demo
    renders them, with its slices) and the demo's small CNN as a TorchScript model. ``edgeminer ingest
    --engine local`` and ``--engine ray`` (a local Ray the command starts and stops) each into a fresh
    data dir, run as the user would from the CLI, interleaved, ``--reps`` times. Reported: median seconds
    and the min-max; ratio ray / local (the issue's bar: Ray's overhead on one machine at most +25%).
(b) **Rows.** For each size in ``--rows`` (precomputed 512-d vectors, the clustered vectors of
    bench/search.py; 10% of the rows labeled "val" with a prediction that is wrong on a tenth of the
    clusters, the rest unlabeled), each step in its own child process so its peak memory (``ru_maxrss``)
    is its own: ``ingest`` (the ordinary pipeline with the precomputed embedder, no index build: rows/s),
    ``index`` (``Store.ensure_indexes``: the vector index and the scalar indexes), ``analyze`` (default
    parameters: sampled fit, every row placed), ``mine`` (20 queries, one seed each, budget 10, filtered
    to unlabeled rows: p50 ms and recall@10 against an exact scan of the same rows). ``--s3-rows`` sizes
    run the same steps against a moto S3 server on 127.0.0.1 that the bench starts (moto keeps objects in
    memory and answers slowly: keep those sizes modest). ``--reps`` repetitions of each step (median,
    min-max), one from ``--one-rep-from`` rows (default 500k) on.
(c) **Growth.** For consecutive sizes: how much each step's time and memory grew per 10x rows.

The machine's load is printed first; a load of 1 or more makes every figure indicative only. Data and
models are cached under ``--cache`` (default ~/.cache/edgeminer-bench/scale); each run's data dirs are
temporary and removed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

DIM = 512
QUERIES = 20
K = 10
LABELED_SHARE = 0.1  # rows labeled "val" (the rest unlabeled): analysis needs judged rows
WRONG_SHARE = 0.1  # clusters the "model" gets wrong


from search import load_note  # noqa: E402 - the same load line and warning as the search bench


def child(step: str, params: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one step in a fresh child process; its JSON result plus wall seconds and peak RSS (MiB)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, json.dumps(params)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step {step} failed (exit {os.waitstatus_to_exitcode(status)}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    result.setdefault("seconds", round(wall, 2))
    result["peak_mib"] = round(usage.ru_maxrss / 1024)
    return result


# -- (a) engines --------------------------------------------------------------------------------------


def make_images(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """``n`` demo-style digit PNGs, their manifest and the demo CNN (cached in ``folder``)."""
    from edgeminer.indexer import demo

    manifest, model = folder / f"images-{n}.csv", folder / "model.pt"
    if manifest.exists() and model.exists():
        return manifest, model
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        d = int(rng.integers(0, len(digits.images)))
        sl = demo.SLICES[i % 4] if rng.random() < 0.1 else "none"
        path = img_dir / f"{i:06d}.png"
        if not path.exists():
            demo._render(digits.images[d], sl, rng).save(path)
        labeled = rng.random() < 0.5
        rows.append([f"i{i:06d}", f"images/{i:06d}.png", "val" if labeled else "unlabeled",
                     str(digits.target[d]) if labeled else "", sl])
    if not model.exists():  # the demo's CNN, trained on the plain digits
        plain = np.stack([np.asarray(demo._render(img, "none", rng), dtype=np.float32) for img in digits.images])
        net, _ = demo.train_model((plain[:, None] / 255.0 * 2 - 1), digits.target, seed=seed, epochs=6)
        demo.export_torchscript(net, model)
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "split", "label", "slice"])
        w.writerows(rows)
    return manifest, model


def engines(args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    manifest, model = make_images(cache / "images", args.images)
    print(f"\n== (a) ingest of {args.images:,} images: local engine vs Ray engine ({args.reps} reps) ==")
    times: dict[str, list[float]] = {"local": [], "ray": []}
    counts: dict[str, Any] = {}
    for rep in range(args.reps):
        for engine in ("local", "ray"):
            with tempfile.TemporaryDirectory(dir=cache) as d:
                cmd = [str(Path(sys.executable).parent / "edgeminer"), "--data-dir", d, "ingest", str(manifest),
                       "--dataset", "scale", "--embedder", "torchscript", "--model-file", str(model),
                       "--image-root", str(manifest.parent), "--quiet", "--engine", engine]
                t0 = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if done.returncode != 0:
                    raise SystemExit(f"ingest --engine {engine} failed:\n{done.stderr[-2000:]}")
                times[engine].append(dt)
                counts[engine] = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                print(f"  rep {rep + 1} {engine:>5}: {dt:6.1f} s  {counts[engine][:110]}", flush=True)
    loc, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    ratios = [r / lo for r, lo in zip(times["ray"], times["local"], strict=True)]
    print(f"  local {loc:.1f} s [{min(times['local']):.1f}-{max(times['local']):.1f}], "
          f"ray {ray:.1f} s [{min(times['ray']):.1f}-{max(times['ray']):.1f}]; ratio ray/local "
          f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] "
          f"({args.images / loc:.0f} vs {args.images / ray:.0f} images/s)")
    return [{"part": "a", "local_s": times["local"], "ray_s": times["ray"], "ratio": ratios}]


# -- (b) rows -----------------------------------------------------------------------------------------


def make_rows(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """The manifest and the .npy of ``n`` precomputed rows (cached)."""
    from search import vector_chunks

    manifest, vec_path = folder / f"rows-{n}.csv", folder / f"rows-{n}.npy"
    if manifest.exists() and vec_path.exists():
        return manifest, vec_path
    folder.mkdir(parents=True, exist_ok=True)
    _, chunks = vector_chunks(n, DIM, 1000, seed)
    vecs = np.lib.format.open_memmap(vec_path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
    rng = np.random.default_rng(seed + 7)
    regions = 100  # a row's region: its largest of the first 100 coordinates (rows of a cluster mostly share it)
    wrong_regions = set(rng.choice(regions, size=int(regions * WRONG_SHARE), replace=False).tolist())
    with open(manifest.with_suffix(".tmp"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "split", "label", "pred_label", "score"])
        for start, part in chunks():
            vecs[start : start + len(part)] = part
            region = np.argmax(part[:, :regions], axis=1)  # class = region mod 10; wrong in 10% of regions
            labeled = rng.random(len(part)) < LABELED_SHARE
            for j in range(len(part)):
                i = start + j
                c = str(int(region[j]) % 10)
                wrong = int(region[j]) in wrong_regions
                pred = str((int(c) + 1) % 10) if wrong else c
                w.writerow([f"r{i:08d}", f"rows/{i}.png", "val" if labeled[j] else "unlabeled",
                            c if labeled[j] else "", pred, 0.6 if wrong else 0.9])
    vecs.flush()
    del vecs
    os.replace(vec_path.with_suffix(".tmp.npy"), vec_path)
    os.replace(manifest.with_suffix(".tmp"), manifest)
    return manifest, vec_path


def rows_steps(n: int, where: str, args: argparse.Namespace, cache: Path, env: dict[str, str] | None) -> dict[str, Any]:
    manifest, vec_path = make_rows(cache / "rows", n)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in ("ingest", "index", "analyze", "mine")}
    reps = args.reps if n < args.one_rep_from else 1
    for rep in range(reps):
        with data_dir(where, cache, rep) as d:
            base = {"data_dir": d, "dataset": "scale", "n": n}
            r = child("ingest", {**base, "manifest": str(manifest), "vectors": str(vec_path)}, env)
            r["rows_per_s"] = round(n / r["seconds"])
            out["ingest"].append(r)
            out["index"].append(child("index", base, env))
            out["analyze"].append(child("analyze", base, env))
            out["mine"].append(child("mine", {**base, "vectors": str(vec_path), "manifest": str(manifest)}, env))
            print(f"  {n:>10,} {where:>5} rep {rep + 1}: " + ", ".join(
                f"{s} {v[-1]['seconds']:.1f} s / {v[-1]['peak_mib']:,} MiB" for s, v in out.items()), flush=True)
    return {"rows": n, "where": where, "steps": out}


@contextmanager
def data_dir(where: str, cache: Path, rep: int) -> Iterator[str]:
    if where == "s3":
        yield f"s3://{S3['bucket']}/scale-{time.time_ns()}-{rep}"
        return
    d = tempfile.mkdtemp(dir=cache, prefix="rows-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


S3: dict[str, Any] = {}


# -- children -----------------------------------------------------------------------------------------


def _store(p: dict[str, Any]) -> Any:
    from edgeminer.indexer.store import Store

    return Store(p["data_dir"])


def step_ingest(p: dict[str, Any]) -> dict[str, Any]:
    from edgeminer.indexer.embedders import PrecomputedEmbedder
    from edgeminer.indexer.pipeline import ingest
    from edgeminer.indexer.sources import open_source

    t0 = time.perf_counter()
    report = ingest(_store(p), p["dataset"], open_source(p["manifest"], vectors=p["vectors"]), PrecomputedEmbedder(),
                    batch_size=4096, progress=False, build_indexes=False)
    return {"seconds": round(time.perf_counter() - t0, 2), "ok": report.ok_rows, "errors": report.error_rows}


def step_index(p: dict[str, Any]) -> dict[str, Any]:
    store = _store(p)
    t0 = time.perf_counter()
    done = store.ensure_indexes(p["dataset"], force=True)
    return {"seconds": round(time.perf_counter() - t0, 2), "vector_index": str(done.get("vector_index"))}


def step_analyze(p: dict[str, Any]) -> dict[str, Any]:
    from edgeminer.indexer.analysis.run import analyze

    t0 = time.perf_counter()
    report = analyze(_store(p), p["dataset"], progress=False)
    return {"seconds": round(time.perf_counter() - t0, 2), "clusters": report.n_clusters, "mode": report.mode,
            "fitted": report.fitted, "transformed": report.transformed}


def step_mine(p: dict[str, Any]) -> dict[str, Any]:
    from edgeminer.service.mining import ResolvedSeeds, mine, normalize

    store = _store(p)
    vecs = np.load(p["vectors"], mmap_mode="r")
    with open(p["manifest"], newline="") as f:
        unlabeled = np.array([r["split"] == "unlabeled" for r in csv.DictReader(f)])
    rng = np.random.default_rng(1)
    picks = rng.choice(len(vecs), size=QUERIES, replace=False)
    queries = normalize(np.asarray(vecs[np.sort(picks)]) + rng.normal(scale=0.3 / np.sqrt(DIM), size=(QUERIES, DIM))
                        .astype(np.float32))
    best = [np.full(K, -np.inf) for _ in range(QUERIES)]
    best_ids = [np.full(K, -1) for _ in range(QUERIES)]
    for start in range(0, len(vecs), 200_000):  # exact truth: a chunked scan of the unlabeled rows
        part = np.asarray(vecs[start : start + 200_000])
        sims = queries @ part.T
        sims[:, ~unlabeled[start : start + len(part)]] = -np.inf
        for qi in range(QUERIES):
            s = np.concatenate([best[qi], sims[qi]])
            ids = np.concatenate([best_ids[qi], np.arange(start, start + len(part))])
            top = np.argpartition(-s, K)[:K]
            best[qi], best_ids[qi] = s[top], ids[top]
    store.prewarm_vector_index(p["dataset"])
    lat, recall = [], []
    for qi, q in enumerate(queries):
        t0 = time.perf_counter()
        res = mine(store, p["dataset"], ResolvedSeeds(["q"], q[None, :], [None]), budget=K,
                   aggregation="min_distance", where="split = 'unlabeled'", k=K)
        lat.append(time.perf_counter() - t0)
        truth = {f"r{int(i):08d}" for i in best_ids[qi]}
        recall.append(len(truth & {r["id"] for r in res.rows}) / K)
    return {"p50_ms": round(1000 * float(np.median(lat)), 1), "recall10": round(float(np.mean(recall)), 3)}


STEPS = {"ingest": step_ingest, "index": step_index, "analyze": step_analyze, "mine": step_mine}


# -- report -------------------------------------------------------------------------------------------


def _cell(vals: list[float], fmt: str = "{:.1f}") -> str:
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(vals))}-{fmt.format(max(vals))}]"


def print_rows(results: list[dict[str, Any]]) -> None:
    print("\n== (b) steps by rows (median [min-max] over reps) ==")
    print(f"{'rows':>10} {'where':>5}  {'ingest rows/s':>20} {'index s':>18} {'analyze s':>18} {'analyze MiB':>20} "
          f"{'mine p50 ms':>18} {'recall@10':>9}")
    for r in results:
        s = r["steps"]
        print(f"{r['rows']:>10,} {r['where']:>5}  {_cell([x['rows_per_s'] for x in s['ingest']], '{:,.0f}'):>20} "
              f"{_cell([x['seconds'] for x in s['index']]):>18} {_cell([x['seconds'] for x in s['analyze']]):>18} "
              f"{_cell([x['peak_mib'] for x in s['analyze']], '{:,.0f}'):>20} "
              f"{_cell([x['p50_ms'] for x in s['mine']]):>18} "
              f"{statistics.median([x['recall10'] for x in s['mine']]):>9.3f}")
    print("\n== (c) growth per 10x rows (time ratio, peak-memory ratio) ==")
    by_where: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_where.setdefault(r["where"], []).append(r)
    for where, rs in by_where.items():
        rs.sort(key=lambda r: r["rows"])
        for a, b in zip(rs, rs[1:], strict=False):
            per = np.log10(b["rows"] / a["rows"])
            parts = []
            for step in ("ingest", "index", "analyze", "mine"):
                key = "p50_ms" if step == "mine" else "seconds"
                ta = statistics.median([x[key] for x in a["steps"][step]])
                tb = statistics.median([x[key] for x in b["steps"][step]])
                ma = statistics.median([x["peak_mib"] for x in a["steps"][step]])
                mb = statistics.median([x["peak_mib"] for x in b["steps"][step]])
                parts.append(f"{step} x{(tb / ta) ** (1 / per):.1f} time, x{(mb / ma) ** (1 / per):.1f} memory")
            print(f"  {where} {a['rows']:,} -> {b['rows']:,}: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20_000, help="(a) images for local vs Ray (0: skip)")
    p.add_argument("--rows", default="100000,1000000", help="(b) comma-separated row counts on local disk ('' skip)")
    p.add_argument("--s3-rows", default="100000", help="(b) row counts on a loopback S3 server ('' skip)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (median and min-max reported)")
    p.add_argument("--one-rep-from", type=int, default=500_000, help="(b) sizes from this many rows run once")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "edgeminer-bench" / "scale"))
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(STEPS[args.child[0]](json.loads(args.child[1]))))
        return 0
    print(load_note(), flush=True)
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    if args.images:
        results += engines(args, cache)
    sizes = [int(s) for s in args.rows.split(",") if s]
    s3_sizes = [int(s) for s in args.s3_rows.split(",") if s]
    rows: list[dict[str, Any]] = [rows_steps(n, "local", args, cache, None) for n in sizes]
    if s3_sizes:
        from s3server import s3_server

        with s3_server() as server:
            S3["bucket"] = server.create_bucket("edgeminer-scale")
            env = {**server.env, "AWS_ALLOW_HTTP": "true"}
            rows += [rows_steps(n, "s3", args, cache, env) for n in s3_sizes]
    if rows:
        print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results + rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
