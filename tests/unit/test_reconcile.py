"""Reconcile in process: what changes between its Scan and its repair is looked at again."""

from __future__ import annotations

import time

import pytest

from tests.conftest import NOW, Stack, job, put_job
from util.helpers import ARCHIVE_ID, NOTIFY_CLAIM, NOTIFY_CLAIM_EXPIRES, Annotations
from util.reconcile.reconcile import ARCHIVE_NOT_REQUESTED, ORPHAN_ARCHIVE, STALE_CLAIM, Reconciler

LONG_AGO = NOW - 10_000


def after_scan(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Make `change` happen once the Scan is over, before candidates are confirmed."""
    scan = Reconciler.scan_segment

    def scan_then_change(self: Reconciler, segment: int) -> int:
        seen = scan(self, segment)
        if segment == self.settings.scan_segments - 1:
            change()
        return seen

    monkeypatch.setattr(Reconciler, "scan_segment", scan_then_change)


def run(stack: Stack, repair: bool = True):
    stack.config.reconcile.scan_segments = 1
    return Reconciler(stack.config, stack.aws, repair).run()


def queue_depth(stack: Stack, queue: str) -> int:
    return int(
        stack.client("sqs").get_queue_attributes(
            QueueUrl=stack.queue_url(queue), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    )


def test_a_job_archived_after_the_scan_is_not_reported(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_job(stack, "j1", complete_time=LONG_AGO)
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    after_scan(monkeypatch, lambda: jobs.put({**job(stack, "j1"), ARCHIVE_ID: "just-now"}))
    report = run(stack)
    assert [f.kind for f in report.findings] == []
    assert queue_depth(stack, stack.config.archive.queue) == 0


def test_without_a_change_the_same_job_is_repaired(stack: Stack) -> None:
    put_job(stack, "j1", complete_time=LONG_AGO)
    report = run(stack)
    assert [(f.kind, f.action) for f in report.findings] == [
        (ARCHIVE_NOT_REQUESTED, "done: sent the archive message")
    ]
    assert queue_depth(stack, stack.config.archive.queue) == 1


def test_an_orphan_named_after_the_listing_is_kept(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.config.gas.archive_backend = "s3"
    stack.config.reconcile.orphan_age_seconds = 0
    key = f"{stack.config.gas.archive_prefix}j1/0a"
    stack.client("s3").put_object(Bucket=stack.config.gas.archive_bucket, Key=key, Body=b"x")
    put_job(stack, "j1", user_id="u-bob", complete_time=LONG_AGO)
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    # archive records it after the Scan saw the job without it
    after_scan(monkeypatch, lambda: jobs.put({**job(stack, "j1"), ARCHIVE_ID: key}))
    report = run(stack)
    assert ORPHAN_ARCHIVE not in [f.kind for f in report.findings]
    assert stack.client("s3").head_object(Bucket=stack.config.gas.archive_bucket, Key=key)


def test_a_claim_taken_again_after_the_scan_is_not_cleared(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_job(
        stack,
        "j1",
        user_id="u-bob",
        complete_time=LONG_AGO,
        **{NOTIFY_CLAIM: "dead", NOTIFY_CLAIM_EXPIRES: int(NOW) - 5},
    )
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    # a redelivered notify message takes the lapsed claim over
    after_scan(
        monkeypatch,
        lambda: jobs.put(
            {
                **job(stack, "j1"),
                NOTIFY_CLAIM: "alive",
                NOTIFY_CLAIM_EXPIRES: int(time.time()) + 120,
            }
        ),
    )
    report = run(stack)
    assert STALE_CLAIM not in [f.kind for f in report.findings]
    assert job(stack, "j1")[NOTIFY_CLAIM] == "alive"
