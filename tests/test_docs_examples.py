"""Every code example on every documentation page runs as written.

Each page under docs/ is one test: its Python and shell blocks run in order against a real
collector on 127.0.0.1 (see tests/support/docs_examples.py for the rules). A block is left out
only with a reason from the closed list there. Examples whose outcome matters beyond running
(a framework app serving a request, a test passing under pytest) are also checked in depth by
the tests of their subject, which read them from the same pages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import docs_examples
from tests.support.docs_examples import DOCS, NOT_RUN_REASONS, RUNNABLE, SHOWN_ONLY, blocks
from trackline.collector import serve

PAGES = docs_examples.pages()


def test_the_site_has_pages() -> None:
    """The walk finds the site (a wrong path would make every other test here vacuous)."""
    assert DOCS / "index.md" in PAGES
    assert len(PAGES) >= 20


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    """The page's runnable blocks all run, in order, each ending without an error."""
    found = blocks(page)
    for block in found:
        assert block.language in RUNNABLE | SHOWN_ONLY, (
            f"{block.where}: a block needs a language, one of "
            f"{sorted(RUNNABLE | SHOWN_ONLY)}, not {block.language!r}"
        )
        if block.not_run is not None:
            assert block.language in RUNNABLE, f"{block.where}: 'not run' on a block never run"
            assert block.not_run in NOT_RUN_REASONS, (
                f"{block.where}: 'not run: {block.not_run}' is not one of the reasons in "
                f"tests/support/docs_examples.py: {sorted(NOT_RUN_REASONS)}"
            )
    assert docs_examples.stray_markers(page) == [], "a 'not run' comment must precede a block"
    runnable = [block for block in found if block.runs]
    if not runnable:
        return
    with serve(tmp_path / "docs-examples.sqlite3") as collector:
        result = docs_examples.run_page(runnable, tmp_path, collector.url)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    ran = [line for line in result.stdout.splitlines() if line.startswith("--- docs/")]
    assert len(ran) == len(runnable), result.stdout
