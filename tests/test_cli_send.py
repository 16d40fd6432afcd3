"""`trackline send`: one message from the shell, delivered before the command returns."""

from __future__ import annotations

import json

import pytest

from tests.support.capture import CaptureServer, Reply
from trackline.cli import main


def send(capture: CaptureServer, *argv: str) -> int:
    """Run `trackline send ...` against the capture server."""
    return main(["send", *argv, "--host", capture.url, "--write-key", "cli-key"])


def test_track_is_delivered_and_its_message_id_printed(
    capture: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message reaches the server with every option, and stdout is its id alone."""
    code = send(
        capture,
        "track",
        "--user-id",
        "019mr8mf4r",
        "--event",
        "Item Purchased",
        "--properties",
        '{"revenue": 39.95, "shipping": "2-day"}',
        "--context",
        '{"ip": "12.212.12.49"}',
        "--integrations",
        '{"All": false, "KISSmetrics": true}',
        "--timestamp",
        "2010-01-18T00:00:00Z",
    )
    assert code == 0
    (message,) = capture.delivered()
    assert capsys.readouterr().out == message["messageId"] + "\n"
    assert message["event"] == "Item Purchased"
    assert message["properties"] == {"revenue": 39.95, "shipping": "2-day"}
    assert message["context"]["ip"] == "12.212.12.49"
    assert message["integrations"] == {"All": False, "KISSmetrics": True}
    assert message["timestamp"] == "2010-01-18T00:00:00.000Z"
    assert capture.requests[0].write_key == "cli-key"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["identify", "--user-id", "u", "--traits", '{"plan": "pro"}'],
            {"traits": {"plan": "pro"}},
        ),
        (
            ["page", "--anonymous-id", "a", "--name", "Login", "--category", "Auth"],
            {"name": "Login", "category": "Auth", "anonymousId": "a"},
        ),
        (["screen", "--user-id", "u", "--name", "Home"], {"name": "Home"}),
        (["group", "--user-id", "u", "--group-id", "initech"], {"groupId": "initech"}),
        (["alias", "--previous-id", "anon", "--user-id", "u"], {"previousId": "anon"}),
    ],
)
def test_every_type_can_be_sent(
    capture: CaptureServer, argv: list[str], expected: dict[str, object]
) -> None:
    """The six types, each with its own fields."""
    assert send(capture, *argv, "--message-id", "cli-1") == 0
    (message,) = capture.delivered()
    assert message["type"] == argv[0]
    assert message["messageId"] == "cli-1"
    for key, value in expected.items():
        assert message[key] == value


def test_write_key_and_host_come_from_the_environment(
    capture: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --write-key and --host, TRACKLINE_WRITE_KEY and TRACKLINE_HOST are used."""
    monkeypatch.setenv("TRACKLINE_WRITE_KEY", "env-key")
    monkeypatch.setenv("TRACKLINE_HOST", capture.url)
    assert main(["send", "track", "--user-id", "u", "--event", "From Env"]) == 0
    assert capture.requests[0].write_key == "env-key"


def test_a_refused_message_exits_1_with_the_reason(
    capture: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 401 is reported on one stderr line with the reason and the server's answer."""
    capture.script(Reply(401, body=b'{"code":"unauthorized","message":"bad write key"}'))
    assert send(capture, "track", "--user-id", "u", "--event", "E") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("trackline send: not delivered: unauthorized (HTTP 401)")
    assert "bad write key" in err
    assert err.count("\n") == 1


def test_an_unreachable_server_exits_1_within_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With nothing listening, the command retries until --timeout, then says why."""
    with CaptureServer() as server:
        url = server.url
    argv = ["track", "--user-id", "u", "--event", "E", "--timeout", "0.5"]
    code = main(["send", *argv, "--host", url, "--write-key", "k"])
    assert code == 1
    assert "not delivered:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["track", "--user-id", "u"], "--event: track requires a non-empty event name"),
        (["track", "--event", "E"], "--user-id: either user_id or anonymous_id is required"),
        (["identify", "--user-id", "u", "--event", "E"], "--event does not apply to identify"),
        (
            ["track", "--user-id", "u", "--event", "E", "--properties", "{"],
            "--properties: not valid JSON",
        ),
        (
            ["identify", "--user-id", "u", "--traits", "[1]"],
            "--traits: must be a JSON object, not list",
        ),
        (["track", "--user-id", "u", "--event", "E", "--timestamp", "soon"], "--timestamp:"),
        (["alias", "--previous-id", "a"], "--user-id: alias requires a user_id"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    capture: CaptureServer, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A mistake on the command line is named, and nothing is sent."""
    assert send(capture, *argv) == 2
    assert message in capsys.readouterr().err
    assert capture.requests == []


def test_a_missing_write_key_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a key anywhere, the error says both ways to give one."""
    monkeypatch.delenv("TRACKLINE_WRITE_KEY", raising=False)
    assert main(["send", "track", "--user-id", "u", "--event", "E"]) == 2
    assert "pass --write-key or set TRACKLINE_WRITE_KEY" in capsys.readouterr().err


def test_a_bad_timeout_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout must be a positive number of seconds."""
    with pytest.raises(SystemExit) as exit_info:
        main(["send", "track", "--timeout", "0"])
    assert exit_info.value.code == 2
    assert "--timeout: must be greater than zero" in capsys.readouterr().err


def test_json_options_keep_nested_values(capture: CaptureServer) -> None:
    """Nested objects in --traits reach the server as sent."""
    traits = {"address": {"street": "123 Fake Street", "city": "Boston"}, "friends": 29}
    assert send(capture, "identify", "--user-id", "u", "--traits", json.dumps(traits)) == 0
    assert capture.delivered()[0]["traits"] == traits
