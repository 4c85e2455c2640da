"""Follow the dataset name from the mine route to the store: how many project functions it passes
through, how often the walk climbs back up before going down again, and how often it crosses between
edgeminer.service and edgeminer.indexer.

One ``POST /api/v1/datasets/{ds}/mine`` (seeds: the top failure cluster, budget 50) is served in-process
on a synthetic dataset while a profiler hook records every call of a project function that takes the
dataset name (a parameter called ``dataset`` or ``name`` holding it). Counts:
  stops    calls of such functions, route included;
  climbs   a stop whose depth is not below the previous stop's (the walk went back up first);
  crosses  a stop whose nearest recorded caller sits in the other half (service <-> indexer).

Usage: .venv/bin/python bench/trace_dataset.py [--list]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from factories import make_synthetic  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from edgeminer.indexer.analysis.run import analyze, load_analysis  # noqa: E402
from edgeminer.indexer.store import Store  # noqa: E402
from edgeminer.service.api.app import create_app  # noqa: E402
from edgeminer.service.settings import Settings  # noqa: E402

DATASET = "tracedds"


def half(filename: str) -> str | None:
    path = str(Path(filename).resolve())
    for part in ("indexer", "service"):
        if f"{ROOT}/{part}/" in path:
            return part
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print every stop")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "db")
    make_synthetic(store, DATASET, n_clusters=4, per_cluster=40, dim=16)
    analyze(store, DATASET, progress=False)
    settings = Settings(data_dir=str(tmp / "db"), cache_dir=str(tmp / "cache"), ui_dir=str(tmp / "no-ui"))
    stops: list[tuple[int, str, str, str | None]] = []
    stack: list[tuple[FrameType, int]] = []

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            part = half(code.co_filename)
            if part is None:
                return
            names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            takes = any(n in ("dataset", "name") and frame.f_locals.get(n) == DATASET for n in names)
            if not takes:
                return
            parent = stack[-1] if stack else None
            depth = parent[1] + 1 if parent else 0
            caller = half(parent[0].f_code.co_filename) if parent else None
            where = f"{Path(code.co_filename).relative_to(ROOT)}:{code.co_firstlineno} {code.co_name}"
            stops.append((depth, where, part, caller))
            stack.append((frame, depth))
        elif event == "return" and stack and stack[-1][0] is frame:
            stack.pop()

    clusters = [c for c in load_analysis(store, DATASET)["clusters"] if c.get("failure_rank")]
    body = {"seeds": {"cluster": min(clusters, key=lambda c: c["failure_rank"])["id"]}, "budget": 50, "record": False}
    recording = [False]

    def maybe(frame: FrameType, event: str, arg: Any) -> None:
        if recording[0]:
            hook(frame, event, arg)

    threading.setprofile(maybe)  # set before the app starts its worker threads: the route runs on one
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            client.get("/api/v1/health")
            recording[0] = True
            resp = client.post(f"/api/v1/datasets/{DATASET}/mine", json=body)
            recording[0] = False
            assert resp.status_code == 200, resp.text
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    climbs = sum(1 for a, b in zip(stops, stops[1:], strict=False) if b[0] <= a[0])
    crosses_down = sum(1 for s in stops if s[3] == "service" and s[2] == "indexer")
    crosses_up = sum(1 for s in stops if s[3] == "indexer" and s[2] == "service")
    print(f"stops: {len(stops)}  climbs back up: {climbs}  service->indexer: {crosses_down}  "
          f"indexer->service: {crosses_up}")
    if args.list:
        for depth, where, _part, _caller in stops:
            print("  " * depth + where)


if __name__ == "__main__":
    main()
