"""A delivery worker in its own process, for tests that kill it: it claims a destination's
jobs from a PostgreSQL store, "delivers" each (records it), and settles them, until killed.

Run as `python -m tests.support.job_worker URL DESTINATION LOG [--lease S] [--batch N]`. Every
job it starts is appended to LOG as `<job id> <claim>` (unbuffered, one write per line),
before it is settled, so a SIGKILL leaves a line for every job this process began to deliver.
It prints "ready" once its store is open.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from trackline.collector.store import Outcome, Settlement, StorageError
from trackline.collector.store.postgres import PostgresStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("destination")
    parser.add_argument("log")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--work", type=float, default=0.002, help="seconds per job")
    args = parser.parse_args(argv)
    store = PostgresStore(args.url, lock_timeout=2.0)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    while True:
        try:
            jobs = store.claim(args.destination, args.batch, args.lease)
        except StorageError:
            time.sleep(0.05)
            continue
        if not jobs:
            time.sleep(0.02)
            continue
        for job in jobs:
            os.write(log, f"{job.id} {job.claim}\n".encode())
            time.sleep(args.work)
        with contextlib.suppress(StorageError):  # unsettled, they come back after the lease
            store.settle([Settlement(job, Outcome.DELIVERED) for job in jobs])


if __name__ == "__main__":
    sys.exit(main())
