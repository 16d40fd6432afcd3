"""A script under `eventlet.monkey_patch()`: a client made after the patch tracks RUNNING
events from green threads, waits until they are delivered, tracks AT_EXIT more and exits
without flushing (the exit does). Run as `python eventlet_script.py HOST RUNNING AT_EXIT`;
prints `delivered N`. Never imported by the tests: importing it patches the importer."""

from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import eventlet

eventlet.monkey_patch()

import trackline  # noqa: E402 (after the patch, as an eventlet app does)


def main(host: str, running: int, at_exit: int) -> None:
    client = trackline.Client("eventlet-key", host=host, flush_interval=0.2)
    pool = eventlet.GreenPool(20)
    for n in range(running):
        pool.spawn_n(client.track, f"user-{n}", "Hit", {"n": n})
    pool.waitall()
    for _ in range(100):  # at most 10 s, in green sleeps: the workers run meanwhile
        if client.stats.delivered >= running:
            break
        eventlet.sleep(0.1)
    print(f"delivered {client.stats.delivered}", flush=True)
    for n in range(running, running + at_exit):
        client.track(f"user-{n}", "Hit", {"n": n})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
