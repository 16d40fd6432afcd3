"""A durable-mode client in its own process, for tests that kill it, fork it or share a spool.

Run as `python -m tests.support.spool_child SPOOL HOST IDS [options]`. It tracks messages in a
loop and appends the id of every call that returned one to the IDS file, one per line, written
and flushed before the next call: whatever a SIGKILL interrupts, each complete line in IDS is a
message whose call returned, hence one the spool promised to keep. It prints "ready" once the
client is built (after adopting what earlier processes left).

`--count N` stops after N calls, then flushes (`--flush`) and/or shuts down (`--shutdown`),
or ends at once as a crash would (`--crash`: no shutdown, no exit hooks); without it, it
tracks until killed. `--fork` forks after the first half (at once without `--count`), prints
"forked PID", and both processes go on with the rest, the child writing its ids to IDS +
".child". `--max-file-bytes N` limits the size of every file the process writes, which is
how a full disk looks to it.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time

import trackline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spool")
    parser.add_argument("host")
    parser.add_argument("ids")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--event", default="Loop")
    parser.add_argument("--flush", action="store_true")
    parser.add_argument("--shutdown", type=float, default=None)
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--crash", action="store_true", help="end with os._exit, no shutdown")
    parser.add_argument("--max-file-bytes", type=int, default=0, help="RLIMIT_FSIZE: a full disk")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between calls")
    parser.add_argument("--flush-at", type=int, default=50)
    args = parser.parse_args(argv)
    if args.max_file_bytes:
        # Writes past the limit fail with EFBIG, as on a full disk, instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_bytes, args.max_file_bytes))

    client = trackline.Client(
        "spool-key",
        host=args.host,
        spool=args.spool,
        flush_at=args.flush_at,
        flush_interval=0.02,
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=2.0,
        sync=args.sync,
    )
    print("ready", flush=True)
    ids_path = args.ids
    index = 0
    forked_at = args.count // 2 if args.fork else -1
    child = 0
    with open(ids_path, "a", encoding="utf-8") as out:
        while not args.count or index < args.count:
            if index == forked_at:
                child = os.fork()
                if child:
                    print(f"forked {child}", flush=True)
                else:
                    out.close()
                    ids_path += ".child"
                    out = open(ids_path, "a", encoding="utf-8")  # noqa: SIM115
            message_id = client.track(
                "spool-user", args.event, {"index": index, "pid": os.getpid()}
            )
            if message_id is not None:
                out.write(message_id + "\n")
                out.flush()
            index += 1
            if args.pause:
                time.sleep(args.pause)
        if args.flush:
            client.flush(10)
        if args.shutdown is not None:
            client.shutdown(args.shutdown)
        stats = client.stats
        print(
            f"stats enqueued={stats.enqueued} delivered={stats.delivered} queued={stats.queued} "
            f"in_flight={stats.in_flight} dropped={dict(stats.dropped)}",
            flush=True,
        )
    if child:
        os.waitpid(child, 0)
    if args.crash:
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
