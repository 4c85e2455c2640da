"""Load benchmark: a mixed read client against a real `edgeminer serve` on 127.0.0.1.

Each client loops over the dashboard's busiest calls on the demo dataset, in a fixed order:
  samples  GET  /datasets/demo/samples?limit=50&offset=<varies>
  mine     POST /datasets/demo/mine {seeds: {cluster: <top failure cluster>}, budget: 50, record: false}
  points   GET  /datasets/demo/points            (the binary map payload)
  clusters GET  /datasets/demo/clusters
For 1, 8 and 32 concurrent clients (threads with one keep-alive connection each) it runs for a fixed
time, then prints requests/s and p50/p95/p99 latency per route and overall, and the throughput ratio
against one client (on 2 cores the target is >= 1.5x at 8 clients, with p99 under 4x p50).

Loopback only; every level is bounded in time (--seconds) and in requests (--max-requests). The load
average is printed first: figures taken on a busy machine are flagged.

Usage: .venv/bin/python bench/load.py [--clients 1,8,32] [--seconds 20] [--data-dir DIR] [--serve-args ...]
Without --data-dir the demo is built once into ~/.cache/edgeminer-bench/load (about a minute).
Results also go to bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("edgeminer")
DATASET = "demo"
ROUTES = ("samples", "mine", "points", "clusters")


def build_demo(cache: Path) -> Path:
    data = cache / "db"
    if (cache / ".done").exists():
        return data
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    print(f"building the demo dataset into {cache} (once) ...", flush=True)
    subprocess.run(
        [str(EXE), "--data-dir", str(data), "demo", "--demo-dir", str(cache / "demo"), "--no-serve"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (cache / ".done").touch()
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, EDGEMINER_CACHE_DIR=str(data_dir.parent / "cache"))
    proc = subprocess.Popen(
        [str(EXE), "--data-dir", str(data_dir), "serve", "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"edgeminer serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("edgeminer serve did not answer /health within 60 s")


def top_failure_cluster(base: str) -> int:
    clusters = httpx.get(f"{base}/datasets/{DATASET}/clusters", timeout=30).json()
    items = clusters["clusters"] if isinstance(clusters, dict) else clusters
    failing = [c for c in items if c.get("failure_rank")]
    if not failing:
        raise SystemExit("the demo has no failure cluster: run its analysis first")
    return int(min(failing, key=lambda c: c["failure_rank"])["id"])


def one_client(
    base: str, cluster: int, stop_at: float, budget: list[int], out: dict[str, list[float]], errors: list[str], n: int
) -> None:
    lock = threading.Lock()
    with httpx.Client(base_url=base, timeout=60) as client:
        i = n
        while time.monotonic() < stop_at:
            route = ROUTES[i % len(ROUTES)]
            i += 1
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            t0 = time.perf_counter()
            if route == "samples":
                resp = client.get(f"/datasets/{DATASET}/samples", params={"limit": 50, "offset": (i * 37) % 1700})
            elif route == "mine":
                body = {"seeds": {"cluster": cluster}, "budget": 50, "record": False}
                resp = client.post(f"/datasets/{DATASET}/mine", json=body)
            elif route == "points":
                resp = client.get(f"/datasets/{DATASET}/points")
            else:
                resp = client.get(f"/datasets/{DATASET}/clusters")
            elapsed = time.perf_counter() - t0
            if resp.status_code != 200:
                errors.append(f"{route}: {resp.status_code} {resp.text[:200]}")
                continue
            out[route].append(elapsed)


def run_level(base: str, cluster: int, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    lat: list[dict[str, list[float]]] = [{r: [] for r in ROUTES} for _ in range(clients)]
    errors: list[str] = []
    budget = [max_requests]
    start = time.monotonic()
    stop_at = start + seconds
    threads = [
        threading.Thread(target=one_client, args=(base, cluster, stop_at, budget, lat[i], errors, i), daemon=True)
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    wall = time.monotonic() - start
    per_route: dict[str, Any] = {}
    every: list[float] = []
    for route in ROUTES:
        xs = sorted(x for c in lat for x in c[route])
        every.extend(xs)
        per_route[route] = summarize(xs, wall)
    every.sort()
    return {"clients": clients, "seconds": round(wall, 2), "all": summarize(every, wall), "routes": per_route,
            "errors": len(errors), "first_errors": errors[:3]}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1000


def summarize(xs: list[float], wall: float) -> dict[str, float]:
    return {"n": len(xs), "rps": round(len(xs) / wall, 2), "p50_ms": round(pct(xs, 0.50), 1),
            "p95_ms": round(pct(xs, 0.95), 1), "p99_ms": round(pct(xs, 0.99), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each level")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of one client before measuring")
    ap.add_argument("--max-requests", type=int, default=20_000, help="cap on requests per level")
    ap.add_argument("--repeats", type=int, default=1, help="repeat the levels; medians are reported")
    ap.add_argument("--data-dir", type=Path, help="a data dir holding an analyzed 'demo' dataset")
    ap.add_argument("--serve-args", default="", help="extra arguments for `edgeminer serve`, space-separated")
    args = ap.parse_args()

    load1 = os.getloadavg()[0]
    print(f"load average before start: {load1:.2f} on {os.cpu_count()} cores")
    if load1 >= 1.0:
        print("WARNING: the machine is busy (load >= 1): figures will be noisy; re-run on a quiet machine")

    data_dir = args.data_dir or build_demo(Path.home() / ".cache" / "edgeminer-bench" / "load")
    proc, base = start_server(data_dir, args.serve_args.split())
    try:
        cluster = top_failure_cluster(base)
        run_level(base, cluster, 1, args.warmup, args.max_requests)  # warm caches (thumbnails, tables)
        levels = [int(c) for c in args.clients.split(",")]
        runs: list[list[dict[str, Any]]] = []
        for rep in range(args.repeats):
            runs.append([run_level(base, cluster, c, args.seconds, args.max_requests) for c in levels])
            print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    results = []
    for li, clients in enumerate(levels):
        reps = [r[li] for r in runs]
        results.append(median_level(reps, clients))
    one = results[0]["all"]["rps"] if levels[0] == 1 else None
    # the ratio against one client is taken within each repeat (same warm server, minutes apart at most),
    # then its median and spread over the repeats
    ratios: dict[int, list[float]] = {}
    if levels[0] == 1:
        for li, clients in enumerate(levels):
            ratios[clients] = [r[li]["all"]["rps"] / r[0]["all"]["rps"] for r in runs if r[0]["all"]["rps"]]
    print()
    print(f"{'clients':>7} {'route':<9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  {'x 1 client':>18}")
    for res in results:
        for route in (*ROUTES, "all"):
            s = res["all"] if route == "all" else res["routes"][route]
            ratio = ""
            if one and route == "all" and ratios.get(res["clients"]):
                rs = ratios[res["clients"]]
                ratio = f"{statistics.median(rs):.2f}" + (f" ({min(rs):.2f}-{max(rs):.2f})" if len(rs) > 1 else "")
            print(f"{res['clients']:>7} {route:<9} {s['rps']:>7.1f} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} "
                  f"{s['p99_ms']:>8.1f}  {ratio:>18}")
        if res["errors"]:
            print(f"        {res['errors']} failed requests, e.g. {res['first_errors'][0]}")
    if args.repeats > 1:
        print(f"(median of {args.repeats} repeats per cell; the ratio is taken within each repeat: median (min-max))")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    doc = {"load_before": load1, "levels": results, "ratios_vs_one_client": ratios, "runs": runs}
    (out / "load.json").write_text(json.dumps(doc, indent=1))


def median_level(reps: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    def med(path: tuple[str, ...]) -> dict[str, Any]:
        cells = []
        for r in reps:
            node: Any = r
            for p in path:
                node = node[p]
            cells.append(node)
        merged = {k: statistics.median(c[k] for c in cells) for k in cells[0]}
        merged["rps_spread"] = [min(c["rps"] for c in cells), max(c["rps"] for c in cells)]
        return merged

    return {"clients": clients, "all": med(("all",)), "routes": {r: med(("routes", r)) for r in ROUTES},
            "errors": sum(r["errors"] for r in reps), "first_errors": [e for r in reps for e in r["first_errors"]][:3]}


if __name__ == "__main__":
    main()
