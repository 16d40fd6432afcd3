"""Turn the runner's raw results into the markdown table: medians, ratios, targets, notes.

A ratio is taken inside each repetition (every library ran back to back in it), then the
median of those ratios is shown, so a slow minute on a shared machine moves all libraries of
that repetition together instead of skewing one of them.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any, Final

Runs = dict[tuple[str, str], list[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the table: which scenario, which value, and the target against segment."""

    label: str
    scenario: str
    key: str
    digits: int
    #: The target as the ratio trackline / segment, and whether lower is better.
    target: float | None = None
    lower_is_better: bool = True


METRICS: Final = (
    Metric("track() call, median µs", "near", "call_median_us", 2, 0.1),
    Metric("track() call, p99 µs", "near", "call_p99_us", 1),
    Metric("throughput, sink answering at once, events/s", "near", "throughput", 0, 15, False),
    Metric("throughput, sink 50 ms away, events/s", "far", "throughput", 0, 30, False),
    Metric("CPU seconds per 100k events (whole process)", "near", "cpu_per_100k", 2, 0.1),
    Metric("memory per queued event (RSS), bytes", "memory", "bytes_per_event", 0, 0.4),
    Metric(
        "outage, sink down: memory per event held (RSS), bytes",
        "outage-down",
        "bytes_per_held",
        0,
        0.4,
    ),
    Metric(
        "outage, black hole: memory per event held (RSS), bytes",
        "outage-hole",
        "bytes_per_held",
        0,
        0.4,
    ),
)


def median(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    """The median of `key` over runs that report it."""
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def paired_ratio(
    mine: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]], key: str
) -> float | None:
    """Median over repetitions of mine/theirs, pairing runs of the same repetition."""
    ratios = [
        a[key] / b[key]
        for a, b in zip(mine, theirs, strict=False)
        if a.get(key) is not None and b.get(key)
    ]
    return statistics.median(ratios) if ratios else None


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}x"


def _target(metric: Metric) -> str:
    if metric.target is None:
        return ""
    sign = "≤" if metric.lower_is_better else "≥"
    return f"{sign} {_ratio(metric.target)}"


def _met(metric: Metric, ratio: float | None) -> str:
    if metric.target is None or ratio is None:
        return ""
    ok = ratio <= metric.target if metric.lower_is_better else ratio >= metric.target
    return "yes" if ok else "**no**"


def client_table(runs: Runs, libraries: Sequence[str], versions: dict[str, str]) -> str:
    """The side-by-side table of the client scenarios."""
    peers = [lib for lib in libraries if not lib.startswith("trackline")]
    columns = [_heading(lib, versions) for lib in libraries]
    ratio_columns = [f"trackline ÷ {lib}" for lib in peers]
    lines = [
        "| metric | " + " | ".join(columns + ratio_columns) + " | target (÷ segment) | met |",
        "|---" * (len(columns) + len(ratio_columns) + 3) + "|",
    ]
    for metric in METRICS:
        cells = [
            _number(median(runs.get((metric.scenario, lib), []), metric.key), metric.digits)
            for lib in libraries
        ]
        mine = runs.get((metric.scenario, "trackline"), [])
        ratios = [
            paired_ratio(mine, runs.get((metric.scenario, lib), []), metric.key) for lib in peers
        ]
        segment = ratios[peers.index("segment")] if "segment" in peers else None
        row = [metric.label, *cells, *map(_ratio, ratios), _target(metric), _met(metric, segment)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def headline_table(runs: Runs, libraries: Sequence[str], versions: dict[str, str]) -> str:
    """The README's short table: each metric with a target, trackline beside the peers (their
    own defaults), the ratio to segment, and whether the target is met. Metrics the run did
    not measure are left out."""
    peers = [lib for lib in libraries if not lib.startswith("trackline")]
    columns = ["trackline", *(_heading(lib, versions) for lib in peers)]
    lines = [
        "| metric | " + " | ".join(columns) + " | trackline ÷ segment | target | met |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for metric in METRICS:
        mine = runs.get((metric.scenario, "trackline"), [])
        value = median(mine, metric.key)
        if metric.target is None or value is None:
            continue
        cells = [_number(value, metric.digits)] + [
            _number(median(runs.get((metric.scenario, lib), []), metric.key), metric.digits)
            for lib in peers
        ]
        ratio = paired_ratio(mine, runs.get((metric.scenario, "segment"), []), metric.key)
        row = [metric.label, *cells, _ratio(ratio), _target(metric), _met(metric, ratio)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _heading(lib: str, versions: dict[str, str]) -> str:
    if lib == "trackline-tuned":
        return "trackline, 1 worker¹"
    name = {"segment": "segment-analytics-python"}.get(lib, lib)
    return f"{name} {versions.get(lib, '')}".strip()


def collector_table(runs: Runs, rows: Sequence[tuple[str, str]], target: float) -> str:
    """Events per second stored by the collector, per load."""
    lines = [
        "| load on `trackline collector` | events/s stored | target | met |",
        "|---|---|---|---|",
    ]
    for key, label in rows:
        value = median(runs.get(("collector", key), []), "throughput")
        goal = f"≥ {target:,.0f}" if key == "load" else ""
        met = ""
        if key == "load" and value is not None:
            met = "yes" if value >= target else "**no**"
        lines.append(f"| {label} | {_number(value, 0)} | {goal} | {met} |")
    return "\n".join(lines)


def spread(runs: Runs, describe: Callable[[str, str], str]) -> str:
    """Every repetition's value, for readers who want to judge the noise themselves."""
    lines = []
    for (scenario, lib), results in sorted(runs.items()):
        key = {
            "memory": "bytes_per_event",
            "outage-down": "bytes_per_held",
            "outage-hole": "bytes_per_held",
            "collector": "throughput",
        }.get(scenario, "throughput")
        values = ", ".join(_number(run.get(key), 0) for run in results)
        lines.append(f"- {describe(scenario, lib)}: {values}")
    return "\n".join(lines)
