"""One settings object for every way to run a collector: `CollectorSettings` and the keyword
options that mirror it, checked when made; `start`, `serve`, `run`, `create_app` and the
command line all take it; secrets from files and the environment."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import trackline.collector.settings as settings_module
from tests.collector.conftest import Http, message, source_of
from trackline.cli import collector as cli
from trackline.collector import (
    CollectorSettings,
    SettingsOptions,
    Store,
    create_app,
    run,
    serve,
    start,
)
from trackline.errors import ConfigError

TOKEN = "settings-read-token-0123456789"


def test_keyword_options_are_the_settings_fields() -> None:
    """`SettingsOptions` (the keywords of start/serve/run/create_app) names exactly the fields
    of `CollectorSettings` after `database`, with the same types."""
    fields = {field.name: field.type for field in dataclasses.fields(CollectorSettings)}
    fields.pop("database")
    hints = typing.get_type_hints(SettingsOptions)
    assert list(hints) == list(fields)
    names = {**vars(settings_module), "Store": Store}  # imported for type checking only
    resolved = typing.get_type_hints(CollectorSettings, names)
    assert {name: resolved[name] for name in fields} == hints


@pytest.mark.parametrize("function", [start, serve, run, create_app])
def test_every_entry_point_takes_the_same_settings(function: object) -> None:
    """start, serve, run and create_app take a database or settings, then the options: no
    entry point repeats the option list."""
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    assert next(iter(parameters)) == "database"
    assert "options" in parameters
    assert not set(parameters) & set(typing.get_type_hints(SettingsOptions))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"port": 70000}, "port"),
        ({"body_timeout": 0}, "body_timeout"),
        ({"send_timeout": float("nan")}, "send_timeout"),
        ({"write_keys": "one-string"}, "write_keys"),
        ({"write_keys": ["ok", "bad\tkey"]}, "write_keys"),
        ({"read_token": "short"}, "read_token"),
        ({"allow_origins": ["localhost:3000"]}, "allow_origins"),
        ({"allow_hosts": ["http://x.example"]}, "allow_hosts"),
        ({"trusted_proxies": ["a proxy"]}, "trusted_proxies"),
        ({"retention": 0}, "retention"),
        ({"retention": float("inf")}, "retention"),
        ({"retention": "30d"}, "retention"),
    ],
)
def test_bad_settings_name_their_field(options: dict[str, object], field: str) -> None:
    """Each bad option is a ConfigError naming it, raised when the settings are made."""
    with pytest.raises(ConfigError) as raised:
        CollectorSettings("events.sqlite3", **options)  # type: ignore[arg-type]
    assert raised.value.option == field


def test_settings_and_options_combine(db_path: Path) -> None:
    """serve(settings) runs those settings; options given beside them override fields."""
    settings = CollectorSettings(db_path, write_keys=["first-key"], read_token=TOKEN)
    with serve(settings, write_keys=["second-key"]) as running:
        http = Http(running.url)
        assert http.post("/v1/batch", {"batch": [message(1)]}, key="first-key").status == 401
        assert http.post("/v1/batch", {"batch": [message(2)]}, key="second-key").status == 200
        assert http.get("/api/stats").status == 401  # the read token came from the settings


def test_an_open_store_can_be_served_and_stays_open(db_path: Path) -> None:
    """A Store given as the database is served as it is and left open for its owner."""
    from trackline.collector.store import SQLiteStore

    with SQLiteStore(db_path) as store:
        with serve(store) as running:
            assert Http(running.url).post("/v1/batch", {"batch": [message(1)]}).status == 200
        assert store.stats().events == 1
        assert store.healthy


def test_a_retention_on_sqlite_is_served(db_path: Path) -> None:
    """`retention` with a SQLite file is accepted, and the served store deletes events
    received longer ago than it."""
    from datetime import UTC, datetime, timedelta

    from trackline.collector.ingest import Envelope, process
    from trackline.collector.store import SQLiteStore

    settings = CollectorSettings(db_path, retention=86_400.0)
    with serve(settings) as running:
        store = running.storage
        assert isinstance(store, SQLiteStore)
        old = datetime.now(UTC) - timedelta(days=2)
        store.write(process(Envelope([message(1)]), source="k", received_at=old).rows)
        assert Http(running.url).post("/v1/batch", {"batch": [message(2)]}).status == 200
        assert store.expire() == 1
        assert store.stats().events == 1


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_line_secrets_from_files_and_environment(tmp_path: Path) -> None:
    """Write keys add up from --write-key, --write-key-file (one per line, # comments) and
    TRACKLINE_WRITE_KEYS (comma-separated); the read token comes from --read-token-file,
    else --read-token, else TRACKLINE_READ_TOKEN."""
    keys = tmp_path / "keys.txt"
    keys.write_text("# production\nfile-key-1\n\n  file-key-2  \n")
    token = tmp_path / "token.txt"
    token.write_text(f"{TOKEN}-file\n")
    environ = {"TRACKLINE_WRITE_KEYS": "env-key-1, env-key-2,", "TRACKLINE_READ_TOKEN": TOKEN}
    args = parse("--write-key", "flag-key", "--write-key-file", str(keys))
    settings = cli.settings_from(args, environ)
    assert settings.write_keys == ("flag-key", "file-key-1", "file-key-2", "env-key-1", "env-key-2")
    assert settings.read_token == TOKEN
    assert cli.settings_from(parse("--read-token-file", str(token)), environ).read_token == (
        f"{TOKEN}-file"
    )
    assert cli.settings_from(parse("--read-token", f"{TOKEN}-flag"), environ).read_token == (
        f"{TOKEN}-flag"
    )
    options = parse(
        "--allow-origin",
        "http://localhost:3000",
        "--allow-host",
        "dev.test",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--send-timeout",
        "5",
    )
    settings = cli.settings_from(options, {})
    assert (settings.allow_origins, settings.allow_hosts) == (
        ("http://localhost:3000",),
        ("dev.test",),
    )
    assert (settings.trusted_proxies, settings.send_timeout) == (("10.0.0.0/8",), 5.0)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--read-token", "short"], b"read_token"),
        (["--allow-origin", "nope"], b"allow_origins"),
        (["--write-key-file", "/no/such/file"], b"write_key_file"),
    ],
)
def test_command_line_refuses_bad_options_before_starting(
    tmp_path: Path, argv: list[str], named: bytes
) -> None:
    """A bad option exits with status 1 and a message naming it; nothing is created."""
    done = subprocess.run(
        [sys.executable, "-m", "trackline", "collector", "--port", "0", *argv],
        capture_output=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert named in done.stderr
    assert not (tmp_path / "trackline.sqlite3").exists()


def test_write_keys_from_the_environment_serve(tmp_path: Path) -> None:
    """`trackline collector` with TRACKLINE_WRITE_KEYS (no key on its command line) accepts
    those keys only and stores their key ids."""
    db = tmp_path / "events.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trackline", "collector", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**dict(__import__("os").environ), "TRACKLINE_WRITE_KEYS": "env-key-a,env-key-b"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().split()[4]
        http = Http(url)
        assert http.post("/v1/batch", {"batch": [message(1)]}, key="env-key-b").status == 200
        assert http.post("/v1/batch", {"batch": [message(2)]}, key="other").status == 401
        by_source = http.get("/api/stats").json["by_source"]
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    with serve(db) as running:
        assert by_source == {source_of(running, "env-key-b"): 1}
