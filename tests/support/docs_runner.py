"""Run one documentation page's examples in order, as a reader following the page would.

Reads a JSON list of `{"language", "where", "source"}` on standard input. Python blocks run
in one shared namespace (as `__main__`, so a block may use what an earlier one defined);
shell blocks run in bash with `-euo pipefail`. Each block is announced on standard output
before it runs; the first failure ends the run with status 1 and names the block.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from typing import Any


def main() -> int:
    script: list[dict[str, str]] = json.load(sys.stdin)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in script:
        where = block["where"]
        print(f"\n--- {where} ({block['language']})", flush=True)
        if block["language"] == "python":
            try:
                exec(compile(block["source"], where, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"docs example failed: {where}", file=sys.stderr)
                return 1
            sys.stdout.flush()
        else:
            command = ["bash", "-euo", "pipefail", "-c", block["source"]]
            result = subprocess.run(command, check=False)
            if result.returncode != 0:
                print(
                    f"docs example failed: {where} exited with {result.returncode}",
                    file=sys.stderr,
                )
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
