"""Process lifecycle: interpreter exit flushes every client, and a forked child gets its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import trackline
from tests.support.capture import CaptureServer


def run_script(source: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_script_that_never_flushes_delivers_everything_at_exit(capture: CaptureServer) -> None:
    """A script tracking 1,000 events and ending without flush() delivers all 1,000."""
    result = run_script(
        f"""
        import trackline
        trackline.write_key = "k"
        trackline.host = {capture.url!r}
        for i in range(1000):
            trackline.track("u", "E", {{"i": i}})
        """
    )
    assert result.returncode == 0, result.stderr
    delivered = capture.delivered()
    assert sorted(message["properties"]["i"] for message in delivered) == list(range(1000))


def test_every_live_client_is_flushed_at_exit(capture: CaptureServer) -> None:
    """Explicit clients, not only the default one, are flushed at exit."""
    result = run_script(
        f"""
        import trackline
        a = trackline.Client("a", host={capture.url!r}, flush_interval=60)
        b = trackline.Client("b", host={capture.url!r}, flush_interval=60)
        a.track("u", "from-a")
        b.track("u", "from-b")
        """
    )
    assert result.returncode == 0, result.stderr
    assert sorted(message["event"] for message in capture.delivered()) == ["from-a", "from-b"]


def test_a_client_no_longer_referenced_still_delivers_at_exit(capture: CaptureServer) -> None:
    """A client made inside a function and dropped with events still queued (its worker
    running) is kept until exit and flushed then; one that never sent anything is freed."""
    result = run_script(
        f"""
        import gc, weakref
        import trackline

        def report(n):
            client = trackline.Client("k", host={capture.url!r}, flush_interval=60)
            for i in range(n):
                client.track("u", "E", {{"i": i}})
            return weakref.ref(client)

        used = report(50)
        unused = report(0)
        gc.collect()
        print(used() is not None, unused() is None)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
    delivered = capture.delivered()
    assert sorted(message["properties"]["i"] for message in delivered) == list(range(50))


def test_exit_during_an_outage_is_bounded_by_shutdown_timeout(capture: CaptureServer) -> None:
    """With the server hanging, exit waits at most shutdown_timeout and reports the leftovers."""
    from tests.support.capture import Reply

    capture.default = Reply(action="hang")
    started = time.monotonic()
    result = run_script(
        f"""
        import logging, sys
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
        import trackline
        trackline.init("k", host={capture.url!r}, shutdown_timeout=1.0)
        for i in range(10):
            trackline.track("u", "E")
        """
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 6.0
    assert "shutdown_timeout" in result.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_delivers_its_own_events_and_parent_sends_its_own_once(
    capture: CaptureServer,
) -> None:
    """After fork() the child has a fresh buffer and worker; nothing is sent twice."""
    client = trackline.Client("k", host=capture.url, flush_interval=60.0)
    try:
        parent_id = client.track("u", "before-fork")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                child_ok = client.track("u", "in-child") is not None
                flushed = client.flush(5)
                stats = client.stats
                code = 0 if (child_ok and flushed and stats.delivered == 1) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.flush(5)
        events = sorted(message["event"] for message in capture.delivered())
        assert events == ["before-fork", "in-child"]
        assert parent_id in capture.delivered_ids()
        assert client.stats.delivered == 1
    finally:
        client.shutdown(1)


def test_what_a_first_connection_imports_is_imported_before_any_fork() -> None:
    """A module a worker would import on its first connection is imported by `import
    trackline`: a fork in the middle of such an import would leave the child's import lock
    held by a thread it does not have, and its first connection waiting forever."""
    code = "import sys, trackline\nassert 'encodings.idna' in sys.modules\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
