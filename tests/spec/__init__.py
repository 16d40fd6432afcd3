"""Load the shared wire-format examples."""

from __future__ import annotations

import json
import pathlib
from typing import Any

HERE = pathlib.Path(__file__).parent


def load(name: str) -> Any:
    """Parse one of the JSON files beside this module, e.g. `load("valid-messages.json")`."""
    return json.loads((HERE / name).read_text(encoding="utf-8"))
