"""The chaos test, small (tests/chaos.py; `make chaos` runs it with 200 jobs): a dozen jobs
archived, restored and thawed by real worker processes killed every ~2 s, through the faults
proxy, and every result must come back byte-identical with nothing left over."""

from __future__ import annotations

import pytest

from tests import chaos


@pytest.mark.parametrize("backend", chaos.BACKENDS)
def test_no_result_is_lost_whatever_happens(backend: str) -> None:
    # Given 12 jobs of 3 users (results from 0 bytes to multipart), faults on, kills every ~2 s
    # (a killed worker's messages back after 5 s, its retrieval claims lapsed after 10 s)
    settings = chaos.Settings(
        backends=(backend,),
        jobs=12,
        users=3,
        seed=7,
        kill_every=2.0,
        timeout=45.0,
        visibility_seconds=5,
        claim_seconds=10,
    )
    # When they are archived, the users upgrade, and they are restored and thawed
    [summary] = chaos.run(settings)
    # Then every check passed ...
    assert summary.ok, summary.line()
    # ... and the figures say so, one by one
    assert (summary.jobs, summary.empty) == (12, 1)
    assert summary.lost == [] and summary.missing_archive == []
    assert summary.identical == 12 and summary.not_identical == []
    assert summary.dead_letters == [] and summary.orphans == []
    assert summary.problems == []
    assert summary.archived_results == 11 and summary.retrievals >= 11
    # ... under the chaos asked for: workers were killed and faults injected
    assert summary.kills > 0
    assert summary.faults["error"] > 0 and summary.faults["reset"] + summary.faults["lost"] > 0
