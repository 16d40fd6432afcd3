"""The benchmark's own parts: the counting sink counts what each library sends, and the table's
ratios and verdicts follow the targets. No timing is asserted here; the figures live in bench/."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import json
import os
import random
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench import collector_floor, curve, load, run, sink, table

from trackline.collector.ingest import Row


@pytest.fixture
def sink_url() -> Iterator[str]:
    """The counting sink serving from a background thread on 127.0.0.1."""
    started = threading.Event()
    running: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        server = asyncio.ensure_future(sink.serve(0, ready))
        running.update(port=await ready, loop=loop, stop=asyncio.Event())
        started.set()
        await running["stop"].wait()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{running['port']}"
    finally:
        running["loop"].call_soon_threadsafe(running["stop"].set)
        thread.join(10)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
        return int(answer.status)


def test_count_events_reads_each_librarys_body() -> None:
    """A Segment-style and a PostHog-style envelope count their batch, gzip or not; an array
    counts its items, a single message one, anything not JSON nothing."""
    segment = json.dumps({"batch": [{"type": "track"}] * 3, "sentAt": "x"}).encode()
    posthog = json.dumps({"api_key": "k", "batch": [{"event": "e"}] * 2}).encode()
    assert sink.count_events(segment) == 3
    assert sink.count_events(gzip.compress(segment), "gzip") == 3
    assert sink.count_events(gzip.compress(posthog)) == 2
    assert sink.count_events(b'[{"a": 1}, {"b": 2}]') == 2
    assert sink.count_events(b'{"type": "track"}') == 1
    assert sink.count_events(b"not json") == 0


def test_sink_answers_200_and_counts_until_expected(sink_url: str) -> None:
    """Over a real socket: every POST is answered 200, and /_wait reports the expected count
    reached, with the time of the answer that completed it."""
    _post(f"{sink_url}/_reset?latency=0&expect=5", b"")
    body = json.dumps({"batch": [{"type": "track"}] * 3}).encode()
    assert _post(f"{sink_url}/v1/batch", gzip.compress(body), {"Content-Encoding": "gzip"}) == 200
    assert _post(f"{sink_url}/batch/", json.dumps({"batch": [{}, {}]}).encode()) == 200
    with urllib.request.urlopen(f"{sink_url}/_wait?timeout=10", timeout=20) as answer:
        state = json.loads(answer.read())
    assert state["done"] is True
    assert (state["events"], state["requests"]) == (5, 2)
    assert state["last_at"] > 0


def test_paired_ratio_pairs_runs_of_the_same_repetition() -> None:
    """A ratio is taken within each repetition, then the median of those is reported."""
    mine = [{"v": 1.0}, {"v": 2.0}, {"v": 10.0}]
    theirs = [{"v": 10.0}, {"v": 10.0}, {"v": 10.0}]
    assert table.paired_ratio(mine, theirs, "v") == pytest.approx(0.2)
    assert table.median(mine, "v") == 2.0


def measured_runs() -> table.Runs:
    """A run of trackline and segment over the near, far and memory scenarios (no outage)."""
    return {
        ("near", "trackline"): [
            {"call_median_us": 1.0, "call_p99_us": 3.0, "throughput": 200.0, "cpu_per_100k": 1}
        ],
        ("near", "segment"): [
            {"call_median_us": 20.0, "call_p99_us": 90.0, "throughput": 20.0, "cpu_per_100k": 5}
        ],
        ("far", "trackline"): [{"throughput": 100.0}],
        ("far", "segment"): [{"throughput": 10.0}],
        ("memory", "trackline"): [{"bytes_per_event": 300.0}],
        ("memory", "segment"): [{"bytes_per_event": 1000.0}],
    }


def test_client_table_marks_each_target_met_or_not() -> None:
    """Rows whose ratio to segment meets its target say yes, the others say no."""
    rendered = table.client_table(measured_runs(), ["trackline", "segment"], {"segment": "2.4.0"})
    verdicts = {
        line.split(" | ")[0].lstrip("| "): line.rstrip(" |").rsplit(" | ", 1)[-1]
        for line in rendered.splitlines()[2:]
    }
    assert verdicts["track() call, median µs"] == "yes"  # 0.05 <= 0.1
    assert verdicts["throughput, sink answering at once, events/s"] == "**no**"  # 10x < 15x
    assert verdicts["throughput, sink 50 ms away, events/s"] == "**no**"  # 10x < 30x
    assert verdicts["CPU seconds per 100k events (whole process)"] == "**no**"  # 0.2 > 0.1
    assert verdicts["memory per queued event (RSS), bytes"] == "yes"  # 0.3 <= 0.4


def test_headline_table_keeps_the_measured_targets_and_the_peers() -> None:
    """The README's table: trackline beside each peer (not the one-worker variant), one row
    per metric that has a target and was measured, with its ratio to segment and verdict."""
    versions = {"segment": "2.4.0"}
    rendered = table.headline_table(
        measured_runs(), ["trackline", "trackline-tuned", "segment"], versions
    )
    lines = rendered.splitlines()
    assert lines[0].split(" | ") == [
        "| metric",
        "trackline",
        "segment-analytics-python 2.4.0",
        "trackline ÷ segment",
        "target",
        "met |",
    ]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == [
        "track() call, median µs",
        "throughput, sink answering at once, events/s",
        "throughput, sink 50 ms away, events/s",
        "CPU seconds per 100k events (whole process)",
        "memory per queued event (RSS), bytes",
    ]
    assert lines[2] == "| track() call, median µs | 1.00 | 20.00 | 0.050 | ≤ 0.100 | yes |"


def test_the_readme_and_the_performance_page_carry_the_markers() -> None:
    """`python -m bench.run --readme` writes the headline table into the README and the full
    one into the Performance page; both still have the markers it writes between."""
    for page in ("README.md", run.PERFORMANCE_PAGE):
        text = (run.ROOT / page).read_text(encoding="utf-8")
        assert text.count(run.README_START) == text.count(run.README_END) == 1, page
        assert text.index(run.README_START) < text.index(run.README_END), page


def test_update_readme_writes_each_page_its_own_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page gets its own text between its markers, the rest of it untouched."""
    for name in ("README.md", "performance.md"):
        (tmp_path / name).write_text(f"before\n{run.README_START}\nold\n{run.README_END}\nafter\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    run.update_readme({"README.md": "short", "performance.md": "full"})
    assert (tmp_path / "README.md").read_text() == (
        f"before\n{run.README_START}\nshort\n{run.README_END}\nafter\n"
    )
    assert "\nfull\n" in (tmp_path / "performance.md").read_text()


def test_curve_table_sets_each_size_against_the_smallest() -> None:
    """The sustained-rate table: one row per variant and size, medians of the repetitions,
    the rate as a share of the same variant's rate at the smallest size."""

    def point(variant: str, size: int, rate: int, p99: float) -> dict[str, Any]:
        return {
            "variant": variant,
            "size": size,
            "events_per_s": rate,
            "ack_p50_ms": 10.0,
            "ack_p99_ms": p99,
            "file_mb": 100,
            "rss_mb": 80,
        }

    results = [
        point("after", 0, 20_000, 30.0),
        point("after", 0, 22_000, 50.0),
        point("after", 10_000_000, 16_800, 70.0),
        point("before", 0, 10_000, 90.0),
        point("before", 1_500_000, 2_500, 500.0),
    ]
    lines = curve.table(results, [0, 1_500_000, 10_000_000]).splitlines()
    assert lines[0].startswith("| variant | events stored before | events/s stored |")
    assert lines[2:] == [
        "| after | 0 | 21,000 | 100% | 10.0 | 40.0 | 100 | 80 |",
        "| after | 10M | 16,800 | 80% | 10.0 | 70.0 | 100 | 80 |",
        "| before | 0 | 10,000 | 100% | 10.0 | 90.0 | 100 | 80 |",
        "| before | 1,500,000 | 2,500 | 25% | 10.0 | 500.0 | 100 | 80 |",
    ]


def test_curve_prefill_rows_are_the_stores_columns() -> None:
    """Prefilled rows have the columns the collector stores (`ingest.Row`), random UUID
    message ids, and bodies that carry the same ids."""
    rows = list(curve.fake_rows(50, "src", dt.datetime.now(dt.UTC), random.Random(1)))
    assert all(len(row) == len(Row._fields) for row in rows)
    ids = [Row(*row).message_id for row in rows]
    assert len(set(ids)) == 50
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}", i)
        for i in ids
    )
    assert [json.loads(Row(*row).body)["messageId"] for row in rows] == ids
    assert [Row(*row).received_at for row in rows] == sorted(Row(*row).received_at for row in rows)


def test_floor_table_sets_the_collector_against_the_floors_and_the_targets(
    tmp_path: Path,
) -> None:
    """The floor bench's arithmetic: the generator's share of the cores at the target rate
    leaves the collector its budget per event, and each floor stage is measured on real
    SQLite files (here on a few bodies only)."""
    bodies = [raw.split(b"\r\n\r\n", 1)[1] for raw, _ in load.build_requests("x", 200, 100, True)]
    stages = {
        stage: collector_floor.floor(stage, bodies, str(tmp_path / f"{n}.sqlite3"))
        for n, stage in enumerate(collector_floor.FLOORS)
    }
    assert all(cost > 0 for cost in stages.values())
    run_ = {
        "sink events_per_s": 500_000.0,
        "sink server_us": 1.5,
        "sink generator_us": 1.0,
        "collector events_per_s": 20_000.0,
        "collector server_us": 60.0,
        "collector generator_us": 2.5,
        **{f"floor {stage}": 5.0 * (n + 1) for n, stage in enumerate(collector_floor.FLOORS)},
    }
    text = collector_floor.render([run_])
    cores = os.cpu_count() or 1
    budget = (cores - 100_000 * 2.5e-6) / 100_000 * 1e6
    assert f"leaving the collector {budget:.1f} µs of CPU per event" in text
    assert "Collector ÷ sink, repetition by repetition: 0.040 (target 0.4)" in text
    assert "0.4 of the sink is 200,000 events/s, 4.0 times" in text
