"""Browser fixtures: Debian's Chromium driven by Playwright, and a real `edgeminer serve` on 127.0.0.1.

Without /usr/bin/chromium the browser tests skip, unless the environment variable CI is set: then a
missing browser is a failure (CI must run them). Never `playwright install`: `make browser` installs
Debian's package. The helpers live in e2e_support.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Server, require_browser, start_server, stop_server


@pytest.fixture(scope="session")
def browser_ok() -> None:
    """Listed first by the server fixtures: without a browser, skip before building the demo."""
    require_browser()


@pytest.fixture(scope="session")
def analyzed_demo(demo_env, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A private copy of the analyzed demo (the browser tests flag issues and export)."""
    from edgeminer.indexer.analysis.run import analyze, load_analysis

    demo = demo_env.copy(tmp_path_factory.mktemp("demo-e2e"))
    if load_analysis(demo.store, "demo") is None:
        analyze(demo.store, "demo")
    return demo


@pytest.fixture(scope="session")
def demo_server(browser_ok, analyzed_demo, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = start_server(analyzed_demo.data_dir, log, media_roots=(analyzed_demo.demo_dir,))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    pg.js_errors = errors  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
