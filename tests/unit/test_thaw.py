"""Every branch of the thaw handler, against moto in process with the Glacier emulation."""

from __future__ import annotations

import json

import pytest

from tests.conftest import (NOW, Stack, archive_job, job, message, result_bytes, result_exists,
                            set_role, vault_archive_count, wait_for)
from util.glacier import MIB
from util.helpers import (ARCHIVE_ID, RESTORE_JOB_ID, RESTORE_TIER, THAW_JOB_ID, Annotations,
                          InvalidMessage, decode_body)
from util.local import glacier as glacier_emulation
from util.restore.restore import Restorer
from util.thaw.thaw import Thawer
from util.worker import Message


def thawer(stack: Stack) -> Thawer:
    stack.config.thaw.part_size_mib = 8
    return Thawer(stack.config, stack.aws, clock=lambda: NOW)


def restore(stack: Stack, user_id: str = "u-alice") -> None:
    set_role(stack, user_id, "premium_user")
    outcome = Restorer(stack.config, stack.aws, clock=lambda: NOW)(message(user_id=user_id))
    assert outcome.action == "done", outcome


def notices(stack: Stack, count: int = 1) -> list[dict]:
    """The Glacier completion notices delivered to the thaw queue through SNS."""
    sqs = stack.client("sqs")
    url = stack.queue_url(stack.config.thaw.queue)
    received: list[dict] = []

    def receive() -> bool:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            received.append(decode_body(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(received) >= count

    wait_for(receive, timeout=30, what=f"{count} thaw notice(s)")
    return received


def notice_message(notice: dict) -> Message:
    return message(**notice)


@pytest.fixture
def fast_glacier(stack: Stack) -> None:
    glacier_emulation.configure(expedited_seconds=0, standard_seconds=0)


@pytest.fixture
def restored(stack: Stack, fast_glacier: None) -> tuple[bytes, dict]:
    """A 20 MiB result (three 8 MiB ranges) archived, then restored: its notice is in."""
    data = archive_job(stack, size=20 * MIB)
    restore(stack)
    [notice] = notices(stack)
    return data, notice


# -- the way back ------------------------------------------------------------------------------

def test_result_is_put_back_verified_and_the_archive_deleted(
        stack: Stack, restored: tuple[bytes, dict]) -> None:
    # Given a finished retrieval of a three-range result
    data, notice = restored
    glacier_job_id = job(stack)[RESTORE_JOB_ID]
    assert notice["JobId"] == glacier_job_id and notice["StatusCode"] == "Succeeded"
    # When its notice is handled
    outcome = thawer(stack)(notice_message(notice))
    # Then the bytes are back at the original key, the item says so, and the vault is empty
    assert (outcome.action, outcome.reason) == ("done", "thawed")
    assert result_bytes(stack) == data
    item = job(stack)
    assert ARCHIVE_ID not in item and RESTORE_JOB_ID not in item and RESTORE_TIER not in item
    assert item[THAW_JOB_ID] == glacier_job_id
    assert vault_archive_count(stack) == 0


def test_a_notice_delivered_again_after_success_changes_nothing(
        stack: Stack, restored: tuple[bytes, dict]) -> None:
    data, notice = restored
    handler = thawer(stack)
    handler(notice_message(notice))
    outcome = handler(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "already thawed")
    assert result_bytes(stack) == data and vault_archive_count(stack) == 0


def test_a_crash_before_the_archive_delete_is_finished_by_the_redelivery(
        stack: Stack, restored: tuple[bytes, dict]) -> None:
    _, notice = restored
    handler = thawer(stack)
    handler.backend.delete = lambda archive_id: (_ for _ in ()).throw(ConnectionError("crash"))
    with pytest.raises(ConnectionError):
        handler(notice_message(notice))
    assert vault_archive_count(stack) == 1
    outcome = thawer(stack)(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "already thawed")
    assert vault_archive_count(stack) == 0


def test_a_tree_hash_mismatch_commits_nothing(stack: Stack,
                                             restored: tuple[bytes, dict]) -> None:
    # Given Glacier output that arrives with one byte changed in the second range
    _, notice = restored
    handler = thawer(stack)
    glacier = handler.backend.vault.glacier
    read_output = glacier.get_job_output

    def corrupted(**kwargs):
        response = read_output(**kwargs)
        if kwargs["range"].startswith(f"bytes={8 * MIB}-"):
            body = bytearray(response["body"].read())
            body[100] ^= 1
            response["body"] = _Body(bytes(body))
        return response

    glacier.get_job_output = corrupted
    # When thaw handles the notice
    outcome = handler(notice_message(notice))
    # Then it is retried, and neither S3, the item nor the vault changed
    assert outcome.action == "retry" and outcome.reason.startswith("nothing committed")
    assert not result_exists(stack)
    assert stack.client("s3").list_multipart_uploads(
        Bucket=stack.config.gas.results_bucket).get("Uploads", []) == []
    assert ARCHIVE_ID in job(stack) and vault_archive_count(stack) == 1


def test_a_whole_archive_mismatch_commits_nothing(stack: Stack,
                                                 restored: tuple[bytes, dict]) -> None:
    # Given a Glacier job whose ranges are each intact but not the archive it names
    _, notice = restored
    handler = thawer(stack)
    describe = handler.backend.vault.describe_job

    def other_tree_hash(glacier_job_id):
        described = describe(glacier_job_id)
        return {**described, "SHA256TreeHash": "0" * 64}

    handler.backend.vault.describe_job = other_tree_hash
    outcome = handler(notice_message(notice))
    assert outcome.action == "retry" and "archive tree hash" in outcome.reason
    assert not result_exists(stack) and ARCHIVE_ID in job(stack)


def test_stopping_abandons_the_copy_and_commits_nothing(
        stack: Stack, restored: tuple[bytes, dict]) -> None:
    _, notice = restored
    msg = notice_message(notice)
    msg.cancelled.set()
    outcome = thawer(stack)(msg)
    assert outcome.action == "retry" and "abandoned" in outcome.reason
    assert not result_exists(stack) and ARCHIVE_ID in job(stack)


# -- failed retrievals -------------------------------------------------------------------------

def test_a_failed_retrieval_is_started_again_standard(stack: Stack, fast_glacier: None) -> None:
    # Given a retrieval that Glacier reports as failed
    data = archive_job(stack, size=1000)
    glacier_emulation.configure(fail_retrievals=1)
    restore(stack)
    [failed] = notices(stack)
    assert failed["StatusCode"] == "Failed"
    # When thaw handles the notice
    outcome = thawer(stack)(notice_message(failed))
    # Then a new Standard retrieval is recorded, and its notice brings the file back
    assert outcome.action == "done" and "started Standard" in outcome.reason
    item = job(stack)
    assert item[RESTORE_TIER] == "Standard" and item[RESTORE_JOB_ID] != failed["JobId"]
    [second] = notices(stack)
    assert second["JobId"] == item[RESTORE_JOB_ID]
    assert thawer(stack)(notice_message(second)).reason == "thawed"
    assert result_bytes(stack) == data


# -- notices that must not be trusted ----------------------------------------------------------

def test_a_notice_for_another_retrieval_is_stale(stack: Stack,
                                                 restored: tuple[bytes, dict]) -> None:
    _, notice = restored
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1", "SET #r = :r", "attribute_exists(#r)", {"#r": RESTORE_JOB_ID},
        {":r": "ANOTHERJOB"})
    with pytest.raises(InvalidMessage, match="stale notice: job j1 is being restored by "
                                             "retrieval ANOTHERJOB"):
        thawer(stack)(notice_message(notice))
    assert not result_exists(stack) and vault_archive_count(stack) == 1


def test_a_notice_whose_job_glacier_does_not_know_is_stale(
        stack: Stack, restored: tuple[bytes, dict]) -> None:
    _, notice = restored
    with pytest.raises(InvalidMessage, match="stale notice"):
        thawer(stack)(notice_message({**notice, "JobId": "NOSUCHJOB"}))


def test_a_notice_arriving_before_restore_recorded_its_job_is_deferred(
        stack: Stack, restored: tuple[bytes, dict]) -> None:
    _, notice = restored
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1", "SET #r = :r, #e = :e", "attribute_exists(#r)",
        {"#r": RESTORE_JOB_ID, "#e": "restore_expires"}, {":r": "claim:x", ":e": int(NOW) + 300})
    outcome = thawer(stack)(notice_message(notice))
    assert outcome.action == "defer" and outcome.delay == 10


@pytest.mark.parametrize("notice, reason", [
    ({"JobId": "J", "JobDescription": "not json"}, "names no job"),
    ({"JobId": "J", "JobDescription": json.dumps({"job": "j1"})}, "names no job"),
    ({"JobId": "J"}, "field 'JobDescription' missing"),
    ({"JobId": "J", "JobDescription": json.dumps({"job_id": "nope"})}, "unknown job nope"),
])
def test_malformed_or_unknown_notices_are_invalid(stack: Stack, notice: dict,
                                                  reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        thawer(stack)(notice_message(notice))


class _Body:
    """A stand-in for botocore's StreamingBody holding given bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, amount: int | None = None) -> bytes:
        data, self.data = (self.data, b"") if amount is None else \
            (self.data[:amount], self.data[amount:])
        return data
