"""The code examples of the documentation pages: found, classified, and run as a reader would.

Every fenced block on every page under `docs/` is one of:

- runnable: ```` ```python ```` and ```` ```sh ````. A page's runnable blocks run in the order
  they appear, as one reader following the page: the Python blocks share one namespace (a
  later block may use what an earlier one defined), and each shell block runs in bash with
  `-euo pipefail`, all in the same working directory (a file one block writes, the next one
  reads). `http://127.0.0.1:8765`, the collector's default address in the examples, is a real
  collector started for the page, and so is `TRACKLINE_HOST`.
- shown only: output and file contents (```` ```text ````, ```` ```json ````, ...), never run.

A runnable block is left out only when the line before it says why, with one of the reasons
in `NOT_RUN_REASONS`: `<!-- not run: installs packages -->`. The set is closed on purpose, so
that "not run" stays rare and means the same everywhere; a new reason is added here, where
its justification is written down.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent.parent
DOCS: Final = ROOT / "docs"

#: Where the examples expect a collector; the tests put a real one there.
EXAMPLE_HOST: Final = "http://127.0.0.1:8765"

RUNNABLE: Final = frozenset({"python", "sh"})
SHOWN_ONLY: Final = frozenset({"text", "json", "toml", "ini", "yaml", "html", "http", "django"})

#: Why a runnable block may be left out, and what checks it instead.
NOT_RUN_REASONS: Final = {
    "installs packages": "pip would change the environment the suite runs in",
    "serves until stopped": "a server started this way runs until Ctrl-C; the commands and "
    "apps it serves are started and stopped by their own tests (tests/collector/test_cli.py, "
    "tests/integrations/test_gunicorn.py)",
    "runs the test suite": "the suite itself is what runs it",
    "a long benchmark": "minutes of load; bench/ runs it and tests/test_bench.py checks the "
    "harness",
    "needs a collector with destinations": "the page's collector has none; "
    "tests/collector/destinations/test_docs_destinations.py runs the commands against one "
    "whose queues it then checks",
    "needs Segment's API and a write key": "the suite talks to 127.0.0.1 only; the same call "
    "against the local collector runs on the same page",
}

FENCE: Final = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n", re.M)
NOT_RUN: Final = re.compile(r"^[ \t]*<!-- not run: (?P<reason>.*?) -->[ \t]*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int
    language: str
    source: str
    not_run: str | None

    @property
    def where(self) -> str:
        """`docs/page.md:LINE`, the block's opening fence, for messages and tracebacks."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUNNABLE and self.not_run is None


def pages() -> list[Path]:
    """Every Markdown page of the site, in a stable order."""
    return sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page`, in order; `ValueError` names a malformed one."""
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[Block] = []
    position = 0
    while match := FENCE.search(text, position):
        indent, info = match.group("indent"), match.group("info").strip()
        line = text.count("\n", 0, match.start()) + 1
        close = re.compile(rf"^{re.escape(indent)}```[ \t]*$", re.M)
        end = close.search(text, match.end())
        if end is None:
            raise ValueError(f"{page.relative_to(ROOT)}:{line}: the block is never closed")
        language = info.split()[0] if info else ""
        previous = lines[line - 2] if line >= 2 else ""
        marker = NOT_RUN.match(previous)
        source = textwrap.dedent(text[match.end() : end.start()])
        found.append(Block(page, line, language, source, marker and marker.group("reason")))
        position = end.end()
    return found


def stray_markers(page: Path) -> list[int]:
    """Line numbers of `not run` comments that do not stand right before a block."""
    lines = [*page.read_text(encoding="utf-8").splitlines(), ""]
    return [
        number
        for number, line in enumerate(lines, 1)
        if NOT_RUN.match(line) and not lines[number].lstrip().startswith("```")
    ]


def run_page(
    runnable: list[Block], cwd: Path, host: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `runnable` in order in a fresh interpreter (tests/support/docs_runner.py), in `cwd`,
    with the examples' collector address and `TRACKLINE_HOST` pointing at `host`."""
    script = [
        {"language": b.language, "where": b.where, "source": b.source.replace(EXAMPLE_HOST, host)}
        for b in runnable
    ]
    env = {
        **os.environ,
        "TRACKLINE_HOST": host,
        "TRACKLINE_WRITE_KEY": "YOUR_WRITE_KEY",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "docs_runner.py")],
        input=json.dumps(script),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def page_named(name: str) -> Path:
    """The page `docs/NAME` (a path relative to docs/), which must exist."""
    page = DOCS / name
    if not page.is_file():
        raise FileNotFoundError(f"docs/{name} does not exist")
    return page


def python_blocks(name: str) -> list[str]:
    """The Python blocks of the page `docs/NAME`, runnable or not."""
    return [b.source for b in blocks(page_named(name)) if b.language == "python"]


def shell_blocks(name: str) -> list[str]:
    """The shell blocks of the page `docs/NAME`, runnable or not."""
    return [b.source for b in blocks(page_named(name)) if b.language == "sh"]


def python_block(name: str, marker: str, host: str | None = None) -> str:
    """The one Python block of the page `docs/NAME` that contains `marker`, with the examples'
    collector address replaced by `host` when given (a test's own server)."""
    found = [source for source in python_blocks(name) if marker in source]
    if len(found) != 1:
        raise LookupError(f"docs/{name} has {len(found)} Python blocks containing {marker!r}")
    return found[0] if host is None else found[0].replace(EXAMPLE_HOST, host)


def run_example(source: str) -> dict[str, object]:
    """Run one example in this process, in a fresh namespace; returns what it defined."""
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(source, "docs example", "exec"), namespace)
    return namespace


def run_script(
    source: str, host: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an example as a script of its own, in a fresh interpreter (in `cwd`), with
    `TRACKLINE_HOST` at `host` when given; its exit status and output."""
    env = {**os.environ, "TRACKLINE_HOST": host} if host is not None else None
    return _run([sys.executable, "-c", source], cwd, env)


def run_shell(script: str, cwd: Path, host: str) -> subprocess.CompletedProcess[str]:
    """Run a shell example in `cwd` with bash `-euo pipefail`, as a reader would after an
    `export TRACKLINE_WRITE_KEY=...` line, the examples' collector address and
    `TRACKLINE_HOST` pointing at `host`, and this interpreter's `trackline` on the PATH."""
    env = {
        **os.environ,
        "TRACKLINE_HOST": host,
        "TRACKLINE_WRITE_KEY": "YOUR_WRITE_KEY",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return _run(["bash", "-euo", "pipefail", "-c", script.replace(EXAMPLE_HOST, host)], cwd, env)


def _run(
    command: list[str], cwd: Path | None, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
