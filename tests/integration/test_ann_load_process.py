"""`util/ann_load.py` as a real process, loading the simulated annotator on the local stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server, wait_for

ANN_LOAD = [sys.executable, str(ROOT / "util" / "ann_load.py")]


@pytest.fixture
def annotator(server: Server, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """The simulated annotator fleet as its own process: 5 at once, 0.2 s a job."""
    process = subprocess.Popen(
        [sys.executable, "-m", "localaws", "annotator", "--concurrency", "5", "--seconds", "0.2"],
        cwd=ROOT,
        env={**os.environ, "GAS_WORKER_WAIT_SECONDS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "annotator.log", "w"),
    )
    # Running, its signal handlers set: a SIGTERM before then ends it as signals do (-15)
    wait_for(
        lambda: "consuming" in (tmp_path / "annotator.log").read_text(),
        timeout=60,
        what="the annotator fleet consuming",
    )
    yield process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, (tmp_path / "annotator.log").read_text()


def temporary_queues(server: Server) -> list[str]:
    return server.client("sqs").list_queues(QueueNamePrefix="ann-load-").get("QueueUrls", [])


def results_subscriptions(server: Server) -> list[str]:
    topic = server.aws.topic_arn(server.config.gas.job_results_topic)
    return [
        s["Endpoint"].rpartition(":")[2]
        for s in server.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    ]


def synthetic_items(server: Server) -> list[dict]:
    return server.client("dynamodb").scan(
        TableName=server.config.gas.annotations_table,
        FilterExpression="synthetic = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    )["Items"]


def synthetic_objects(server: Server) -> list[str]:
    s3, gas = server.client("s3"), server.config.gas
    return [
        o["Key"]
        for bucket in (gas.inputs_bucket, gas.results_bucket)
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="ann_load/").get("Contents", [])
    ]


def test_a_small_load_completes_and_cleanup_leaves_nothing(
    server: Server, annotator: subprocess.Popen, tmp_path: Path
) -> None:
    # Given the local stack with the simulated annotator running
    out = tmp_path / "out"
    # When ann_load submits 5 jobs/s for 3 s
    run = subprocess.run(
        [*ANN_LOAD, "--rate", "5", "--duration", "3", "--drain", "30", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    # Then it said what it was about to load, and every job completed
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        f"loading account 123456789012 at {server.env['AWS_ENDPOINT_URL']}"
        in run.stdout.splitlines()[0]
    )
    assert "target 5 jobs/s, ramp 0 s: 15 jobs over 3 s" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    jobs = summary["jobs"]
    assert (jobs["scheduled"], jobs["submitted"], jobs["completed"]) == (15, 15, 15), summary
    assert jobs["send_errors"] == jobs["never_completed"] == jobs["failed"] == 0
    # And its figures are those of 15 jobs, each at least the annotator's 0.2 s end to end
    # (how well it keeps time depends on the machine: bench/ann_load_rate.py measures that)
    assert summary["target_rate"] == 5.0 and 0 < summary["achieved_rate"] <= 5.01
    assert summary["send_lag_ms"]["count"] == summary["submit_latency_ms"]["count"] == 15
    e2e = summary["end_to_end_ms"]
    assert e2e["count"] == 15 and 200 <= e2e["p50"] <= e2e["p90"] <= e2e["p99"] <= e2e["max"]
    # And the backlog was sampled at the start, every 5 s after, and as the run ended
    assert summary["backlog"]["max"] is not None and summary["backlog"]["every_s"] == 5
    times = [sample["t"] for sample in summary["samples"]]
    assert times[0] == 0 and all(t % 5 == 0 for t in times[:-1]) and times[-1] >= 3, times
    # And its own cost: CPU and AWS requests per job, by operation (an input upload each)
    requests = summary["aws_requests"]
    assert summary["cpu_ms_per_job"] > 0 and requests["by_operation"]["PutObject"] == 15
    assert requests["per_job"] == pytest.approx(
        sum(requests["by_operation"].values()) / 15, abs=1e-3
    )
    records = [json.loads(line) for line in (out / "jobs.jsonl").read_text().splitlines()]
    assert len(records) == 15 and {r["status"] for r in records} == {"COMPLETED"}
    assert (out / "report.html").read_text().count("<svg") == 4
    # And its temporary queue is gone with its subscription
    assert temporary_queues(server) == []
    assert results_subscriptions(server) == [server.config.notify.queue]
    assert len(synthetic_items(server)) == 15 and len(synthetic_objects(server)) == 45

    # When --cleanup runs alone
    cleanup = subprocess.run(
        [*ANN_LOAD, "--cleanup"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    # Then no synthetic item or object is left
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert "ann_load: cleanup: removed 15 jobs, 45 objects, 0 archives, 0 queues" in (
        cleanup.stdout.splitlines()
    )
    assert synthetic_items(server) == [] and synthetic_objects(server) == []


def test_an_interrupted_run_reports_what_it_saw_and_removes_its_queue(
    server: Server, annotator: subprocess.Popen, tmp_path: Path
) -> None:
    # Given a run meant to last a minute
    out = tmp_path / "out"
    started = time.monotonic()
    run = subprocess.Popen(
        [*ANN_LOAD, "--rate", "5", "--duration", "60", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: temporary_queues(server), timeout=30, what="the temporary queue")
    wait_for(lambda: synthetic_items(server), timeout=30, what="a first job")
    # When it is interrupted (Ctrl-C)
    run.send_signal(signal.SIGINT)
    ran = time.monotonic() - started  # at most: the process started after `started`
    stdout, stderr = run.communicate(timeout=60)
    # Then it exits 130 with a report of the jobs sent so far, and leaves no queue behind
    assert run.returncode == 130, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert 0 < summary["jobs"]["sent"] < summary["jobs"]["scheduled"] == 300
    # And its rate is over the seconds it ran, not the 60 planned, and it had no drain
    assert summary["achieved_rate"] >= round(summary["jobs"]["submitted"] / ran, 3)
    assert summary["drain_s"] is None and "drain" not in stdout
    assert temporary_queues(server) == []
    assert results_subscriptions(server) == [server.config.notify.queue]
