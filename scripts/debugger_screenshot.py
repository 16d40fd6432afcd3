"""Take docs/debugger.png: the debugger page with the demo's events and one event open.

Run from the repository root after `pip install -e '.[dev]'`, with Debian's chromium
installed: `python scripts/debugger_screenshot.py [--dark] [--output PATH]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

import trackline
from trackline.cli.demo import WRITE_KEY, send_examples
from trackline.collector import serve

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/debugger.png"))
    parser.add_argument("--dark", action="store_true", help="dark colour scheme")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as directory,
        serve(Path(directory) / "events.sqlite3") as collector,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            headless=True,
        )
        context = browser.new_context(
            viewport={"width": 1280, "height": 720},
            color_scheme="dark" if args.dark else "light",
            reduced_motion="reduce",  # no highlight fading in mid-shot
        )
        page = context.new_page()
        page.goto(collector.url + "/")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        client = trackline.Client(WRITE_KEY, host=collector.url)
        sent = send_examples(client)
        client.shutdown(timeout=10.0)
        expect(page.locator("#events > li")).to_have_count(sent)
        page.locator("#events .row", has_text="Item Purchased").click()
        expect(page.locator("#detail")).to_be_visible()
        page.mouse.move(0, 0)  # no hover highlight
        page.wait_for_timeout(500)  # the type counts follow the stream shortly
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output))
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
