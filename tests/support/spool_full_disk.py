"""A child process that fills spool files on a full disk while another thread reads them.

Run as `python -m tests.support.spool_full_disk DIRECTORY TRIALS`: it limits the size of every
file it writes to `LIMIT_BYTES` (writes past it fail, as on a full disk), then for each trial
creates a spool file, reads batches from it in a second thread without pause (as a delivery
worker does) and writes one-message commits until well past the limit. It prints, as JSON, each
file's path with the seqs whose write returned without an error: the parent checks that the
file holds every one of them.
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import sqlite3
import sys
import threading

from trackline.spool.file import SpoolFile
from trackline.spool.ownership import create_own

LIMIT_BYTES = 300_000
#: Writes per file: about twice what fits under the limit.
WRITES = 150


def _fill(directory: str) -> tuple[str, list[int]]:
    path, lock = create_own(directory)
    file = SpoolFile(path, lock, "normal", adopted=False)
    stop = threading.Event()

    def read_without_pause() -> None:
        while not stop.is_set():
            with contextlib.suppress(sqlite3.Error):
                file.read(0, WRITES, 2500, 1 << 20)

    reader = threading.Thread(target=read_without_pause)
    reader.start()
    written = []
    try:
        for seq in range(WRITES):
            with contextlib.suppress(sqlite3.Error):
                file.write([(seq, 0.0, b"x" * 200)], ())
                written.append(seq)
    finally:
        stop.set()
        reader.join()
        file.close()
        lock.release(unlink=False)
    return path, written


def main(directory: str, trials: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))
    print(json.dumps(dict(_fill(directory) for _ in range(trials))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
