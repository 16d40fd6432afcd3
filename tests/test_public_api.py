"""The public surface: what `import trackline` exports, and the library's logging manners."""

from __future__ import annotations

import logging
import subprocess
import sys

import trackline

EXPECTED = [
    "Client",
    "ConfigError",
    "DeliveryError",
    "DropReason",
    "InvalidMessage",
    "InvalidMessageType",
    "MessageError",
    "MessageTooLarge",
    "Stats",
    "TracklineError",
    "__version__",
    "alias",
    "context",
    "flush",
    "flushing",
    "get_client",
    "group",
    "identify",
    "init",
    "page",
    "screen",
    "shutdown",
    "track",
]


def test_public_surface_is_deliberate() -> None:
    """`__all__` is exactly the documented API, sorted; a drift fails here first."""
    assert trackline.__all__ == EXPECTED
    assert sorted(trackline.__all__) == trackline.__all__
    for name in trackline.__all__:
        assert hasattr(trackline, name), name


def test_library_configures_no_logging() -> None:
    """trackline only adds a NullHandler and sets no level, in a fresh interpreter."""
    code = (
        "import logging, trackline\n"
        "log = logging.getLogger('trackline')\n"
        "assert [type(h).__name__ for h in log.handlers] == ['NullHandler'], log.handlers\n"
        "assert log.level == logging.NOTSET\n"
        "assert logging.getLogger().handlers == []\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_module_loggers_live_under_trackline() -> None:
    """Every module logs under its own name beneath `trackline`."""
    from trackline import client, delivery, report, transport

    for module in (client, delivery, report, transport):
        assert module.logger.name == module.__name__
        assert module.logger.name.startswith("trackline.")
    assert isinstance(logging.getLogger("trackline").handlers[0], logging.NullHandler)


def test_payloads_are_not_logged_above_debug(caplog: object) -> None:
    """A drop warning says how many and why, never the message's content."""
    import pytest

    assert isinstance(caplog, pytest.LogCaptureFixture)
    caplog.set_level(logging.INFO, logger="trackline")
    client = trackline.Client("k", host="http://127.0.0.1:9", max_retries=0, flush_interval=0.05)
    client.track("secret-user", "Secret Event", {"card": "4111-1111"})
    assert client.flush(5)
    client.shutdown(1)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "dropped 1 message" in text
    for secret in ("secret-user", "Secret Event", "4111"):
        assert secret not in text
