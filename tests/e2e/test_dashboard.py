"""The dashboard end to end: Debian Chromium against `edgeminer serve` on the demo data.

Checks what a person does: the map draws every analyzed row, the top failure cluster opens with its
images, a lasso selects exactly the points inside it, the selection is flagged as an issue, similar
unlabeled rows are found and one is dropped, and the rest is exported to Label Studio and the
downloaded file is read back. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import io
import json
import math
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from edgeminer.indexer.analysis.run import load_analysis

pytestmark = pytest.mark.e2e

READY = "window.edgeminer && window.edgeminer.ready"


def open_dashboard(page: Any, url: str) -> None:
    page.goto(f"{url}/?dataset=demo")
    page.wait_for_function(READY, timeout=60_000)


def assert_no_js_errors(page: Any) -> None:
    errors = [e for e in page.js_errors if "favicon" not in e]
    assert not errors, "\n".join(errors)


def top_failure_cluster(store: Any) -> dict[str, Any]:
    doc = load_analysis(store, "demo")
    assert doc is not None, "the demo has no analysis"
    ranked = [c for c in doc["clusters"] if c.get("failure_rank")]
    assert ranked, "the demo analysis found no failure cluster"
    return min(ranked, key=lambda c: c["failure_rank"])


def inside(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon, the same rule the page uses."""
    result = np.zeros(x.shape, dtype=bool)
    m = len(poly)
    for a in range(m):
        b = (a - 1) % m
        xa, ya = poly[a]
        xb, yb = poly[b]
        crosses = (ya > y) != (yb > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xt = (xb - xa) * (y - ya) / (yb - ya) + xa
        result ^= crosses & (x < xt)
    return result


def test_map_draws_the_demo_points(demo_server: Any, analyzed_demo: Any, page: Any, artifacts: Path) -> None:
    store = analyzed_demo.store
    total = store.count("demo")
    placed = store.count("demo", "status = 'ok' AND x IS NOT NULL AND y IS NOT NULL")
    assert placed > 1000
    open_dashboard(page, demo_server.url)
    assert_no_js_errors(page)  # every module loaded and the boot logged no error
    got = page.evaluate(
        """() => ({n: edgeminer.state.pts.n, ids: edgeminer.state.pts.ids.length,
                   attr: Number(document.querySelector('#map').dataset.points),
                   lit: edgeminer.ui.map.litPixels()})"""
    )
    assert got["n"] == got["ids"] == got["attr"] == placed
    assert page.inner_text("#summary").startswith(f"{total:,} rows")
    # every point covers a few pixels; overlaps make the lit area smaller than the sum, not tiny
    assert got["lit"] > placed * 3, got
    legend = page.inner_text("#legend")
    for word in ("correct", "wrong", "unlabeled"):
        assert word in legend
    # recolor by class: the legend lists the demo's ten digits
    page.select_option("#color-by", "label")
    page.wait_for_selector("#legend[data-color-by=label]", timeout=30_000)
    items = page.eval_on_selector_all("#legend .item", "xs => xs.map(x => x.innerText.split(/\\s/)[0])")
    assert [str(d) for d in range(10)] == items[:10]
    page.select_option("#color-by", "outcome")
    # hovering a point shows its thumbnail and labels
    pid, sx, sy = page.evaluate(
        """() => { const m = edgeminer.ui.map, p = edgeminer.state.pts;
                   let i = 0;
                   for (let k = 0; k < p.n; k++) if (p.outcomeNames[p.outcome[k]] === 'wrong_class') { i = k; break; }
                   const [x, y] = m.toScreen(p.xy[2 * i], p.xy[2 * i + 1]).map(Math.round);
                   return [p.ids[m.pick(x, y)], x, y]; }"""
    )
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    page.wait_for_function(
        "(() => { const i = document.querySelector('#tooltip img'); return i && i.complete && i.naturalWidth > 0; })()"
    )
    page.wait_for_function("!document.querySelector('#tooltip').innerText.includes('…')")
    tip = page.inner_text("#tooltip")
    row = store.get_samples("demo", [pid], columns=["id", "label", "pred_label"]).to_pylist()[0]
    assert pid in tip and f"label\t{row['label']}" in tip.replace("\n", "\t") and row["pred_label"] in tip
    page.screenshot(path=str(artifacts / "map.png"))
    # a drag in pan mode moves the view by the drag; once the motion stops every point is drawn again
    cx0, scale = page.evaluate("[edgeminer.ui.map.view.cx, edgeminer.ui.map.view.scale]")
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 400, box["y"] + 300, steps=10)
    page.mouse.up()
    cx1 = page.evaluate("edgeminer.ui.map.view.cx")
    assert cx1 == pytest.approx(cx0 - 100 / scale, abs=1.5 / scale)
    page.wait_for_function(f"!edgeminer.ui.map.interacting && edgeminer.ui.map.drawnLast === {placed}")
    assert_no_js_errors(page)


def test_top_failure_cluster_shows_its_images(
    demo_server: Any, analyzed_demo: Any, page: Any, artifacts: Path
) -> None:
    top = top_failure_cluster(analyzed_demo.store)
    open_dashboard(page, demo_server.url)
    first = page.locator("#cluster-table tbody tr").first
    assert first.get_attribute("data-cluster") == str(top["id"])
    first.click()
    page.wait_for_selector("#cluster-worst .tile img")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#cluster-worst .tile img, #cluster-typical .tile img')]
                 .every(i => i.complete && i.naturalWidth > 0)""",
        timeout=30_000,
    )
    worst = page.eval_on_selector_all("#cluster-worst .tile", "ts => ts.map(t => t.dataset.id)")
    typical = page.eval_on_selector_all("#cluster-typical .tile", "ts => ts.map(t => t.dataset.id)")
    assert worst == top["worst_failures"][: len(worst)] and worst
    assert typical == top["typical"][: len(typical)] and typical
    # the worst failures are shown as wrong (red border) and the map highlights the cluster's rows
    assert page.locator("#cluster-worst .tile.wrong").count() == len(worst)
    assert page.evaluate("edgeminer.ui.map.hiCount") == top["size"]
    assert f"#{top['id']}" in page.inner_text("#cluster-title")
    page.screenshot(path=str(artifacts / "cluster.png"))
    # a tile opens the detail view with ground truth, prediction and probabilities
    page.locator("#cluster-worst .tile").first.click()
    page.wait_for_selector("#detail-info .probs")
    info = page.inner_text("#detail-info")
    row = analyzed_demo.store.get_samples("demo", [worst[0]], columns=["label", "pred_label"]).to_pylist()[0]
    assert row["label"] in info and row["pred_label"] in info
    page.wait_for_function("document.querySelector('#detail-img').naturalWidth > 0")
    page.screenshot(path=str(artifacts / "detail.png"))
    assert_no_js_errors(page)


def lasso(page: Any, points: list[tuple[float, float]]) -> None:
    box = page.locator("#overlay").bounding_box()
    page.click("#modes button[data-mode=lasso]")
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x, y0 + y, steps=2)
    page.mouse.up()


def test_lasso_flag_mine_and_export_to_label_studio(
    demo_server: Any, analyzed_demo: Any, page: Any, artifacts: Path, tmp_path: Path
) -> None:
    store = analyzed_demo.store
    top = top_failure_cluster(store)
    open_dashboard(page, demo_server.url)
    page.locator(f"#cluster-table tbody tr[data-cluster='{top['id']}']").click()
    page.wait_for_selector("#cluster-worst .tile")

    # a lasso (a 24-gon) around the cluster's centre, drawn with the mouse
    cx, cy = top["centroid"]
    sx, sy, r = page.evaluate(
        """([x, y]) => { const m = edgeminer.ui.map; const [a, b] = m.toScreen(x, y);
                        return [a, b, Math.min(m.cssW, m.cssH) * 0.18]; }""",
        [cx, cy],
    )
    poly_px = [(sx + r * math.cos(2 * math.pi * k / 24), sy + r * math.sin(2 * math.pi * k / 24)) for k in range(24)]
    lasso(page, poly_px)
    page.wait_for_function("edgeminer.state.selection.source.startsWith('lasso')")
    selected = set(page.evaluate("Array.from(edgeminer.state.selection.indices, i => edgeminer.state.pts.ids[i])"))
    # the same polygon, in data coordinates, against the stored x / y
    vcx, vcy, scale, w, h = page.evaluate(
        "(() => { const m = edgeminer.ui.map; return [m.view.cx, m.view.cy, m.view.scale, m.cssW, m.cssH]; })()"
    )
    path = page.evaluate("edgeminer.ui.map.lastPath || null")
    pts_px = np.array(path if path else poly_px, dtype=np.float64)
    poly = np.stack([vcx + (pts_px[:, 0] - w / 2) / scale, vcy - (pts_px[:, 1] - h / 2) / scale], axis=1)
    table = store.query("demo", where="x IS NOT NULL", columns=["id", "x", "y"])
    x = table["x"].to_numpy().astype(np.float64)
    y = table["y"].to_numpy().astype(np.float64)
    expected = {i for i, keep in zip(table["id"].to_pylist(), inside(poly, x, y), strict=True) if keep}
    assert len(expected) >= 10
    assert selected == expected
    assert page.inner_text("#sel-count").startswith(f"{len(expected)} rows selected")

    # flag the selection as an issue
    issue_name = f"e2e lasso {uuid.uuid4().hex[:8]}"  # unique: a reused demo keeps older issues
    page.fill("#flag-form input[name=name]", issue_name)
    page.click("#flag-form button[type=submit]")
    page.wait_for_selector(".toast.ok")
    issues = httpx.get(demo_server.api("/datasets/demo/issues"), timeout=10).json()
    issues = issues if isinstance(issues, list) else issues.get("items", [])
    mine = [i for i in issues if i["name"] == issue_name]
    assert len(mine) == 1 and set(mine[0]["sample_ids"]) == expected

    # find similar unlabeled rows from the selection
    page.click(".tabs button[data-tab=mine]")
    page.select_option("#mine-form select[name=source]", "selection")
    page.fill("#mine-form input[name=budget]", "30")
    # other tests of the session may have exported demo rows: count them as candidates too
    page.check("#mine-form input[name=include_exported]")
    page.click("#mine-form button[type=submit]")
    page.wait_for_selector("#mine-grid .tile", timeout=60_000)
    page.wait_for_function(
        "[...document.querySelectorAll('#mine-grid .tile img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    found = page.eval_on_selector_all("#mine-grid .tile", "ts => ts.map(t => t.dataset.id)")
    assert 0 < len(found) <= 30
    rows = store.get_samples("demo", found, columns=["labeled", "split"]).to_pylist()
    assert len(rows) == len(found) and not any(r["labeled"] for r in rows), "mining returned labeled rows"
    assert not set(found) & expected
    assert page.evaluate("edgeminer.ui.map.hiCount") == len(found)
    page.screenshot(path=str(artifacts / "mining.png"))
    # drop one result
    dropped = found[0]
    page.click(f"#mine-grid .tile[data-id='{dropped}'] .drop")
    kept = page.eval_on_selector_all("#mine-grid .tile", "ts => ts.map(t => t.dataset.id)")
    assert kept == found[1:]

    # export the kept results to Label Studio and read the download back
    page.click("#mine-export")
    assert page.input_value("#export-form select[name=source]") == "mined"
    page.select_option("#export-form select[name=format]", "label_studio")
    page.click("#export-form button[type=submit]")
    page.wait_for_selector("#export-jobs a.download, #export-jobs .job.failed", timeout=120_000)
    assert page.locator("#export-jobs .job.failed").count() == 0, page.inner_text("#export-jobs")
    link = page.wait_for_selector("#export-jobs a.download")
    with page.expect_download() as dl_info:
        link.click()
    target = tmp_path / (dl_info.value.suggested_filename or "export")
    dl_info.value.save_as(target)
    tasks = read_label_studio_tasks(target)
    assert sorted(t["data"]["edgeminer_id"] for t in tasks) == sorted(kept)
    rows = store.get_samples("demo", kept, columns=["id", "pred_label"]).to_pylist()
    preds = {r["id"]: r["pred_label"] for r in rows}
    for t in tasks:
        result = t["predictions"][0]["result"][0]
        assert result["value"]["choices"] == [preds[t["data"]["edgeminer_id"]]]
    # images are linked to this server's media route (the form's default), and the links work
    for t in tasks[:3]:
        url = t["data"]["image"]
        assert url.startswith(demo_server.url), url
        resp = httpx.get(url, timeout=10)
        assert resp.status_code == 200
        assert Image.open(io.BytesIO(resp.content)).size[0] > 0
    page.screenshot(path=str(artifacts / "export.png"))
    assert_no_js_errors(page)


def read_label_studio_tasks(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if n.endswith(".json")]
            assert names, f"no JSON in the export archive: {zf.namelist()}"
            name = next((n for n in names if n.endswith("tasks.json")), names[0])
            assert any(n.endswith(".xml") for n in zf.namelist()), "the labeling config is missing"
            return json.loads(zf.read(name))  # type: ignore[no-any-return]
    return json.loads(data)  # type: ignore[no-any-return]


def test_insights_and_filters_select_the_right_rows(
    demo_server: Any, analyzed_demo: Any, page: Any, artifacts: Path
) -> None:
    store = analyzed_demo.store
    open_dashboard(page, demo_server.url)
    page.click(".tabs button[data-tab=insights]")
    page.wait_for_selector("#chart-labels svg .row")
    assert page.locator("#chart-labels svg .row").count() == 10
    page.wait_for_selector("#chart-meta svg .row")
    meta_rows = page.eval_on_selector_all("#chart-meta svg .row text", "ts => ts.map(t => t.textContent)")
    assert "inverted" in meta_rows  # the demo's planted slices show up in the metadata chart
    # click the top confusion pair: the selection is exactly those rows
    first = page.locator("#confusion-table tbody tr").first
    label, pred = first.locator("td").nth(0).inner_text(), first.locator("td").nth(1).inner_text()
    count = int(first.locator("td").nth(2).inner_text())
    page.screenshot(path=str(artifacts / "insights.png"))
    first.click()
    page.wait_for_function("edgeminer.state.selection.source.includes('predicted as')")
    want = store.count("demo", f"label = '{label}' AND pred_label = '{pred}' AND x IS NOT NULL")
    assert want == count
    assert page.evaluate("edgeminer.state.selection.indices.length") == want

    # the filter form: wrong predictions in val
    page.click(".tabs button[data-tab=selection]")
    page.select_option("#filters select[name=split]", "val")
    page.select_option("#filters select[name=outcome]", "wrong")
    page.click("#filters button[type=submit]")
    page.wait_for_function("edgeminer.state.selection.source.includes('split eq val')")
    want = store.count("demo", "split = 'val' AND correct = false AND x IS NOT NULL")
    assert page.evaluate("edgeminer.state.selection.indices.length") == want > 0
    # the grid shows them as wrong predictions
    page.wait_for_selector("#sel-grid .tile")
    assert page.locator("#sel-grid .tile.wrong").count() == min(want, 48)
    assert_no_js_errors(page)
