"""The dashboard's Compare tab (issue 14), in Debian Chromium against a real `edgeminer serve`: the
per-cluster table shows the numbers `GET /compare` returns (compared cell by cell, in the API's order),
a click on a cluster row lists that cluster's fixed and broken rows (the ids `GET /compare/rows` gives),
the map coloured "outcome (compare)" paints as many fixed / broken points as the API counts, the tab bar
still fits on one line at 1440 px, and a dataset with one model version shows how to add one.

Data (built here, no demo): ``cmp``, a synthetic dataset of 4 clusters whose second model version fixes
the failure cluster and breaks most of another (a significant regression), made current and analyzed;
``one``, the small dataset of tests/versiondata.py with its single version v1. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import Server, give_images, start_server, stop_server
from factories import make_synthetic
from versiondata import write_dataset

from edgeminer.indexer.analysis.run import analyze
from edgeminer.indexer.embedders import PrecomputedEmbedder
from edgeminer.indexer.pipeline import ingest
from edgeminer.indexer.sources import open_source
from edgeminer.indexer.store import Store
from edgeminer.indexer.versions import ingest_predictions

pytestmark = pytest.mark.e2e

READY = "window.edgeminer && window.edgeminer.ready"
CLASSES = ("cat", "dog", "bird")
FIXED_CLUSTER, BROKEN_CLUSTER = 1, 2  # v1 fails cluster 1 (make_synthetic); v2 gets it right, breaks 2


@pytest.fixture(scope="module")
def server(browser_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("compare")
    store = Store(base / "data")
    media = base / "media"
    make_synthetic(store, "cmp", n_clusters=4, per_cluster=30, classes=CLASSES, error_clusters=(FIXED_CLUSTER,),
                   unlabeled_share=0.2, seed=3)  # fmt: skip
    give_images(store, "cmp", media)
    ingest_predictions(store, "cmp", "v2", source=open_source(str(write_v2(store, base))), make_current=True)
    analyze(store, "cmp", {"min_cluster_size": 5})
    ingest(store, "one", open_source(write_dataset(base / "one")), PrecomputedEmbedder(), progress=False)
    analyze(store, "one", {"min_cluster_size": 3})  # analyzed: no "not analyzed yet" 404 in the console
    srv = start_server(base / "data", base / "serve.log", media_roots=(media, base / "one"))
    try:
        yield srv
    finally:
        stop_server(srv)


def write_v2(store: Store, base: Path) -> Path:
    """v2's predictions: right on the failure cluster, wrong on 5 of 6 rows of BROKEN_CLUSTER, and one row
    in 9 of the other clusters wrong."""
    table = store.query("cmp", columns=["id", "uri"]).sort_by("id")
    out = []
    for sid, uri in zip(table["id"].to_pylist(), table["uri"].to_pylist(), strict=True):
        cluster, j = int(sid[1]), int(sid.split("-")[1])  # ids are c<cluster>-<j>
        true = cluster % len(CLASSES)
        if cluster == BROKEN_CLUSTER:
            wrong = j % 6 != 0
        else:
            wrong = cluster != FIXED_CLUSTER and j % 9 == 4
        pred = (true + 1) % len(CLASSES) if wrong else true
        probs = [0.1] * len(CLASSES)
        probs[pred] = 0.8
        out.append({"id": sid, "uri": uri, "probs": probs, "classes": list(CLASSES)})
    path = base / "v2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def open_compare(page: Any, url: str, name: str) -> None:
    page.goto(f"{url}/?dataset={name}")
    page.wait_for_function(READY, timeout=60_000)
    page.click(".tabs button[data-tab=compare]")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def get(server: Server, path: str, **query: Any) -> Any:
    r = httpx.get(server.api(f"/datasets/cmp{path}"), params=query, timeout=60)
    r.raise_for_status()
    return r.json()


def assert_no_js_errors(page: Any) -> None:
    errors = [e for e in page.js_errors if "favicon" not in e]
    assert not errors, "\n".join(errors)


IMAGES_LOADED = "[...document.querySelectorAll('#compare-view img')].every(i => i.complete && i.naturalWidth > 0)"
TABLE = """(sel) => [...document.querySelectorAll(sel + ' tbody tr')].map(tr => ({
    value: tr.dataset.value, key: tr.dataset.key,
    n: tr.querySelector('.n').textContent, fixed: tr.querySelector('.fixed').textContent,
    broken: tr.querySelector('.broken').textContent, acc: tr.querySelector('.acc').firstChild.textContent,
    verdict: tr.querySelector('.verdict').className.replace('verdict ', '')}))"""


def expected_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"value": str(g["value"]), "key": g["key"], "n": str(g["n"]), "fixed": str(g["fixed"]),
         "broken": str(g["broken"]), "verdict": g["verdict"],
         "acc": f"{pct(g['accuracy_base']['value'])} → {pct(g['accuracy_new']['value'])}"}
        for g in groups
    ]  # fmt: skip


def test_compare_table_examples_and_map(server: Server, page: Any, artifacts: Path) -> None:
    versions = get(server, "/versions")
    assert [v["name"] for v in versions["versions"]] == ["v1", "v2"] and versions["current"] == "v2"
    open_compare(page, server.url, "cmp")
    # defaults: the version before the current one → the current one, on the val split
    page.wait_for_selector("#compare-clusters tbody tr[data-key=cluster]", timeout=60_000)
    form = page.evaluate("() => { const f = document.querySelector('#compare-form').elements;"
                         " return [f.base.value, f.new.value, f.split.value]; }")  # fmt: skip
    assert form == ["v1", "v2", "val"]
    report = get(server, "/compare", base="v1", new="v2", split="val")
    assert report["clusters"] and report["regressions"], json.dumps(report)[:3000]
    assert report["clusters"][0]["verdict"] == "regression"
    # the table holds the API's numbers, in the API's order (regressions first)
    assert page.evaluate(TABLE, "#compare-clusters") == expected_rows(report["clusters"])
    assert page.evaluate(TABLE, "#compare-classes") == expected_rows(report["classes"])
    # clusters are named as in the cluster table: "#id", and the noise group "noise" (this data has none)
    names = page.evaluate(
        "() => [...document.querySelectorAll('#compare-clusters tbody td.name')].map(td => td.firstChild.textContent)"
    )
    assert names == ["noise" if g["value"] == -1 else f"#{g['value']}" for g in report["clusters"]], names
    meta = page.evaluate(TABLE, "#compare-meta table[data-field=group]")
    assert meta == expected_rows(report["metadata"]["group"])
    overall = page.inner_text("#compare-overall")
    o = report["overall"]
    assert f"{o['fixed']} fixed" in overall and f"{o['broken']} broken" in overall, overall
    assert f"{pct(o['accuracy_base']['value'])} → {pct(o['accuracy_new']['value'])}" in overall
    assert page.locator("#compare-clusters tbody tr.regression .verdict").first.inner_text() == "regression"

    # a click on a cluster row lists its fixed and its broken rows (the ids of GET /compare/rows)
    for outcome in ("broken", "fixed"):
        group = next(g for g in report["clusters"] if g[outcome])
        page.click(f"#compare-clusters tbody tr[data-value='{group['value']}']")
        page.wait_for_function(f"document.querySelector('#compare-view').dataset.group === 'cluster:{group['value']}'")
        for shown in ("fixed", "broken"):
            assert_examples(page, server, group, shown)
        page.wait_for_function(IMAGES_LOADED)
        page.screenshot(path=str(artifacts / f"compare-{outcome}-examples.png"))

    # a class row: its rows by label (GET /compare/rows?field=label&value=...)
    page.click("#compare-classes-box summary")
    group = next(g for g in report["classes"] if g["broken"])
    page.click(f"#compare-classes tbody tr[data-value='{group['value']}']")
    page.wait_for_function(f"document.querySelector('#compare-view').dataset.group === 'label:{group['value']}'")
    for shown in ("fixed", "broken"):
        assert_examples(page, server, group, shown)

    # the map coloured by the comparison: as many fixed / broken points painted as the API counts
    page.click("#compare-color")
    page.wait_for_function("document.querySelector('#legend').dataset.colorBy === 'compare'")
    assert page.input_value("#color-by") == "compare"
    points = get(server, "/compare/points", base="v1", new="v2")
    painted = page.evaluate(PAINTED)
    for outcome in ("fixed", "broken", "still_wrong", "still_right"):
        code = points["outcomes"].index(outcome)
        want = sum(1 for c in points["codes"] if c == code)
        assert painted[outcome] == want, (outcome, painted, want)
        legend = page.locator(f"#legend .item[data-outcome={outcome}] .muted")
        assert (legend.inner_text() if want else "0") == f"{want:,}"
    everything = get(server, "/compare", base="v1", new="v2")  # every split: every point of the map
    assert (painted["fixed"], painted["broken"]) == (everything["rows"]["fixed"], everything["rows"]["broken"])
    assert painted["fixed"] > 0 and painted["broken"] > 0
    # the tab bar still fits on one line at 1440 px, with the selection's badge at its widest (4 digits)
    page.evaluate("document.querySelector('#sel-badge').textContent = (1797).toLocaleString()")
    got = page.evaluate(TABS_ONE_LINE)
    assert got["rows"] == 1 and got["overflow"] <= 0, got
    page.screenshot(path=str(artifacts / "compare-1440.png"))
    assert_no_js_errors(page)


def assert_examples(page: Any, server: Server, group: dict[str, Any], outcome: str) -> None:
    where = (
        {"cluster": group["value"]} if group["key"] == "cluster" else {"field": group["key"], "value": group["value"]}
    )
    want = get(server, "/compare/rows", base="v1", new="v2", split="val", outcome=outcome, limit=40, **where)
    assert want["total"] == group[outcome]
    sel = f"#compare-{outcome} .tile.{outcome}"
    page.wait_for_function(f"document.querySelectorAll('{sel}').length === {len(want['items'])}")
    assert page.eval_on_selector_all(sel, "ts => ts.map(t => t.dataset.id)") == [r["id"] for r in want["items"]]
    assert page.inner_text(f"#compare-{outcome}-count").startswith(str(group[outcome]))
    if not want["items"]:
        assert f"no {outcome} rows" in page.inner_text(f"#compare-{outcome}")
        return
    first = want["items"][0]
    caption = page.locator(f"{sel} .cap").first.inner_text().replace("\n", "")
    assert caption == f"{first['label']}: {first['base_pred']} → {first['new_pred']}"
    assert (first["base_pred"] == first["label"]) == (outcome == "broken")
    assert (first["new_pred"] == first["label"]) == (outcome == "fixed")


# what the map was given for each point (map.colors, RGBA), counted by the legend's colour of each outcome
PAINTED = """() => {
  const colors = window.edgeminer.ui.map.colors, out = {};
  for (const item of document.querySelectorAll('#legend .item[data-outcome]')) {
    const rgb = getComputedStyle(item.querySelector('.sw')).backgroundColor.match(/\\d+/g).map(Number);
    out[item.dataset.outcome] = rgb;
  }
  const counts = {};
  for (const [name, rgb] of Object.entries(out)) {
    let n = 0;
    for (let i = 0; i < colors.length; i += 4)
      if (colors[i] === rgb[0] && colors[i + 1] === rgb[1] && colors[i + 2] === rgb[2]) n++;
    counts[name] = n;
  }
  for (const name of ['fixed', 'broken', 'still_wrong', 'still_right']) counts[name] = counts[name] || 0;
  return counts;
}"""

TABS_ONE_LINE = """() => { const nav = document.querySelector('.tabs'), bs = [...nav.querySelectorAll('button')];
    const tops = new Set(bs.map(b => Math.round(b.getBoundingClientRect().top)));
    return {rows: tops.size, overflow: nav.scrollWidth - nav.clientWidth, tabs: bs.length,
            widths: bs.map(b => Math.round(b.getBoundingClientRect().width)), nav: nav.clientWidth}; }"""


def test_one_version_shows_how_to_add_one(server: Server, page: Any, artifacts: Path) -> None:
    r = httpx.get(server.api("/datasets/one/versions"), timeout=30)
    assert [v["name"] for v in r.json()["versions"]] == ["v1"]
    open_compare(page, server.url, "one")
    page.wait_for_function("document.querySelector('#compare-hint').textContent.includes('--model-version')")
    hint = page.inner_text("#compare-hint")
    assert "Only one model version (v1)" in hint and "edgeminer ingest" in hint, hint
    assert not page.is_visible("#compare-form") and not page.is_visible("#compare-body")
    options = page.eval_on_selector_all("#color-by option", "os => os.map(o => o.value)")
    assert "compare" not in options and "outcome" in options
    page.screenshot(path=str(artifacts / "compare-one-version.png"))
    assert_no_js_errors(page)
