"""Fixtures for the tests that run Segment's own analytics.js in Chromium against a collector.

analytics.js comes from npm (`@segment/analytics-next`), installed by `.ci/run` into `.browser/`
at the root of the tree: outside the package, never committed. Its `dist/umd/standalone.js` is
the build that the standard snippet loads as `analytics.min.js` (it reads the snippet's
`window.analytics` stub and replaces it). A missing install fails these tests; it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.support.chromium import chromium

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / ".browser" / "node_modules" / "@segment" / "analytics-next"
INSTALL = (
    "npm install --no-save --prefix .browser @segment/analytics-next@1.84.3 "
    "(from the root of the tree; .ci/run does it)"
)


@pytest.fixture(scope="session")
def analytics_js() -> Path:
    """The standalone analytics.js build of the installed npm package."""
    standalone = PACKAGE / "dist" / "umd" / "standalone.js"
    if not standalone.is_file():
        pytest.fail(f"Segment's analytics.js is not installed at {standalone}: {INSTALL}")
    return standalone


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; each test opens its own context (its own cookies)."""
    with chromium() as launched:
        yield launched
