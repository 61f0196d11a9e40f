"""Reading CloudWatch Embedded Metric Format lines as CloudWatch would (its specification)."""

from __future__ import annotations

import json
from typing import Any

# CloudWatch's metric units (MetricDatum.Unit).
UNITS = {
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
}


def parse(line: str) -> dict[str, dict[str, Any]]:
    """One EMF line as {metric name: {"value", "unit", "namespace", "dimensions"}}; raises
    AssertionError where the line breaks the format."""
    document = json.loads(line)
    metadata = document["_aws"]
    assert isinstance(metadata["Timestamp"], int) and metadata["Timestamp"] > 0
    metrics: dict[str, dict[str, Any]] = {}
    for directive in metadata["CloudWatchMetrics"]:
        namespace = directive["Namespace"]
        assert isinstance(namespace, str) and namespace
        dimension_sets = directive["Dimensions"]
        for dimension_set in dimension_sets:
            assert 0 < len(dimension_set) <= 30
            for dimension in dimension_set:
                assert isinstance(document[dimension], str), dimension  # a target member
        for metric in directive["Metrics"]:
            name, unit = metric["Name"], metric.get("Unit", "None")
            assert unit in UNITS, unit
            value = document[name]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), name
            metrics[name] = {
                "value": value,
                "unit": unit,
                "namespace": namespace,
                "dimensions": {d: document[d] for s in dimension_sets for d in s},
            }
    return metrics


def lines(text: str) -> list[dict[str, dict[str, Any]]]:
    """Every EMF line of a log, parsed."""
    return [parse(line) for line in text.splitlines() if line.startswith('{"_aws"')]
