"""A dataset before its first analysis: the page says what to do instead of drawing nothing, its
"Analyze now" button runs the server's analyze job, and then the map draws every row (a real store on
disk, a real server, Debian Chromium)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e_support import require_browser, start_server, stop_server
from factories import make_synthetic

from edgeminer.indexer.store import Store

pytestmark = pytest.mark.e2e


def test_unanalyzed_dataset_explains_itself_then_draws(page: Any, tmp_path: Path, artifacts: Path) -> None:
    require_browser()
    store = Store(tmp_path / "db")
    # 15 rows: below MIN_UMAP_ROWS the analysis lays the map out by PCA (no numba warm-up in this test)
    synth = make_synthetic(store, "fresh", n_clusters=3, per_cluster=5)
    server = start_server(tmp_path / "db", tmp_path / "serve.log")
    try:
        page.goto(f"{server.url}/?dataset=fresh")
        page.wait_for_function("window.edgeminer && window.edgeminer.ready", timeout=60_000)
        message = page.inner_text("#map-message")
        assert page.is_visible("#map-message") and "edgeminer analyze" in message
        assert page.evaluate("edgeminer.state.pts.n") == 0
        assert page.inner_text("#summary").startswith(f"{len(synth.ids)} rows")
        # the clusters panel shows the API's own explanation, not an empty table
        assert "not been analyzed yet" in page.inner_text("#cluster-table")
        page.screenshot(path=str(artifacts / "fresh-dataset.png"))

        # "Analyze now" runs the server's analyze job, shows its progress, then draws the map
        page.click("#map-message button#analyze-now")
        page.wait_for_function(f"edgeminer.state.pts && edgeminer.state.pts.n === {len(synth.ids)}", timeout=60_000)
        page.wait_for_selector(".toast.ok")
        assert page.is_hidden("#map-message")
        assert page.evaluate("edgeminer.state.pts.n") == len(synth.ids)
        assert page.evaluate("edgeminer.ui.map.litPixels()") > len(synth.ids)
        page.wait_for_selector("#cluster-table tbody tr[data-cluster]")
        # wheel zoom keeps the point under the cursor in place and magnifies the view
        before = page.evaluate("[edgeminer.ui.map.view.scale, ...edgeminer.ui.map.toData(200, 150)]")
        box = page.locator("#overlay").bounding_box()
        page.mouse.move(box["x"] + 200, box["y"] + 150)
        page.mouse.wheel(0, -400)
        page.wait_for_function(f"edgeminer.ui.map.view.scale > {before[0]} * 1.5")
        scale, *after = page.evaluate("[edgeminer.ui.map.view.scale, ...edgeminer.ui.map.toData(200, 150)]")
        # within a pixel: the browser may round the wheel event's position to whole pixels
        assert after == pytest.approx(before[1:], abs=1.0 / scale)
    finally:
        stop_server(server)
