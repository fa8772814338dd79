"""The API documentation renders offline in a real browser (issue 19 point 5): Debian's
Chromium, headless, driven by Playwright for Python, against a hub with its built-in
authorization server under uvicorn. Every request that does not go to the hub is aborted,
as on a hospital network without internet: Swagger UI at ``/docs`` still lists the
operations and opens the "Authorize" dialog with the client-credentials flow, and ReDoc at
``/redoc`` shows the API's title. Screenshots are saved under the test's folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.support.auth import secured_hub
from tests.support.browser import chromium as chromium

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with secured_hub(tmp_path_factory.mktemp("docs-browser")) as server:
        yield server


def test_docs_and_redoc_render_with_nothing_from_elsewhere(
    chromium: str, hub: LiveServer, tmp_path: Path
) -> None:
    from playwright.sync_api import Route, sync_playwright

    origin = hub.url + "/"
    aborted: list[str] = []
    loaded: list[str] = []

    def offline(route: Route, *_: Any) -> None:
        url = route.request.url
        if url.startswith(origin):
            loaded.append(url)
            route.continue_()
        else:
            aborted.append(url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", offline)
            page.goto(hub.url + "/docs")
            page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
            assert page.locator(".opblock").count() > 20  # every operation of the hub
            assert page.locator(".opblock-tag").count() >= 3  # grouped by tag
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)

            page.locator("button.authorize").first.click()
            dialog = page.locator(".auth-container").first
            dialog.wait_for(timeout=TIMEOUT_MS)
            assert "clientCredentials" in dialog.inner_text()
            assert "/oauth/token" in dialog.inner_text()
            page.screenshot(path=str(tmp_path / "docs-authorize.png"))

            page.goto(hub.url + "/redoc")
            title = page.locator("h1", has_text="aifi-hub")
            title.first.wait_for(timeout=TIMEOUT_MS)
            page.screenshot(path=str(tmp_path / "redoc.png"))
        finally:
            browser.close()
    assert not aborted, f"the pages asked for outside resources: {aborted}"
    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in loaded), loaded
    assert any(url.endswith("/docs/assets/redoc.standalone.js") for url in loaded), loaded
    for name in ("docs.png", "docs-authorize.png", "redoc.png"):
        assert (tmp_path / name).stat().st_size > 5000, name
