"""util.status as a real process against the local stack server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT, Server, job, put_job, run_once, set_role
from util.schema import ARCHIVE_ID


def status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "util.status", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def send(server: Server, queue: str, body: str) -> None:
    server.client("sqs").send_message(QueueUrl=server.queue_url(queue), MessageBody=body)


def test_status_shows_queues_dead_letters_retrievals_and_the_last_reconcile(
    server: Server, tmp_path
) -> None:
    config = server.config
    # Given a result archived, then a retrieval started for it (nobody thaws it yet)
    put_job(server, "j1")
    send(server, config.archive.queue, json.dumps({"job_id": "j1", "user_id": "u-alice"}))
    send(server, config.archive.queue, "{not json")  # and a poison message, dead-lettered
    run_once("archive", tmp_path, archive_grace_seconds="0")
    assert ARCHIVE_ID in job(server, "j1")
    set_role(server, "u-alice", "premium_user")
    send(server, config.restore.queue, json.dumps({"user_id": "u-alice"}))
    run_once("restore", tmp_path)
    # And a notice waiting on the notify queue, and a reconcile pass's report
    send(server, config.notify.queue, json.dumps({"job_id": "j1", "user_id": "u-alice"}))
    assert (
        subprocess.run(
            [sys.executable, "-m", "util.reconcile"], cwd=ROOT, capture_output=True, timeout=60
        ).returncode
        == 0
    )
    # When an operator looks, twice
    first = status("--format", "json")
    assert first.returncode == 0, first.stderr
    shown = json.loads(first.stdout)
    # Then each queue's figures are there; oldest ages are unknown (no CloudWatch datapoints)
    queues = shown["queues"]
    assert queues["notify"]["visible"] == 1 and queues["archive"]["visible"] == 0
    assert all(q["oldest_seconds"] is None for q in queues.values())
    # And the dead letter with its reason, left where it was
    assert queues["archive"]["dead_letters"] == 1
    [peeked] = queues["archive"]["latest_reasons"]
    assert peeked["reason"].startswith("body is not JSON")
    again = json.loads(status("--format", "json").stdout)
    assert again["queues"]["archive"]["latest_reasons"][0]["reason"] == peeked["reason"]
    # And the retrieval in progress, and the last reconcile pass
    assert [r["job_id"] for r in shown["retrievals"]] == ["j1"]
    assert shown["retrievals"][0]["tier"] == "Expedited"
    assert shown["reconcile"]["repair"] is False and "counts" in shown["reconcile"]
    # And the text screen says the same
    text = status().stdout
    assert "archive" in text and "body is not JSON" in text and "j1" in text
    assert "last reconcile (dry run)" in text


def test_status_without_a_reconcile_pass_says_so(server: Server) -> None:
    shown = status()
    assert shown.returncode == 0, shown.stderr
    assert "reconcile: no pass has left a report" in shown.stdout
