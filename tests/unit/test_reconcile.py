"""Reconcile in process: what changes between its Scan and its repair is looked at again; what
changed since its listings were taken is not taken for an orphan; a restore message is given
its grace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from localaws import settings as local_settings
from tests.conftest import (
    NOW,
    Stack,
    archive_job,
    job,
    message,
    put_job,
    set_role,
    vault_archive_count,
    wait_for,
)
from util.helpers import Annotations
from util.messages import Message, decode_body
from util.reconcile.reconcile import Reconciler
from util.reconcile.report import (
    ARCHIVE_NOT_REQUESTED,
    EXIT_FINDINGS,
    EXIT_OK,
    ORPHAN_ARCHIVE,
    RESTORE_NOT_REQUESTED,
    STALE_CLAIM,
)
from util.restore.restore import Restorer
from util.schema import ARCHIVE_ID, NOTIFY_CLAIM, NOTIFY_CLAIM_EXPIRES, THAW_TIME
from util.thaw.thaw import Thawer

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


def run(stack: Stack, repair: bool = True, clock: Callable[[], float] = time.time):
    stack.config.reconcile.scan_segments = 1
    return Reconciler(stack.config, stack.aws, repair, clock).run()


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


def test_a_claim_taken_again_between_the_look_and_the_clear_is_kept(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a lapsed e-mail claim the pass has just read as stale
    put_job(
        stack,
        "j1",
        user_id="u-bob",
        complete_time=LONG_AGO,
        **{NOTIFY_CLAIM: "dead", NOTIFY_CLAIM_EXPIRES: int(NOW) - 5},
    )
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    look = Reconciler.stale_claim

    def retaken_meanwhile(self: Reconciler, item: dict) -> object:
        # a redelivered notify message takes the lapsed claim over, right then
        jobs.put({**item, NOTIFY_CLAIM: "alive", NOTIFY_CLAIM_EXPIRES: int(time.time()) + 120})
        return look(self, item)

    monkeypatch.setattr(Reconciler, "stale_claim", retaken_meanwhile)
    # When the pass clears the claim it saw
    run(stack)
    # Then the new holder keeps its claim: only that very lease is cleared
    assert job(stack, "j1")[NOTIFY_CLAIM] == "alive"
    assert NOTIFY_CLAIM_EXPIRES in job(stack, "j1")


# -- the vault's inventory: a snapshot, which still lists what was deleted since --------------


@pytest.fixture
def vault(stack: Stack) -> None:
    """Inventories and retrievals that finish at once; orphans of any age."""
    local_settings.configure(expedited_seconds=0, standard_seconds=0)
    stack.config.reconcile.orphan_age_seconds = 0


def vault_archive(stack: Stack, job_id: str) -> str:
    """An archive described as archive describes a job's own, which no job names."""
    return stack.client("glacier").upload_archive(
        vaultName=stack.config.gas.vault,
        body=b"archive bytes",
        archiveDescription=json.dumps({"job_id": job_id, "user_id": "u-carol"}),
    )["archiveId"]


def thaw(stack: Stack, user_id: str, count: int) -> None:
    """The user upgrades; restore starts the retrievals, and thaw (its clock the real one)
    puts the `count` results back and deletes their archives."""
    set_role(stack, user_id, "premium_user")
    assert Restorer(stack.config, stack.aws)(message(user_id=user_id)).action == "done"
    sqs, url = stack.client("sqs"), stack.queue_url(stack.config.thaw.queue)
    thawer = Thawer(stack.config, stack.aws)
    thawed: list[str] = []

    def handle() -> bool:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            notice = decode_body(m["Body"])
            thawed.append(thawer(Message("m", "r", m["Body"], 1, {}, 0, 0, data=notice)).reason)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(thawed) >= count

    wait_for(handle, what=f"{count} thaw notices")
    assert thawed == ["thawed"] * count


def test_archives_thawed_since_the_inventory_are_no_orphans(stack: Stack, vault: None) -> None:
    # Given two of a user's results archived in the vault, and an archive no job names
    archive_job(stack, "j1", user_id="u-carol")
    archive_job(stack, "j2", user_id="u-carol")
    vault_archive(stack, "j-gone")
    # And an inventory taken then (the first pass starts it, and finds nothing)
    assert run(stack).findings == []
    # When the user upgrades and thaw brings both results back, deleting their archives
    thaw(stack, "u-carol", 2)
    assert vault_archive_count(stack) == 1
    assert all(THAW_TIME in job(stack, j) for j in ("j1", "j2"))
    # And a pass reads that inventory, which still lists them
    report = run(stack)
    # Then only the archive no job names is an orphan, found and deleted
    assert [(f.kind, f.job_id, f.action) for f in report.findings] == [
        (ORPHAN_ARCHIVE, "j-gone", "done: deleted")
    ], report
    assert report.counts() == {ORPHAN_ARCHIVE: 1}
    assert vault_archive_count(stack) == 0
    # And the pass says what became of the other two
    assert any("2 thawed" in note for note in report.notes), report.notes


@pytest.mark.parametrize(
    "slack, orphan", [(3600, False), (10, True)], ids=["within the slack", "past the slack"]
)
def test_an_archive_thaw_recorded_but_had_not_deleted_when_the_inventory_was_taken(
    stack: Stack, vault: None, slack: int, orphan: bool
) -> None:
    # Given a job whose result thaw has put back and recorded, its archive not yet deleted
    # (thaw deletes it right after, step 5; a worker frozen there, or retrying, takes longer)
    stack.config.reconcile.slack_seconds = slack
    archive_job(stack, "j1", user_id="u-carol")
    archive_id = job(stack, "j1")[ARCHIVE_ID]
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1",
        "REMOVE #a SET #t = :t",
        "attribute_exists(#a)",
        {"#a": ARCHIVE_ID, "#t": THAW_TIME},
        {":t": int(time.time()) - 30},
    )
    # And an inventory taken 30 s later, which lists it
    assert run(stack).findings == []
    # When thaw deletes it, and a pass reads that inventory
    stack.client("glacier").delete_archive(vaultName=stack.config.gas.vault, archiveId=archive_id)
    report = run(stack)
    # Then it is thaw's to delete, no orphan, as long as the slack allows for thaw's delete;
    # after that, a leftover (thaw's delete never came) to find
    assert [f.kind for f in report.findings] == ([ORPHAN_ARCHIVE] if orphan else []), report


def test_an_archive_its_maker_deleted_just_after_the_inventory_is_no_orphan(
    stack: Stack, vault: None
) -> None:
    # Given a job archived, and a second archive of it that a racing copy of the archive
    # message made, listed by an inventory taken then, and deleted by that copy right after
    # (its record lost to the first: the job names the first archive, nothing shows the second)
    stack.config.reconcile.orphan_age_seconds = 600
    archive_job(stack, "j1", user_id="u-carol")
    racing = vault_archive(stack, "j1")
    assert run(stack).findings == []  # starts the inventory
    stack.client("glacier").delete_archive(vaultName=stack.config.gas.vault, archiveId=racing)
    # When a pass reads that inventory an hour later (an inventory is up to a day old)
    report = run(stack, clock=lambda: time.time() + 3600)
    # Then the archive, younger than the orphan age when the inventory was taken, is left for
    # a later inventory to show
    assert report.findings == [], report


def test_an_orphan_a_pass_deleted_is_not_found_again_in_the_same_inventory(
    stack: Stack, vault: None
) -> None:
    # Given an archive no job names, listed by the inventory the first pass starts
    vault_archive(stack, "j-gone")
    assert run(stack).findings == []
    # And inventories that take their time from now on (AWS's take hours)
    local_settings.configure(standard_seconds=3600)
    # When a pass deletes it, and the next pass reads the same inventory (no newer one ready)
    first = run(stack)
    second = run(stack)
    # Then the second does not report (nor delete) it again
    assert [(f.kind, f.action) for f in first.findings] == [(ORPHAN_ARCHIVE, "done: deleted")]
    assert second.findings == [], second
    assert any("1 deleted by an earlier pass" in note for note in second.notes), second.notes


# -- a restore message is given time to arrive ----------------------------------------------


def premium_with_an_archive(stack: Stack) -> None:
    """A premium user's result archived, no retrieval recorded: the restore message lost."""
    archive_job(stack, "j1", user_id="u-carol")
    set_role(stack, "u-carol", "premium_user")


def restore_actions(report) -> list[str]:
    assert {f.kind for f in report.findings} == {RESTORE_NOT_REQUESTED}, report
    return [f.action for f in report.findings]


def later(stack: Stack) -> Callable[[], float]:
    """The clock of a pass run once the grace is over."""
    return lambda: time.time() + stack.config.reconcile.restore_grace_seconds + 1


def at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).isoformat(timespec="seconds")


def until(since: float, stack: Stack) -> str:
    return at(since + stack.config.reconcile.restore_grace_seconds)


def test_a_pass_within_the_grace_of_the_restore_message_it_sent_sends_no_other(
    stack: Stack,
) -> None:
    premium_with_an_archive(stack)
    # When two passes run in a row
    first, second = run(stack), run(stack)
    # Then the first sends the restore message, and the second waits for it to be handled
    assert restore_actions(first) == ["done: sent the restore message"]
    assert queue_depth(stack, stack.config.restore.queue) == 1
    sent = first.restores["u-carol"]["since"]
    assert restore_actions(second) == [
        f"waits until {until(sent, stack)}: a restore message was sent at {at(sent)}"
    ]
    # And neither leaves findings to repair
    assert first.exit_code() == second.exit_code() == EXIT_OK
    # When that message is lost (dead-lettered, say), a pass after the grace sends another
    stack.client("sqs").purge_queue(QueueUrl=stack.queue_url(stack.config.restore.queue))
    assert restore_actions(run(stack, clock=later(stack))) == ["done: sent the restore message"]
    assert queue_depth(stack, stack.config.restore.queue) == 1


def test_a_restore_message_waiting_in_the_queue_is_given_the_grace(stack: Stack) -> None:
    premium_with_an_archive(stack)
    # And a restore message in the queue, restore not at it yet (the web app's, perhaps)
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url(stack.config.restore.queue),
        MessageBody=json.dumps({"user_id": "u-carol"}),
    )
    # When a pass runs, it sends none, and says until when it waits
    report = run(stack)
    assert queue_depth(stack, stack.config.restore.queue) == 1
    [waits] = restore_actions(report)
    since = report.restores["u-carol"]["since"]
    assert waits == (
        f"waits until {until(since, stack)}: the restore queue held messages at {at(since)}, "
        "perhaps this user's"
    )
    assert report.exit_code() == EXIT_OK
    # When the grace is over and the user still has no retrieval, a pass sends one (what
    # waited was not this user's, or was lost)
    assert restore_actions(run(stack, clock=later(stack))) == ["done: sent the restore message"]
    assert queue_depth(stack, stack.config.restore.queue) == 2


def test_a_dry_run_holds_no_restore_message_back(stack: Stack) -> None:
    premium_with_an_archive(stack)
    dry = run(stack, repair=False)
    assert restore_actions(dry) == ["would send the restore message"]
    assert dry.exit_code() == EXIT_FINDINGS
    assert restore_actions(run(stack)) == ["done: sent the restore message"]
    assert queue_depth(stack, stack.config.restore.queue) == 1


def test_a_restore_message_that_failed_to_send_is_sent_by_the_next_pass(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    premium_with_an_archive(stack)
    # Given a pass whose restore message SQS refused
    monkeypatch.setattr(
        stack.client("sqs"),
        "send_message_batch",
        lambda **_: {
            "Successful": [],
            "Failed": [{"Id": "0", "SenderFault": False, "Code": "InternalError", "Message": "x"}],
        },
    )
    failed = run(stack)
    assert restore_actions(failed) == ["failed to send the restore message: x"]
    assert failed.exit_code() == EXIT_FINDINGS
    monkeypatch.undo()
    # When the next pass runs, it sends it
    assert restore_actions(run(stack)) == ["done: sent the restore message"]
    assert queue_depth(stack, stack.config.restore.queue) == 1
