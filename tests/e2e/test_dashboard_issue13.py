"""The dashboard items of issue 13's new-user list and issue 12's banner, in Debian Chromium against a
real `edgeminer serve`: the Export tab defaults to the rows just mined, Find similar and Label next each
keep their own list under their own header, captions show whole class names, the tabs fit on one line
at 1440 px (and stay on one line, scrolling, when narrower), a banner says when the analysis is older
than the data (after a labels import), and an unanalyzed dataset shows nothing of the previous one.

Data: a private copy of the analyzed demo, plus synthetic datasets in the same store: ``flowers``
(long class names), ``relabel`` (labels imported after its analysis) and ``fresh`` (never analyzed).
Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import Server, give_images, mine_from_cluster, start_server, stop_server
from factories import make_synthetic

from edgeminer.indexer.analysis.run import analyze, load_analysis
from edgeminer.indexer.store import Store

pytestmark = pytest.mark.e2e

READY = "window.edgeminer && window.edgeminer.ready"
FLOWERS = ("flower_lemon_yellow", "flower_lemon_white", "flower_orange_blossom")
PCA_FAST = {"min_cluster_size": 3}  # 15 rows: below MIN_UMAP_ROWS the map is laid out by PCA


@pytest.fixture(scope="module")
def server(browser_ok: None, demo_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("issue13")
    demo = demo_env.copy(base)
    if load_analysis(demo.store, "demo") is None:
        analyze(demo.store, "demo")
    store = Store(demo.data_dir)
    media = base / "media"
    for name in ("flowers", "relabel"):
        make_synthetic(store, name, n_clusters=3, per_cluster=5, classes=FLOWERS, error_clusters=(1,), seed=4)
        give_images(store, name, media)
        analyze(store, name, PCA_FAST)
    make_synthetic(store, "fresh", n_clusters=3, per_cluster=5, seed=1)
    give_images(store, "fresh", media)
    srv = start_server(demo.data_dir, base / "serve.log", media_roots=(demo.demo_dir, media))
    try:
        yield srv
    finally:
        stop_server(srv)



def open_dataset(page: Any, url: str, name: str = "demo") -> None:
    page.goto(f"{url}/?dataset={name}")
    page.wait_for_function(READY, timeout=60_000)


def assert_no_js_errors(page: Any, allow: str = "favicon") -> None:
    errors = [e for e in page.js_errors if "favicon" not in e and allow not in e]
    assert not errors, "\n".join(errors)


def top_cluster_id(page: Any) -> int:
    return int(page.locator("#cluster-table tbody tr").first.get_attribute("data-cluster"))


def choose_next(page: Any, budget: int = 9) -> list[str]:
    page.click(".tabs button[data-tab=next]")
    page.fill("#select-form input[name=budget]", str(budget))
    page.check("#select-form input[name=include_exported]")
    page.click("#select-form button[type=submit]")
    page.wait_for_selector("#next-grid .tile", timeout=60_000)
    return page.eval_on_selector_all("#next-grid .tile", "ts => ts.map(t => t.dataset.id)")  # type: ignore[no-any-return]


def export_source_when_shown(page: Any) -> str:
    page.click(".tabs button[data-tab=export]")
    return page.input_value("#export-form select[name=source]")  # type: ignore[no-any-return]


def test_export_defaults_to_the_rows_just_mined(server: Server, page: Any, artifacts: Path) -> None:
    open_dataset(page, server.url)
    assert page.evaluate("edgeminer.state.selection.indices.length") == 0
    mined = mine_from_cluster(page, top_cluster_id(page))
    assert mined
    # the selection is empty and there are mined rows: the Export tab offers the mined rows
    assert export_source_when_shown(page) == "mined"
    page.screenshot(path=str(artifacts / "issue13-export-default.png"))
    # a newer selection (a cluster's rows) becomes the default, then newer label-next rows
    page.click(".tabs button[data-tab=clusters]")
    page.locator("#cluster-table tbody tr").first.click()
    page.click("#cluster-select")
    page.wait_for_function("edgeminer.state.selection.indices.length > 0")
    assert export_source_when_shown(page) == "selection"
    chosen = choose_next(page)
    assert export_source_when_shown(page) == "next"
    # a source the person picks stays while nothing newer arrives
    page.select_option("#export-form select[name=source]", "mined")
    page.click(".tabs button[data-tab=issues]")
    assert export_source_when_shown(page) == "mined"
    # exporting the Label next rows sends exactly those ids
    page.select_option("#export-form select[name=source]", "next")
    page.select_option("#export-form select[name=format]", "csv")
    with page.expect_request(lambda r: r.url.endswith("/datasets/demo/exports") and r.method == "POST") as req:
        page.click("#export-form button[type=submit]")
    assert req.value.post_data_json["ids"] == chosen
    page.wait_for_selector("#export-jobs a.download, #export-jobs .job.failed", timeout=120_000)
    assert page.locator("#export-jobs .job.failed").count() == 0, page.inner_text("#export-jobs")
    assert_no_js_errors(page)


def test_find_similar_and_label_next_keep_their_own_lists(server: Server, page: Any, artifacts: Path) -> None:
    open_dataset(page, server.url)
    cid = top_cluster_id(page)
    mined = mine_from_cluster(page, cid)
    mine_head = page.inner_text("#mine-count")
    assert mine_head.startswith(f"{len(mined)} rows similar to") and f"cluster #{cid}" in mine_head
    chosen = choose_next(page, budget=9)
    # Label next's rows are listed in its own tab, under a header saying how they were chosen
    assert page.is_visible("#next-results") and len(chosen) == 9
    next_head = page.inner_text("#next-count")
    assert next_head.startswith("9 rows to label next, chosen by entropy"), next_head
    assert "9 of" in page.inner_text("#select-status")
    page.screenshot(path=str(artifacts / "issue13-label-next.png"))
    # Find similar still shows its own results under its own header
    page.click(".tabs button[data-tab=mine]")
    assert page.inner_text("#mine-count") == mine_head
    assert page.eval_on_selector_all("#mine-grid .tile", "ts => ts.map(t => t.dataset.id)") == mined
    assert "similar" not in next_head and "label next" not in mine_head
    # dropping a Label next row changes only that list
    page.click(".tabs button[data-tab=next]")
    page.click(f"#next-grid .tile[data-id='{chosen[0]}'] .drop")
    assert page.inner_text("#next-count").startswith("8 rows to label next")
    assert page.evaluate("edgeminer.state.results.mine.rows.length") == len(mined)
    assert page.evaluate("edgeminer.ui.map.hiCount") == 8
    assert_no_js_errors(page)


def test_captions_show_whole_class_names(server: Server, page: Any, artifacts: Path) -> None:
    open_dataset(page, server.url, "flowers")
    page.click(".tabs button[data-tab=selection]")
    page.click("#filters button[type=submit]")  # no filter: every row
    page.wait_for_function("edgeminer.state.selection.indices.length === 15")
    page.wait_for_function(
        "(() => { const cs = [...document.querySelectorAll('#sel-grid .tile .cap')];"
        " return cs.length === 15 && cs.every(c => !c.hidden && c.textContent); })()"
    )
    caps = page.eval_on_selector_all(
        "#sel-grid .tile",
        """ts => ts.map(t => { const c = t.querySelector('.cap'), r = c.getBoundingClientRect(),
                                     b = t.getBoundingClientRect();
            return {id: t.dataset.id, text: c.textContent, clipped: c.scrollWidth > c.clientWidth + 1 ||
                    c.scrollHeight > c.clientHeight + 1 || r.bottom > b.bottom + 1 || r.right > b.right + 1,
                    ellipsis: getComputedStyle(c).textOverflow, title: t.title}; })""",
    )
    store = Store(server.data_dir)
    rows = {r["id"]: r for r in store.query("flowers", columns=["id", "label", "pred_label", "labeled"]).to_pylist()}
    assert len(caps) == 15
    for cap in caps:
        row = rows[cap["id"]]
        want = f"{row['label']} → {row['pred_label']}" if row["labeled"] else f"pred {row['pred_label']}"
        assert cap["text"] == want, cap
        assert not cap["clipped"], cap  # every character visible: wrapped, not cut
        assert cap["ellipsis"] != "ellipsis"
        assert row["pred_label"] in cap["title"]
    page.screenshot(path=str(artifacts / "issue13-captions.png"))
    assert_no_js_errors(page)


TABS_ONE_LINE = """() => { const nav = document.querySelector('.tabs'), bs = [...nav.querySelectorAll('button')];
    const tops = new Set(bs.map(b => Math.round(b.getBoundingClientRect().top)));
    return {rows: tops.size, overflow: nav.scrollWidth - nav.clientWidth, tabs: bs.length,
            scrolls: getComputedStyle(nav).overflowX, navHeight: nav.getBoundingClientRect().height}; }"""


def test_tabs_fit_on_one_line_at_1440(server: Server, page: Any, artifacts: Path) -> None:
    open_dataset(page, server.url)
    assert page.viewport_size == {"width": 1440, "height": 900}
    # with the selection's badge at its widest: every row selected (a four-digit count)
    page.click(".tabs button[data-tab=selection]")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelector('#sel-badge').textContent === (1797).toLocaleString()")
    got = page.evaluate(TABS_ONE_LINE)
    assert got["rows"] == 1 and got["overflow"] <= 0, got
    page.screenshot(path=str(artifacts / "issue13-tabs-1440.png"))
    # narrower: still one line; what does not fit scrolls sideways, and every tab can be reached
    for width in (1280, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        page.wait_for_timeout(100)
        got = page.evaluate(TABS_ONE_LINE)
        assert got["rows"] == 1 and got["navHeight"] < 60, (width, got)
        assert got["overflow"] <= 0 or got["scrolls"] == "auto", (width, got)
        page.click(".tabs button[data-tab=insights]")
        assert page.is_visible("#tab-insights")
        page.click(".tabs button[data-tab=clusters]")
    page.screenshot(path=str(artifacts / "issue13-tabs-1024.png"))
    assert_no_js_errors(page)


def test_banner_when_the_analysis_is_older_than_the_data(server: Server, page: Any, artifacts: Path) -> None:
    open_dataset(page, server.url, "relabel")
    page.wait_for_selector("#cluster-table tbody tr[data-cluster]")
    assert page.is_hidden("#analysis-banner")
    # labels imported through the API: three unlabeled rows get a label
    store = Store(server.data_dir)
    ids = store.query("relabel", where="labeled = false", columns=["id"])["id"].to_pylist()[:3]
    csv = "id,label\n" + "".join(f"{i},{FLOWERS[0]}\n" for i in ids)
    r = httpx.post(server.api("/datasets/relabel/labels"), files={"file": ("labels.csv", csv, "text/csv")}, timeout=60)
    assert r.status_code == 200, r.text
    before = store.count("relabel", "labeled = true AND correct IS NOT NULL")
    open_dataset(page, server.url, "relabel")
    page.wait_for_selector("#analysis-banner:not([hidden])")
    text = page.inner_text("#analysis-banner")
    assert "older than the data" in text and "3 rows changed label or prediction" in text
    page.screenshot(path=str(artifacts / "issue13-stale-banner.png"))
    # "Analyze again" runs the analysis; then the banner is gone and the figures are the data's
    page.click("#analysis-banner button")
    page.wait_for_selector(".toast.ok", timeout=60_000)
    page.wait_for_function("edgeminer.state.analysis && !edgeminer.state.analysis.freshness.stale", timeout=60_000)
    assert page.is_hidden("#analysis-banner")
    assert page.evaluate("edgeminer.state.analysis.judged") == before
    assert_no_js_errors(page)


def test_unanalyzed_dataset_shows_nothing_of_the_previous_one(server: Server, page: Any, artifacts: Path) -> None:
    open_dataset(page, server.url)
    page.wait_for_selector("#cluster-table tbody tr[data-cluster]")
    assert "failure clusters among" in page.inner_text("#cluster-hint")
    page.locator("#cluster-table tbody tr").first.click()
    assert page.is_visible("#cluster-view")
    assert page.locator("#mine-form select[name=cluster] option").count() > 0
    page.select_option("#dataset", "fresh")
    page.wait_for_function(
        "edgeminer.state.ds === 'fresh' && "
        "document.querySelector('#cluster-table').innerText.includes('not been analyzed')"
    )
    assert "failure clusters among" not in page.inner_text("#cluster-hint")
    assert page.is_hidden("#cluster-view") and page.is_hidden("#analysis-banner")
    assert page.locator("#cluster-table tbody tr[data-cluster]").count() == 0
    assert page.locator("#mine-form select[name=cluster] option").count() == 0
    assert page.get_attribute("#map-wrap", "data-outlines") == "0"
    assert page.evaluate("edgeminer.state.clusters.length") == 0
    page.screenshot(path=str(artifacts / "issue13-unanalyzed.png"))
    assert_no_js_errors(page, allow="status of 404")  # the browser logs the API's 404 "not analyzed yet"


def test_label_next_from_the_failures_mines_half_and_takes_half_by_margin(server: Server, page: Any) -> None:
    """Label next's "from the failures" choice: POST /mine around the failures with diversity cover and
    uncertain_share 0.5; its rows fill the tab's list and the status says how many came from each half."""
    open_dataset(page, server.url)
    page.click(".tabs button[data-tab=next]")
    assert page.is_enabled("#select-form input[name=explore]")
    page.select_option("#select-form select[name=strategy]", "failures")
    assert page.is_disabled("#select-form input[name=explore]")  # it has no explore share
    page.fill("#select-form input[name=budget]", "10")
    page.check("#select-form input[name=include_exported]")
    with page.expect_request(lambda r: r.url.endswith("/datasets/demo/mine") and r.method == "POST") as req:
        page.click("#select-form button[type=submit]")
    body = req.value.post_data_json
    assert body["seeds"] == {"failures": True} and body["diversity"] == "cover" and body["uncertain_share"] == 0.5
    page.wait_for_selector("#next-grid .tile", timeout=60_000)
    assert page.locator("#next-grid .tile").count() == 10
    status = page.inner_text("#select-status")
    assert "10 of" in status and "5 mined near" in status and "5 by margin" in status, status
    assert "half mined near the model's failures, half by margin" in page.inner_text("#tab-next")
    assert_no_js_errors(page)
