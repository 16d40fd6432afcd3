"""Framework packages stay optional: importing trackline (or its WSGI/ASGI middleware) loads
none of them. Checked in a fresh interpreter, since this test process has them loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("django", "flask", "werkzeug", "starlette", "fastapi", "asgiref", "gunicorn")


@pytest.mark.parametrize(
    "statement",
    [
        "import trackline",
        "import trackline.integrations",
        "import trackline.integrations.wsgi, trackline.integrations.asgi",
    ],
)
def test_import_loads_no_framework(statement: str) -> None:
    """Each of these imports leaves every web framework out of sys.modules."""
    script = (
        f"{statement}\nimport sys\nprint(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
