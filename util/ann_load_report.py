"""The figures and the picture of an ann_load run: percentiles, and an HTML report whose charts
are inline SVG drawn with the standard library only (no script, no external file)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

PERCENTILES = (50, 90, 99)
WIDTH, HEIGHT = 760, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 150, 16, 44
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `p` % of `values` at or
    below it (p50 of 1..10 is 5, p90 is 9, p99 is 10); always one of the values, None if
    there are none."""
    return ranked(sorted(values), p)


def ranked(ordered: Sequence[float], p: float) -> float | None:
    """`percentile` of values already in ascending order (no sorting: cheap on a long run)."""
    if not ordered:
        return None
    # round() so that 99.9 * 1000 / 100 is rank 999, not 1000 after a floating-point wobble.
    rank = math.ceil(round(p * len(ordered) / 100, 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """count, p50, p90, p99 and max of `values` (None where there are no values)."""
    figures: dict[str, Any] = {"count": len(values)}
    figures.update({f"p{p}": _round(percentile(values, p)) for p in PERCENTILES})
    figures["max"] = _round(max(values, default=None))
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- charts ------------------------------------------------------------------------------------


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


class _Frame:
    """A chart's plotting area: data coordinates to SVG coordinates, axes, ticks, labels."""

    def __init__(self, x_max: float, y_max: float, x_label: str, y_label: str):
        self.x_step, self.y_step = nice_step(x_max), nice_step(y_max)
        self.x_max = max(self.x_step, math.ceil(x_max / self.x_step) * self.x_step)
        self.y_max = max(self.y_step, math.ceil(y_max / self.y_step) * self.y_step)
        self.x_label, self.y_label = x_label, y_label
        self.width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        self.height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(self, value: float) -> float:
        return round(MARGIN_LEFT + value / self.x_max * self.width, 1)

    def y(self, value: float) -> float:
        return round(MARGIN_TOP + self.height - value / self.y_max * self.height, 1)

    def axes(self) -> list[str]:
        parts = []
        bottom, right = MARGIN_TOP + self.height, MARGIN_LEFT + self.width
        for i in range(round(self.y_max / self.y_step) + 1):
            y = self.y(i * self.y_step)
            parts.append(f'<line x1="{MARGIN_LEFT}" y1="{y}" x2="{right}" y2="{y}" class="grid"/>')
            parts.append(
                f'<text x="{MARGIN_LEFT - 6}" y="{y + 4}" text-anchor="end">'
                f"{_number(i * self.y_step)}</text>"
            )
        for i in range(round(self.x_max / self.x_step) + 1):
            x = self.x(i * self.x_step)
            parts.append(f'<line x1="{x}" y1="{bottom}" x2="{x}" y2="{bottom + 4}" class="axis"/>')
            parts.append(
                f'<text x="{x}" y="{bottom + 18}" text-anchor="middle">'
                f"{_number(i * self.x_step)}</text>"
            )
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>'
        )
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" '
            f'y2="{bottom}" class="axis"/>'
        )
        parts.append(
            f'<text x="{MARGIN_LEFT + self.width / 2}" y="{HEIGHT - 6}" '
            f'text-anchor="middle">{escape(self.x_label)}</text>'
        )
        parts.append(
            f'<text x="14" y="{MARGIN_TOP + self.height / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {MARGIN_TOP + self.height / 2})">'
            f"{escape(self.y_label)}</text>"
        )
        return parts

    def legend(self, names: Sequence[tuple[str, str]]) -> list[str]:
        parts = []
        for i, (name, colour) in enumerate(names):
            x, y = MARGIN_LEFT + self.width + 14, MARGIN_TOP + 10 + i * 18
            parts.append(f'<rect x="{x}" y="{y - 8}" width="12" height="4" fill="{colour}"/>')
            parts.append(f'<text x="{x + 18}" y="{y - 2}">{escape(name)}</text>')
        return parts


def _svg(title: str, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def line_chart(
    title: str, series: Mapping[str, Sequence[tuple[float, float]]], x_label: str, y_label: str
) -> str:
    """One polyline per named series of (x, y) points, on shared axes."""
    points = [p for values in series.values() for p in values]
    frame = _Frame(
        max((x for x, _ in points), default=1),
        max((y for _, y in points), default=1),
        x_label,
        y_label,
    )
    parts = frame.axes()
    colours = list(zip(series, COLOURS, strict=False))
    for name, colour in colours:
        path = " ".join(f"{frame.x(x)},{frame.y(y)}" for x, y in series[name])
        if path:
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
    return _svg(title, parts + frame.legend(colours))


def histogram(title: str, values: Sequence[float], x_label: str, bins: int = 40) -> str:
    """Bars of how many values fall in each of `bins` equal bins, with p50/p90/p99 marked."""
    top = max(values, default=1) or 1
    width = top / bins
    counts = [0] * bins
    for value in values:
        counts[min(max(int(value / width), 0), bins - 1)] += 1
    frame = _Frame(top, max(counts, default=1) or 1, x_label, "jobs")
    parts = frame.axes()
    for i, count in enumerate(counts):
        if count:
            x0, x1 = frame.x(i * width), frame.x((i + 1) * width)
            parts.append(
                f'<rect x="{x0}" y="{frame.y(count)}" width="{max(x1 - x0 - 1, 1)}" '
                f'height="{round(frame.y(0) - frame.y(count), 1)}" fill="{COLOURS[0]}"/>'
            )
    marks = []
    for p, colour in zip(PERCENTILES, COLOURS[1:], strict=False):
        mark = percentile(values, p)
        if mark is not None:
            x = frame.x(mark)
            parts.append(
                f'<line x1="{x}" y1="{MARGIN_TOP}" x2="{x}" y2="{frame.y(0)}" '
                f'stroke="{colour}" stroke-dasharray="4 3"/>'
            )
            marks.append((f"p{p} {_number(round(mark, 3))}", colour))
    return _svg(title, parts + frame.legend(marks))


# -- the page ----------------------------------------------------------------------------------

STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:60em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{text-align:left;background:#f4f4f4}svg text{font:11px sans-serif;fill:#333}
.grid{stroke:#eee}.axis{stroke:#888}figure{margin:1.5em 0}figcaption{font-weight:bold}"""


def _figures_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for name, key, unit in (
        ("send lag (actual - intended send)", "send_lag_ms", "ms"),
        ("submit latency (upload + item + publish)", "submit_latency_ms", "ms"),
        ("end to end (intended send - COMPLETED seen)", "end_to_end_ms", "ms"),
    ):
        figures = summary[key]
        cells = "".join(
            f"<td>{'-' if figures[k] is None else _number(figures[k])}</td>"
            for k in ("count", "p50", "p90", "p99", "max")
        )
        rows.append(f"<tr><th>{escape(name)} ({unit})</th>{cells}</tr>")
    return (
        "<table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th>"
        f"</tr>{''.join(rows)}</table>"
    )


def render(
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
) -> str:
    """The whole report as one self-contained XHTML-compatible page."""
    target, jobs = summary["target"], summary["jobs"]
    seconds = max(
        [
            math.ceil(r[k])
            for r in records
            for k in ("sent_s", "completed_s")
            if r.get(k) is not None
        ]
        + [math.ceil(target["span_s"]), 1]
    )

    def per_second(key: str) -> list[tuple[float, float]]:
        counts = [0] * (seconds + 1)
        for record in records:
            if record.get(key) is not None:
                counts[int(record[key])] += 1
        return [(t, n) for t, n in enumerate(counts)]

    flow = line_chart(
        "jobs per second",
        {
            "intended": per_second("intended_s"),
            "sent": per_second("sent_s"),
            "completed": per_second("completed_s"),
        },
        "seconds since start",
        "jobs per second",
    )
    backlog = line_chart(
        "job-requests queue",
        {
            "waiting": [(s["t"], s["backlog"]) for s in timeline if s["backlog"] is not None],
            "in flight": [(s["t"], s["in_flight"]) for s in timeline if s["in_flight"] is not None],
        },
        "seconds since start",
        "messages",
    )
    e2e = histogram(
        "end-to-end latency",
        [r["e2e_ms"] / 1000 for r in records if r.get("e2e_ms") is not None],
        "seconds",
    )
    lag = histogram(
        "send lag", [r["lag_ms"] for r in records if r.get("lag_ms") is not None], "milliseconds"
    )
    facts = [
        ("run", summary["run_id"]),
        ("started", summary["started_at"]),
        ("account / endpoint", f"{summary['account']} / {summary['endpoint']}"),
        (
            "target",
            f"{_number(target['rate'])} jobs/s, ramp {_number(target['ramp_s'])} s, "
            f"{jobs['scheduled']} jobs over {_number(target['span_s'])} s",
        ),
        (
            "achieved rate",
            f"{summary['achieved_rate']} jobs/s (target mean {summary['target_rate']} jobs/s)",
        ),
        (
            "late sends",
            f"{summary['late_sends']} of {jobs['sent']} "
            f"(more than {summary['late_threshold_ms']} ms after their time)",
        ),
        (
            "sent / errors / not sent (dropped)",
            f"{jobs['submitted']} / {jobs['send_errors']} / {jobs['not_sent']} ({jobs['dropped']})",
        ),
        (
            "completed / failed / never completed",
            f"{jobs['completed']} / {jobs['failed']} / {jobs['never_completed']}"
            + ("" if summary["drain_s"] is None else f" (drain {_number(summary['drain_s'])} s)"),
        ),
        (
            "job-requests backlog",
            f"max {summary['backlog']['max']}, at the end {summary['backlog']['final']}",
        ),
        ("percentiles", summary["percentile_method"]),
    ]
    if summary["interrupted"]:
        facts.append(("interrupted", "yes: the figures cover the run up to the interrupt"))
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    return f"""<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en">
<head><meta charset="utf-8"/><title>ann_load {escape(summary["run_id"])}</title>
<style>{STYLE}</style></head>
<body>
<h1>ann_load run {escape(summary["run_id"])}</h1>
<table>{rows}</table>
{_figures_table(summary)}
<figure><figcaption>Arrivals and completions per second</figcaption>{flow}</figure>
<figure><figcaption>Job-requests queue backlog, sampled every {_number(summary["backlog"]["every_s"])} s</figcaption>{backlog}</figure>
<figure><figcaption>End-to-end latency: intended send to COMPLETED observed</figcaption>{e2e}</figure>
<figure><figcaption>Send lag: how late each job was sent</figcaption>{lag}</figure>
</body>
</html>
"""
