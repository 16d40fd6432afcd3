"""The config file: the issue's example reads as written; every mistake refuses the file with
one line naming the file, the destination and the key, never a value; `${NAME}` reads the
environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trackline.collector.destinations import ConfigFileError, load, parse
from trackline.collector.destinations.config import (
    DEFAULT_RETRY_WINDOW,
    FileSettings,
    TrackingApiSettings,
    WarehouseSettings,
    WebhookSettings,
    parse_duration,
)
from trackline.collector.ingest import MESSAGE_TYPES

EXAMPLE = """
[[destination]]
name = "Webhook"                 # the name `integrations` uses (case-sensitive)
kind = "webhook"
url = "http://127.0.0.1:9000/hook"
secret = "s3cret"
batch_size = 1
headers = { "X-Team" = "web" }

[[destination]]
name = "Segment"
kind = "tracking-api"
host = "https://api.segment.io"
write_key = "${SEGMENT_WRITE_KEY}"

[[destination]]
name = "Files"
kind = "file"
path = "exports"

[[destination]]
name = "Warehouse"
kind = "postgres"
dsn = "postgresql://127.0.0.1/test"
schema = "analytics"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trackline.toml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        load(path, environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_the_issue_example_reads_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    webhook, segment, files, warehouse = load(path, environ={"SEGMENT_WRITE_KEY": "wk-123"})
    assert (webhook.name, webhook.kind, webhook.batch_size) == ("Webhook", "webhook", 1)
    assert webhook.settings == WebhookSettings(
        "http://127.0.0.1:9000/hook", "s3cret", {"X-Team": "web"}
    )
    assert segment.settings == TrackingApiSettings("https://api.segment.io", "wk-123")
    assert files.settings == FileSettings(tmp_path.resolve() / "exports")
    assert warehouse.settings == WarehouseSettings("postgresql://127.0.0.1/test", "analytics")
    assert webhook.types == MESSAGE_TYPES
    assert webhook.enabled
    assert webhook.retry_window == DEFAULT_RETRY_WINDOW


def test_common_settings(tmp_path: Path) -> None:
    (config,) = load(
        write(
            tmp_path,
            """
            [[destination]]
            name = "Hook"
            kind = "webhook"
            url = "https://example.com/x"
            types = ["track", "identify"]
            enabled = false
            retry_window = "30m"
            max_attempts = 5
            min_attempts = 2
            rate_limit = 50
            concurrency = 3
            timeout = 2.5
            """,
        ),
        environ={},
    )
    assert config.types == frozenset({"track", "identify"})
    assert not config.enabled
    assert (config.retry_window, config.max_attempts, config.min_attempts) == (1800.0, 5, 2)
    assert (config.rate_limit, config.concurrency, config.timeout) == (50.0, 3, 2.5)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('kind = "webhook"', "destination #1: name: is required"),
        ('name = "H"\nkind = "email"', "destination 'H': kind: must be one of"),
        ('name = "H"\nkind = "webhook"', "destination 'H': url: is required"),
        ('name = "H"\nkind = "webhook"\nurl = "ftp://x"', "'H': url: must be an http:// or"),
        ('name = "H"\nkind = "webhook"\nurl = "http://x"\nbatch_size = 0', "batch_size: must be"),
        ('name = "H"\nkind = "webhook"\nurl = "http://x"\ntypes = ["tracks"]', "types: 'tracks'"),
        ('name = "H"\nkind = "webhook"\nurl = "http://x"\nretry_window = "soon"', "retry_window"),
        ('name = "H"\nkind = "webhook"\nurl = "http://x"\nenabled = "yes"', "enabled: must be"),
        ('name = "H"\nkind = "webhook"\nurl = "http://x"\nurll = "x"', "'H': urll: is not a"),
        ('name = "H"\nkind = "file"', "'H': path: is required"),
        ('name = "H"\nkind = "file"\npath = "x"\nconcurrency = 2', "'H': concurrency: a file"),
        ('name = "S"\nkind = "tracking-api"', "'S': write_key: is required"),
        ('name = "S"\nkind = "tracking-api"\nwrite_key = "k"\nhost = "http://h/v1"', "host:"),
        ('name = "W"\nkind = "postgres"\ndsn = "x"', "'W': dsn: must be"),
        ('name = "W"\nkind = "postgres"\ndsn = "postgresql://h/d"\nschema = "a-b"', "schema:"),
    ],
)
def test_a_mistake_refuses_the_file_naming_destination_and_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    message = refused(tmp_path, f"[[destination]]\n{table}\n")
    assert expected in message


def test_two_destinations_cannot_share_a_name(tmp_path: Path) -> None:
    table = '[[destination]]\nname = "F"\nkind = "file"\npath = "x"\n'
    assert "destination 'F': name: is used by another" in refused(tmp_path, table * 2)


def test_an_unknown_top_level_setting_is_refused(tmp_path: Path) -> None:
    assert "destinations: unknown setting" in refused(tmp_path, "[[destinations]]\nname='x'\n")


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    assert "is not valid TOML" in refused(tmp_path, "[[destination]\n")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot be read"):
        load(tmp_path / "missing.toml")


def test_secrets_never_appear_in_errors_or_reprs(tmp_path: Path) -> None:
    """A bad secret value is named by its key only, and settings keep secrets out of repr."""
    message = refused(
        tmp_path,
        """
        [[destination]]
        name = "S"
        kind = "tracking-api"
        write_key = ["wk-SECRET-1"]
        """,
    )
    assert "write_key: must be a string" in message
    assert "SECRET" not in message
    configs = parse(
        {
            "destination": [
                {"name": "S", "kind": "tracking-api", "write_key": "wk-SECRET-2"},
                {
                    "name": "H",
                    "kind": "webhook",
                    "url": "http://h",
                    "secret": "hook-SECRET-3",
                    "headers": {"Authorization": "Bearer SECRET-4"},
                },
                {"name": "W", "kind": "postgres", "dsn": "postgresql://u:SECRET-5@h/d"},
            ]
        },
        environ={},
    )
    assert "SECRET" not in repr(configs)


def test_environment_variables_are_expanded(tmp_path: Path) -> None:
    (config,) = load(
        write(
            tmp_path,
            """
            [[destination]]
            name = "H"
            kind = "webhook"
            url = "http://${HOOK_HOST}:9000/hook"
            headers = { "Authorization" = "Bearer ${HOOK_TOKEN}" }
            """,
        ),
        environ={"HOOK_HOST": "127.0.0.1", "HOOK_TOKEN": "t0k"},
    )
    assert isinstance(config.settings, WebhookSettings)
    assert config.settings.url == "http://127.0.0.1:9000/hook"
    assert config.settings.headers == {"Authorization": "Bearer t0k"}


def test_a_missing_environment_variable_names_it_and_the_key(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        '[[destination]]\nname = "S"\nkind = "tracking-api"\nwrite_key = "${SEGMENT_KEY}"\n',
    )
    assert message.endswith(
        "destination 'S': write_key: environment variable SEGMENT_KEY is not set"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("30m", 1800.0), ("4h", 14400.0), ("1d", 86400.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_the_collector_refuses_a_bad_file_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[destination]]\nname = "H"\nkind = "webhook"\nurl = "nope"\nsecret = "TOPSECRET"\n',
    )
    done = subprocess.run(
        [sys.executable, "-m", "trackline", "collector", "--port", "0", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"trackline collector: {path}: destination 'H': url: must be an http:// or https:// URL"
    ]
    assert "TOPSECRET" not in done.stdout + done.stderr
