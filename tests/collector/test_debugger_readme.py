"""The README and the docs' debugger page show the page as it is: the screenshot that
scripts/debugger_screenshot.py takes, committed under docs/."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_screenshot_in_the_readme_exists() -> None:
    """The README's one image, in its collector section, is a PNG committed under docs/."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(re.findall(r"!\[[^\]]+\]\(", text)) == 1
    section = re.search(r"^## The collector and its debugger\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README has no section 'The collector and its debugger'"
    (image,) = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", section.group(1))
    assert image == "docs/debugger.png"
    assert_is_the_screenshot(ROOT / image)


def test_the_debugger_page_shows_the_screenshot() -> None:
    """The docs' debugger page shows the same image, which the screenshot script retakes."""
    page = ROOT / "docs" / "collector" / "debugger.md"
    (image,) = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", page.read_text(encoding="utf-8"))
    assert (page.parent / image).resolve() == ROOT / "docs" / "debugger.png"
    assert_is_the_screenshot(page.parent / image)


def assert_is_the_screenshot(path: pathlib.Path) -> None:
    """`path` is a 1280x720 PNG, the size scripts/debugger_screenshot.py takes."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 720)
