"""EMF metrics from the real workers and reconcile, read from their logs as the CloudWatch
agent would read them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests import emf
from tests.conftest import ROOT, Server, UtilityProcess, job, put_job, run_once, set_role, wait_for
from util.schema import ARCHIVE_ID


def send(server: Server, queue: str, body: str) -> None:
    server.client("sqs").send_message(QueueUrl=server.queue_url(queue), MessageBody=body)


def by_outcome(log: str) -> dict[str, dict]:
    """Each EMF line of a worker's log, by its Outcome dimension (the last of each)."""
    return {line["Messages"]["dimensions"]["Outcome"]: line for line in emf.lines(log)}


def test_workers_and_reconcile_emit_emf(server: Server, tmp_path) -> None:
    config = server.config
    # Given a 1000-byte result to archive and a poison message
    put_job(server, "j1", size=1000)
    send(server, config.archive.queue, json.dumps({"job_id": "j1", "user_id": "u-alice"}))
    send(server, config.archive.queue, "{not json")
    # When archive, then restore and thaw, run with EMF on
    archive = run_once("archive", tmp_path, archive_grace_seconds="0", metrics_emf="stderr")
    set_role(server, "u-alice", "premium_user")
    send(server, config.restore.queue, json.dumps({"user_id": "u-alice"}))
    restore = run_once("restore", tmp_path, metrics_emf="stderr")
    thaw = UtilityProcess("thaw", tmp_path / "thaw.log", metrics_emf="stderr")
    wait_for(lambda: ARCHIVE_ID not in job(server, "j1"), timeout=60, what="j1 thawed")
    thaw.stop()
    # Then each message made one EMF line: bytes archived, the dead letter, the retrieval
    # by tier, the bytes thawed
    archived = by_outcome(archive.log)
    assert archived["done"]["BytesArchived"] == {
        "value": 1000,
        "unit": "Bytes",
        "namespace": "GAS",
        "dimensions": {"Utility": "archive", "Outcome": "done"},
    }
    assert archived["done"]["DeadLettered"]["value"] == 0
    assert archived["invalid"]["DeadLettered"]["value"] == 1
    assert archived["invalid"]["HandlerDuration"]["unit"] == "Milliseconds"
    # (restore starts the retrieval and, the message being a moment old, defers it to look
    # again once the index has settled: the line of that first look counts it)
    assert by_outcome(restore.log)["defer"]["RetrievalsExpedited"]["value"] == 1
    assert by_outcome(thaw.log)["done"]["BytesThawed"]["value"] == 1000
    # And a reconcile pass emits its findings by kind
    passed = subprocess.run(
        [sys.executable, "-m", "util.reconcile"],
        cwd=ROOT,
        env={**os.environ, "GAS_METRICS_EMF": "stderr"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    [line] = emf.lines(passed.stderr)
    assert line["FindingsLost"] == {
        "value": 0,
        "unit": "Count",
        "namespace": "GAS",
        "dimensions": {"Utility": "reconcile"},
    }
