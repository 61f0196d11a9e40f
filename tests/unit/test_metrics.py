"""util/metrics.py: EMF lines as CloudWatch reads them, and nothing when metrics are off."""

from __future__ import annotations

import pytest

from tests import emf
from util import metrics
from util.reconcile.report import KINDS
from util.util_config import load


def config(**environ: str):
    return load(None, environ={f"GAS_METRICS_{k.upper()}": v for k, v in environ.items()})


def test_metrics_are_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.emit_message(config(), "archive", "done", 0.5, {"BytesArchived": 10})
    assert capsys.readouterr() == ("", "")


def test_a_message_line_is_emf_with_utility_and_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.emit_message(
        config(emf="stdout", namespace="GAS-test"),
        "archive",
        "invalid",
        0.25,
        {"BytesArchived": 1000, "RetrievalsStandard": 2},
    )
    out, err = capsys.readouterr()
    assert err == ""
    [line] = emf.lines(out)
    assert {name: (m["value"], m["unit"]) for name, m in line.items()} == {
        "Messages": (1, "Count"),
        "HandlerDuration": (250.0, "Milliseconds"),
        "DeadLettered": (1, "Count"),
        "BytesArchived": (1000, "Bytes"),
        "RetrievalsStandard": (2, "Count"),
    }
    assert {m["namespace"] for m in line.values()} == {"GAS-test"}
    assert line["Messages"]["dimensions"] == {"Utility": "archive", "Outcome": "invalid"}


def test_reconcile_emits_every_kind_zeros_included(capsys: pytest.CaptureFixture[str]) -> None:
    metrics.emit_findings(config(emf="stderr"), {"lost": 2}, KINDS)
    [line] = emf.lines(capsys.readouterr().err)
    assert line["FindingsLost"]["value"] == 2 and line["FindingsOrphanArchive"]["value"] == 0
    assert len(line) == len(KINDS)
    assert line["FindingsLost"]["dimensions"] == {"Utility": "reconcile"}
