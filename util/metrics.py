"""Metrics as CloudWatch Embedded Metric Format (EMF): one JSON line per flush, no API calls.

The CloudWatch agent (or Lambda/ECS log drivers) turns each line into metrics. Off by default
(``[metrics] emf = off``); ``stdout`` writes the lines to a stream of their own, ``stderr``
mixes them into the log. One line per message a worker handles (and one per handler that
raised), one per reconcile pass; the metrics, their units and dimensions:
docs/reconcile-and-metrics.md#metrics-cloudwatch-embedded-metric-format.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TextIO

from util.util_config import Config

UNITS = {
    "Messages": "Count",
    "HandlerDuration": "Milliseconds",
    "DeadLettered": "Count",
    "BytesArchived": "Bytes",
    "BytesThawed": "Bytes",
}
UNEXPECTED_ERRORS = "UnexpectedErrors"
FINDINGS_DIMENSIONS = {"Utility": "reconcile"}
_lock = threading.Lock()  # one line at a time, whichever thread flushes


def _stream(config: Config) -> TextIO | None:
    return {"off": None, "stdout": sys.stdout, "stderr": sys.stderr}[config.metrics.emf]


def unit(name: str) -> str:
    return UNITS.get(name, "Count")


def document(namespace: str, dimensions: Mapping[str, str], values: Mapping[str, float]) -> dict:
    """One EMF document: the `_aws` metadata, then the dimensions' and metrics' values."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit(name)} for name in values],
                }
            ],
        },
        **dimensions,
        **values,
    }


def emit(config: Config, dimensions: Mapping[str, str], values: Mapping[str, float]) -> None:
    """Write one EMF line, if metrics are on."""
    stream = _stream(config)
    if stream is None:
        return
    line = json.dumps(document(config.metrics.namespace, dimensions, values))
    with _lock:
        stream.write(line + "\n")
        stream.flush()


def emit_message(
    config: Config, utility: str, outcome: str, duration: float, handled: Mapping[str, float]
) -> None:
    """A worker's line for one message; `handled`: what its handler counted."""
    emit(
        config,
        {"Utility": utility, "Outcome": outcome},
        {
            "Messages": 1,
            "HandlerDuration": round(duration * 1000, 3),
            "DeadLettered": int(outcome == "invalid"),
            **handled,
        },
    )


def emit_error(config: Config, utility: str) -> None:
    """A worker's line for a handler that raised (a bug), by utility alone: whatever the
    message's outcome then, one alarm per utility sees it (util/doctor/alarms.py)."""
    emit(config, {"Utility": utility}, {UNEXPECTED_ERRORS: 1})


def emit_findings(config: Config, counts: Mapping[str, int], kinds: Iterable[str]) -> None:
    """Reconcile's line for one pass: every kind's count, zeros included."""
    emit(
        config,
        FINDINGS_DIMENSIONS,
        {finding_metric(kind): counts.get(kind, 0) for kind in kinds},
    )


def finding_metric(kind: str) -> str:
    """``orphan-archive`` -> ``FindingsOrphanArchive``."""
    return "Findings" + "".join(part.capitalize() for part in kind.split("-"))
