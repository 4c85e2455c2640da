"""The dashboard against a server with an API key: reads work without it, the first write asks for the
key once (a wrong key is refused in words and asked again), later writes reuse it, and API errors
reach the person as sentences."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import Server, start_server, stop_server

pytestmark = pytest.mark.e2e

KEY = "e2e-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def keyed_server(
    browser_ok: None, analyzed_demo: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-key") / "serve.log"
    server = start_server(analyzed_demo.data_dir, log, api_key=KEY, media_roots=(analyzed_demo.demo_dir,))
    try:
        yield server
    finally:
        stop_server(server)


def box_select(page: Any, x0: float, y0: float, x1: float, y1: float) -> None:
    box = page.locator("#overlay").bounding_box()
    page.click("#modes button[data-mode=box]")
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    page.mouse.move(box["x"] + x1, box["y"] + y1, steps=5)
    page.mouse.up()


def test_key_is_asked_once_and_errors_are_shown(
    keyed_server: Server, analyzed_demo: Any, page: Any, artifacts: Path
) -> None:
    page.goto(f"{keyed_server.url}/?dataset=demo")
    page.wait_for_function("window.edgeminer && window.edgeminer.ready", timeout=60_000)
    assert page.evaluate("edgeminer.state.pts.n") > 1000  # reads need no key on this server
    assert not page.locator("#key-dialog").is_visible()

    # box-select the middle of the map: exactly the points inside the rectangle
    w, h = page.evaluate("[edgeminer.ui.map.cssW, edgeminer.ui.map.cssH]")
    box_select(page, w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    page.wait_for_function("edgeminer.state.selection.source.startsWith('box')")
    n_sel, n_expected = page.evaluate(
        """([x0, y0, x1, y1]) => { const m = edgeminer.ui.map, p = edgeminer.state.pts;
             const [a, b] = m.toData(x0, y0), [c, d] = m.toData(x1, y1); let k = 0;
             for (let i = 0; i < p.n; i++) { const x = p.xy[2 * i], y = p.xy[2 * i + 1];
               if (x >= Math.min(a, c) && x <= Math.max(a, c) && y >= Math.min(b, d) && y <= Math.max(b, d)) k++; }
             return [edgeminer.state.selection.indices.length, k]; }""",
        [w * 0.2, h * 0.2, w * 0.8, h * 0.8],
    )
    assert n_sel == n_expected > 0

    # the first write asks for the key; a wrong one is refused in words and asked again
    name = f"e2e keyed {uuid.uuid4().hex[:8]}"
    page.fill("#flag-form input[name=name]", name)
    page.click("#flag-form button[type=submit]")
    page.wait_for_selector("#key-dialog[open]")
    assert "needs an API key" in page.inner_text("#key-message")
    page.fill("#key-form input[name=key]", "wrong-key")
    page.click("#key-form button[value=ok]")
    page.wait_for_function("document.querySelector('#key-message').innerText.includes('not accepted')")
    assert page.locator("#key-dialog[open]").count() == 1
    page.screenshot(path=str(artifacts / "api-key.png"))
    page.fill("#key-form input[name=key]", KEY)
    page.click("#key-form button[value=ok]")
    page.wait_for_selector(".toast.ok")
    issues = httpx.get(keyed_server.api("/datasets/demo/issues"), timeout=10).json()
    assert [i["count"] for i in issues if i["name"] == name] == [n_sel]
    assert page.evaluate("sessionStorage.getItem('edgeminer.apiKey')") == KEY

    # later writes reuse the key: no dialog
    page.click(".tabs button[data-tab=next]")
    page.fill("#select-form input[name=budget]", "12")
    page.click("#select-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#next-grid .tile').length === 12", timeout=30_000)
    assert page.locator("#key-dialog[open]").count() == 0

    # an API error reaches the person in words: the demo's model cannot embed text
    expected = httpx.post(
        keyed_server.api("/datasets/demo/mine"),
        json={"seeds": {"text": "a green traffic cone"}, "budget": 5},
        headers={"X-API-Key": KEY},
        timeout=30,
    )
    assert expected.status_code >= 400
    detail = expected.json()["detail"]
    page.click(".tabs button[data-tab=mine]")
    page.select_option("#mine-form select[name=source]", "text")
    page.fill("#mine-form input[name=text]", "a green traffic cone")
    page.click("#mine-form button[type=submit]")
    toast = page.wait_for_selector(".toast.error")
    assert detail in toast.inner_text()
    assert detail in page.inner_text("#mine-status")
    page.screenshot(path=str(artifacts / "api-error.png"))


def test_reads_behind_the_key_ask_at_load_and_images_still_show(
    browser_ok: None, analyzed_demo: Any, page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEMINER_API_KEY_FOR_READS", "true")
    server = start_server(
        analyzed_demo.data_dir, tmp_path / "serve.log", api_key=KEY, media_roots=(analyzed_demo.demo_dir,)
    )
    try:
        assert httpx.get(server.api("/datasets"), timeout=10).status_code == 401
        page.goto(f"{server.url}/?dataset=demo")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-form input[name=key]", KEY)
        page.click("#key-form button[value=ok]")
        page.wait_for_function("window.edgeminer && window.edgeminer.ready", timeout=60_000)
        assert page.evaluate("edgeminer.state.pts.n") > 1000
        # thumbnails are fetched with the header (an <img src> could not send it) and do load
        page.locator("#cluster-table tbody tr").first.click()
        page.wait_for_selector("#cluster-worst .tile img")
        page.wait_for_function(
            "[...document.querySelectorAll('#cluster-worst .tile img')].every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000,
        )
        assert page.eval_on_selector("#cluster-worst .tile img", "i => i.src.startsWith('blob:')")
    finally:
        stop_server(server)
