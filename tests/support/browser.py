"""Debian's Chromium for the browser tests (Playwright for Python with that executable,
never ``playwright install``): the ``chromium`` fixture gives its path, skips without it, and
fails under CI, which must run the browser tests (``.ci/run`` installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: /usr/bin/chromium is not installed")
        pytest.skip("Debian's chromium is not installed")
    pytest.importorskip("playwright")
    return str(CHROMIUM)
