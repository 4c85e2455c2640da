"""Detection data in the dashboard: one row per object (a box of a parent image), outcomes false
positive / false negative on the map and in the legend, and the detail view of an object row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_support import require_browser, start_server, stop_server
from factories import make_synthetic
from PIL import Image, ImageDraw

from edgeminer.indexer.store import Store

pytestmark = pytest.mark.e2e

CLASSES = ["cone", "person"]


def make_detection_dataset(root: Path) -> tuple[Store, list[dict[str, Any]]]:
    """3 images, 12 object rows (below MIN_UMAP_ROWS, so the analysis is a quick PCA)."""
    media = root / "images"
    media.mkdir(parents=True)
    store = Store(root / "db")
    store.create_dataset(
        "boxes", dim=4, embedder={"kind": "precomputed", "dim": 4}, classes=CLASSES, task="detection",
        media_roots=[str(media)],
    )
    rng = np.random.default_rng(0)
    outcomes = ["correct", "wrong_class", "false_positive", "false_negative"]
    rows = []
    for k in range(3):
        path = media / f"street-{k}.png"
        img = Image.new("RGB", (160, 120), (200, 220, 240))
        draw = ImageDraw.Draw(img)
        for j in range(4):
            x, y = 10 + 36 * j, 20 + 10 * k
            draw.rectangle((x, y, x + 30, y + 50), fill=(240, 120, 20) if j % 2 else (60, 60, 200))
            outcome = outcomes[j]
            label = None if outcome == "false_positive" else CLASSES[j % 2]
            pred = None if outcome == "false_negative" else CLASSES[(j + (outcome == "wrong_class")) % 2]
            rows.append(
                {
                    "id": f"street-{k}-obj{j}",
                    "uri": str(path),
                    "parent_id": f"street-{k}",
                    "bbox": [float(x), float(y), 30.0, 50.0],
                    "area": 1500.0,
                    "width": 160,
                    "height": 120,
                    "split": "val",
                    "labeled": True,
                    "label": label,
                    "pred_label": pred,
                    "confidence": None if pred is None else 0.6,
                    "correct": outcome == "correct",
                    "outcome": outcome,
                    "embedding": (rng.normal(size=4) + j).astype(np.float32).tolist(),
                    "status": "ok",
                    "fingerprint": f"fp-{k}-{j}",
                }
            )
        img.save(path)
    store.upsert_samples("boxes", rows)
    from edgeminer.indexer.analysis.run import analyze

    analyze(store, "boxes")
    return store, rows


def test_object_rows_show_detection_outcomes_and_their_box(page: Any, tmp_path: Path, artifacts: Path) -> None:
    require_browser()
    store, rows = make_detection_dataset(tmp_path)
    server = start_server(tmp_path / "db", tmp_path / "serve.log")
    try:
        page.goto(f"{server.url}/?dataset=boxes")
        page.wait_for_function("window.edgeminer && window.edgeminer.ready", timeout=60_000)
        assert page.evaluate("edgeminer.state.pts.n") == len(rows)
        legend = page.inner_text("#legend")
        for name in ("correct", "wrong", "false positive", "false negative"):
            assert name in legend
        # the detail of a false positive: its crop (the box of its image), the box and the prediction
        fp = next(r for r in rows if r["outcome"] == "false_positive")
        x, y = page.evaluate(
            f"""() => {{ const m = edgeminer.ui.map, p = edgeminer.state.pts;
                        const i = p.ids.indexOf({fp['id']!r});
                        return m.toScreen(p.xy[2 * i], p.xy[2 * i + 1]).map(Math.round); }}"""
        )
        assert page.evaluate(f"edgeminer.state.pts.ids[edgeminer.ui.map.pick({x}, {y})]") == fp["id"]
        box = page.locator("#overlay").bounding_box()
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_selector("#detail[open]")
        page.wait_for_function("document.querySelector('#detail-img').naturalWidth > 0")
        assert page.evaluate("document.querySelector('#detail-img').naturalWidth") == 30  # the box, cropped
        info = page.inner_text("#detail-info")
        assert "false positive" in info and fp["pred_label"] in info
        assert ", ".join(str(int(v)) for v in fp["bbox"]) in info
        page.screenshot(path=str(artifacts / "detection-detail.png"))

        # switching datasets swaps the map, the legend and the panels
        page.keyboard.press("Escape")
        make_synthetic(store, "other", n_clusters=2, per_cluster=5)  # not analyzed: no map yet
        page.reload()
        page.wait_for_function("window.edgeminer && window.edgeminer.ready", timeout=60_000)
        assert page.eval_on_selector_all("#dataset option", "os => os.map(o => o.value)") == ["boxes", "other"]
        page.select_option("#dataset", "other")
        page.wait_for_function("edgeminer.state.ds === 'other' && edgeminer.state.pts.n === 0")
        page.wait_for_selector("#map-message:not([hidden])")
        assert "analyze" in page.inner_text("#map-message")
        assert "dataset=other" in page.url
        page.select_option("#dataset", "boxes")
        page.wait_for_function(f"edgeminer.state.ds === 'boxes' && edgeminer.state.pts.n === {len(rows)}")
        # the message goes once the analyzed dataset's summary has loaded (after its points, under load)
        page.wait_for_selector("#map-message", state="hidden", timeout=15_000)
    finally:
        stop_server(server)
