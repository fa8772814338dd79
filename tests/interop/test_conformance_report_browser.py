"""The HTML conformance report in a real browser (issue 18 point 4): Debian's Chromium,
headless, driven by Playwright for Python, shows the verdict and counts at the top, every
case, and loads nothing from anywhere else (it opens offline, from a file)."""

from __future__ import annotations

from pathlib import Path

from aifi.conformance_kit.report import Kind, Report, write_report
from tests.support.browser import chromium as chromium


def test_the_summary_shows_in_chromium_and_nothing_loads_from_elsewhere(
    chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    report = Report(kind=Kind.PERFORMER, target={"product": "AIFI-BONEAGE", "mode": "run"})
    report.case("connect", "Gets a token", ["SMART Backend Services"]).passed("first request")
    report.case("cancel", "Honours a cancellation request", ["DICOM PS3.18 §11.8"]).failed(
        "ignored the cancellation request: the workitem ended COMPLETED"
    )
    write_report(report, tmp_path)
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto((tmp_path / "report.html").as_uri())
            summary = page.locator("#summary")
            assert summary.is_visible()
            assert "FAILED" in summary.inner_text() and "1 fail" in summary.inner_text()
            assert page.title().startswith("aifi conformance performer")
            assert page.get_by_role("link", name="Honours a cancellation request").count() == 1
            rows = page.locator("#cases tbody tr")
            assert rows.count() == 2
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert all(url.startswith("file://") for url in requested), requested
    assert (tmp_path / "report.png").stat().st_size > 1000
