"""The README's Debugger section shows the page as it is: its screenshot is in the repository."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_screenshot_in_the_readme_exists() -> None:
    """The Debugger section's image is a PNG committed under docs/."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Debugger\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README has no Debugger section"
    (image,) = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", section.group(1))
    assert image == "docs/debugger.png"
    data = (ROOT / image).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 720)
