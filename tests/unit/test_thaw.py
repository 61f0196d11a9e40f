"""Every branch of the thaw handler, against moto in process with the Glacier emulation."""

from __future__ import annotations

import io
import json

import pytest
from botocore.utils import calculate_tree_hash

from localaws import settings as local_settings
from tests.conftest import (
    NOW,
    Stack,
    archive_job,
    job,
    message,
    put_job,
    result_bytes,
    result_exists,
    set_role,
    vault_archive_count,
    wait_for,
)
from tests.pipeline import Pipeline
from util.archives.layout import MIB
from util.helpers import Annotations, InvalidMessage
from util.messages import Message, decode_body
from util.restore.restore import Restorer
from util.schema import (
    ARCHIVE_ID,
    RESTORE_EXPIRES,
    RESTORE_JOB_ID,
    RESTORE_TIER,
    RESULTS_BUCKET,
    THAW_JOB_ID,
)
from util.thaw.thaw import Thawer


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


def glacier_jobs(stack: Stack) -> list[dict]:
    return stack.client("glacier").list_jobs(vaultName=stack.config.gas.vault)["JobList"]


def notice_message(notice: dict) -> Message:
    return message(**notice)


@pytest.fixture
def fast_glacier(stack: Stack) -> None:
    local_settings.configure(expedited_seconds=0, standard_seconds=0)


@pytest.fixture
def restored(stack: Stack, fast_glacier: None) -> tuple[bytes, dict]:
    """A 20 MiB result (three 8 MiB ranges) archived, then restored: its notice is in."""
    data = archive_job(stack, size=20 * MIB)
    restore(stack)
    [notice] = notices(stack)
    return data, notice


# -- the way back ------------------------------------------------------------------------------


def test_result_is_put_back_verified_and_the_archive_deleted(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
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
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    data, notice = restored
    handler = thawer(stack)
    handler(notice_message(notice))
    outcome = handler(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "already thawed")
    assert result_bytes(stack) == data and vault_archive_count(stack) == 0


def test_a_notice_delivered_again_after_glacier_forgot_its_job_changes_nothing(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Glacier keeps a job a day; a very late copy of its notice names a job it no longer has
    data, notice = restored
    handler = thawer(stack)
    handler(notice_message(notice))
    handler.backend.vault.describe_job = lambda job_id: None
    outcome = handler(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "already thawed")
    assert result_bytes(stack) == data


def test_a_crash_before_the_archive_delete_is_finished_by_the_redelivery(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    _, notice = restored
    handler = thawer(stack)
    handler.backend.delete = lambda archive_id: (_ for _ in ()).throw(ConnectionError("crash"))
    with pytest.raises(ConnectionError):
        handler(notice_message(notice))
    assert vault_archive_count(stack) == 1
    outcome = thawer(stack)(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "already thawed")
    assert vault_archive_count(stack) == 0


def test_a_tree_hash_mismatch_commits_nothing(stack: Stack, restored: tuple[bytes, dict]) -> None:
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
    # Then that range is refused as it is read (not only the whole at the end), the message is
    # retried, and neither S3, the item nor the vault changed
    assert outcome.action == "retry"
    assert outcome.reason.startswith(
        f"nothing committed: range {8 * MIB}-{16 * MIB - 1}: tree hash "
    )
    assert not result_exists(stack)
    assert (
        stack.client("s3")
        .list_multipart_uploads(Bucket=stack.config.gas.results_bucket)
        .get("Uploads", [])
        == []
    )
    assert ARCHIVE_ID in job(stack) and vault_archive_count(stack) == 1


def test_a_whole_archive_mismatch_commits_nothing(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
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


def test_a_short_range_commits_nothing(stack: Stack, restored: tuple[bytes, dict]) -> None:
    # Given Glacier output whose second range arrives short, its tree hash that of what came
    _, notice = restored
    handler = thawer(stack)
    glacier = handler.backend.vault.glacier
    read_output = glacier.get_job_output

    def truncated(**kwargs):
        response = read_output(**kwargs)
        if kwargs["range"].startswith(f"bytes={8 * MIB}-"):
            body = response["body"].read()[:MIB]
            response["body"] = _Body(body)
            response["checksum"] = calculate_tree_hash(io.BytesIO(body))
        return response

    glacier.get_job_output = truncated
    outcome = handler(notice_message(notice))
    # Then the short range itself is refused, and nothing is committed
    assert outcome.action == "retry"
    assert outcome.reason == (f"nothing committed: range {8 * MIB}-{16 * MIB - 1}: got {MIB} bytes")
    assert not result_exists(stack) and ARCHIVE_ID in job(stack)
    assert vault_archive_count(stack) == 1


def test_an_item_whose_result_is_outside_the_results_bucket_is_invalid(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Given an item tampered with after the restore: its result now points at another bucket
    _, notice = restored
    stack.client("s3").create_bucket(Bucket="elsewhere")
    Annotations(stack.aws, stack.config.gas.annotations_table).put(
        {**job(stack), RESULTS_BUCKET: "elsewhere"}
    )
    # When its notice is handled
    with pytest.raises(InvalidMessage, match="not in the results bucket gas-results"):
        thawer(stack)(notice_message(notice))
    # Then nothing was written there, and the archive is kept
    assert stack.client("s3").list_objects_v2(Bucket="elsewhere").get("KeyCount", 0) == 0
    assert ARCHIVE_ID in job(stack) and vault_archive_count(stack) == 1


def test_stopping_abandons_the_copy_and_commits_nothing(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
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
    local_settings.configure(fail_retrievals=1)
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


def test_a_failed_retrieval_is_not_restarted_over_one_another_worker_just_recorded(
    stack: Stack, fast_glacier: None
) -> None:
    # Given a failed retrieval's notice, and another worker recording a new retrieval of the
    # job just after thaw read the item
    archive_job(stack, size=1000)
    local_settings.configure(fail_retrievals=1)
    restore(stack)
    [failed] = notices(stack)
    handler = thawer(stack)
    clear = handler.retrievals.clear

    def another_worker_records_first(job_id: str, retrieval_id: str) -> None:
        Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
            job_id,
            "SET #j = :j, #e = :e",
            "attribute_exists(#j)",
            {"#j": RESTORE_JOB_ID, "#e": RESTORE_EXPIRES},
            {":j": "R2", ":e": int(NOW) + 3600},
        )
        clear(job_id, retrieval_id)

    handler.retrievals.clear = another_worker_records_first
    jobs_before = len(glacier_jobs(stack))
    # When thaw handles the failed notice
    outcome = handler(notice_message(failed))
    # Then only the failed retrieval would have been forgotten: the live one stays, and no
    # third retrieval is started
    assert outcome.action == "done" and "in progress" in outcome.reason, outcome
    assert job(stack)[RESTORE_JOB_ID] == "R2"
    assert len(glacier_jobs(stack)) == jobs_before


def failed_notice_while(stack: Stack, restore_job_id: str, expires: int) -> dict:
    """A failed retrieval's notice, the item then recording `restore_job_id` until `expires`."""
    archive_job(stack, size=1000)
    local_settings.configure(fail_retrievals=1)
    restore(stack)
    [failed] = notices(stack)
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1",
        "SET #j = :j, #e = :e",
        "attribute_exists(#j)",
        {"#j": RESTORE_JOB_ID, "#e": RESTORE_EXPIRES},
        {":j": restore_job_id, ":e": expires},
    )
    return failed


def test_a_failed_retrieval_leaves_the_one_recorded_since_alone(
    stack: Stack, fast_glacier: None
) -> None:
    failed = failed_notice_while(stack, "R2", int(NOW) - 1)  # lapsed, even: not ours to redo
    jobs_before = len(glacier_jobs(stack))
    outcome = thawer(stack)(notice_message(failed))
    assert outcome.action == "done" and outcome.reason.endswith(
        "retrieval R2 is the one under way"
    ), outcome
    assert job(stack)[RESTORE_JOB_ID] == "R2" and len(glacier_jobs(stack)) == jobs_before


def test_a_restart_another_worker_is_claiming_is_looked_at_again_later(
    stack: Stack, fast_glacier: None
) -> None:
    # Given a failed retrieval's notice, and another worker claiming the job's restart just
    # after thaw forgot the failed retrieval
    archive_job(stack, size=1000)
    local_settings.configure(fail_retrievals=1)
    restore(stack)
    [failed] = notices(stack)
    handler = thawer(stack)
    handler.retrievals.claim_wait_seconds = 0
    clear = handler.retrievals.clear

    def another_worker_claims(job_id: str, retrieval_id: str) -> None:
        clear(job_id, retrieval_id)
        Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
            job_id,
            "SET #j = :j, #e = :e",
            "attribute_exists(#a)",
            {"#a": ARCHIVE_ID, "#j": RESTORE_JOB_ID, "#e": RESTORE_EXPIRES},
            {":j": "claim:other", ":e": int(NOW) + 120},
        )

    handler.retrievals.clear = another_worker_claims
    # When thaw handles the notice
    outcome = handler(notice_message(failed))
    # Then it comes back once that claim lapses, rather than trusting it to succeed
    assert outcome.action == "defer" and "restart claimed elsewhere" in outcome.reason
    assert outcome.delay == 121


def test_a_result_another_retrieval_thawed_meanwhile_has_its_archive_deleted(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Given another retrieval of the same archive that brought the result back and recorded
    # it while ours was copying, then stopped before deleting the archive
    data, notice = restored
    handler = thawer(stack)
    copy_back = handler.backend.copy_back

    def another_retrieval_records_first(*args) -> None:
        copy_back(*args)
        handler.retrievals.finish("j1", job(stack)[ARCHIVE_ID], "OTHER-RETRIEVAL")

    handler.backend.copy_back = another_retrieval_records_first
    outcome = handler(notice_message(notice))
    # Then ours deletes the archive both brought back: no orphan is left
    assert (outcome.action, outcome.reason) == ("done", "thawed by another retrieval")
    assert result_bytes(stack) == data and vault_archive_count(stack) == 0


def test_a_result_archived_anew_while_it_was_copied_back_keeps_its_new_archive(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Given an item that names another archive by the time the copy back is done
    _, notice = restored
    handler = thawer(stack)
    copy_back = handler.backend.copy_back

    def archived_anew_meanwhile(*args) -> None:
        copy_back(*args)
        Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
            "j1", "SET #a = :a", "attribute_exists(#a)", {"#a": ARCHIVE_ID}, {":a": "NEWARCHIVE"}
        )

    handler.backend.copy_back = archived_anew_meanwhile
    outcome = handler(notice_message(notice))
    # Then thaw records nothing over it and deletes no archive
    assert (outcome.action, outcome.reason) == (
        "done",
        "superseded: job j1 now names another archive",
    )
    assert job(stack)[ARCHIVE_ID] == "NEWARCHIVE" and vault_archive_count(stack) == 1


# -- notices that must not be trusted ----------------------------------------------------------


def test_a_succeeded_retrieval_the_item_does_not_record_still_brings_the_result_back(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Any retrieval of the archive the item names brings the same verified bytes: one whose
    # start was never recorded (its answer was lost) must not strand the result.
    data, notice = restored
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1", "SET #r = :r", "attribute_exists(#r)", {"#r": RESTORE_JOB_ID}, {":r": "ANOTHERJOB"}
    )
    outcome = thawer(stack)(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "thawed")
    assert result_bytes(stack) == data and vault_archive_count(stack) == 0


def test_a_notice_of_a_retrieval_of_another_archive_is_stale_and_dropped(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # A duplicate after the thaw, or a retrieval of an archive the item no longer names:
    # nothing to do, and no reason for an operator to look at it in the dead-letter queue.
    _, notice = restored
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1", "SET #a = :a", "attribute_exists(#a)", {"#a": ARCHIVE_ID}, {":a": "OTHERARCHIVE"}
    )
    outcome = thawer(stack)(notice_message(notice))
    assert outcome.action == "done" and outcome.reason.startswith("stale notice")
    assert not result_exists(stack) and vault_archive_count(stack) == 1


def test_a_notice_whose_job_glacier_does_not_know_is_invalid(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    _, notice = restored
    with pytest.raises(InvalidMessage, match="Glacier has no such job: NOSUCHJOB"):
        thawer(stack)(notice_message({**notice, "JobId": "NOSUCHJOB"}))


def test_a_notice_whose_recorded_retrieval_glacier_has_forgotten_restarts_it(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Given a notice that comes too late: Glacier keeps a job 24 hours after it completes,
    # then knows it no more (its output is gone), though the item still records it
    data, notice = restored
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1", "SET #r = :r", "attribute_exists(#r)", {"#r": RESTORE_JOB_ID}, {":r": "EXPIREDJOB"}
    )
    # When thaw handles it
    outcome = thawer(stack)(notice_message({**notice, "JobId": "EXPIREDJOB"}))
    # Then a new retrieval is started in its place, as restore would start it
    assert (outcome.action, outcome.reason) == (
        "done",
        "retrieval EXPIREDJOB is gone (Glacier has no such job); started Expedited",
    )
    assert job(stack)[RESTORE_JOB_ID] not in (None, "EXPIREDJOB")
    # And its notice brings the result back
    new_notice = next(n for n in notices(stack) if n["JobId"] == job(stack)[RESTORE_JOB_ID])
    assert thawer(stack)(notice_message(new_notice)).reason == "thawed"
    assert result_bytes(stack) == data


def test_a_notice_handled_after_glacier_forgot_its_job_restarts_the_retrieval(
    stack: Stack, fast_glacier: None
) -> None:
    # Given a retrieval whose notice waits while Glacier keeps its job for its day (here 1 s)
    data = archive_job(stack, size=3 * MIB)
    local_settings.configure(day_seconds=1)
    restore(stack)
    [notice] = notices(stack)
    glacier = stack.client("glacier")

    def forgotten() -> bool:
        try:
            glacier.describe_job(vaultName=stack.config.gas.vault, jobId=notice["JobId"])
        except glacier.exceptions.ResourceNotFoundException:
            return True
        return False

    wait_for(forgotten, timeout=10, what="Glacier to forget the job")
    # When thaw handles the notice, late, it starts the retrieval again
    outcome = thawer(stack)(notice_message(notice))
    assert outcome.action == "done" and outcome.reason.endswith("started Expedited"), outcome
    # And the new retrieval's notice brings the result back
    local_settings.configure(day_seconds=86400)
    [again] = notices(stack)
    assert thawer(stack)(notice_message(again)).reason == "thawed"
    assert result_bytes(stack) == data


def test_a_notice_arriving_before_restore_recorded_its_job_is_thawed(
    stack: Stack, restored: tuple[bytes, dict]
) -> None:
    # Restore holds a claim while it records the retrieval; thaw need not wait for it.
    data, notice = restored
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        "j1",
        "SET #r = :r, #e = :e",
        "attribute_exists(#r)",
        {"#r": RESTORE_JOB_ID, "#e": "restore_expires"},
        {":r": "claim:x", ":e": int(NOW) + 300},
    )
    outcome = thawer(stack)(notice_message(notice))
    assert (outcome.action, outcome.reason) == ("done", "thawed")
    assert result_bytes(stack) == data


@pytest.mark.parametrize(
    "notice, reason",
    [
        ({"JobId": "J", "JobDescription": "not json"}, "names no job"),
        ({"JobId": "J", "JobDescription": json.dumps({"job": "j1"})}, "names no job"),
        ({"JobId": "J"}, "field 'JobDescription' missing"),
        ({"JobId": "J", "JobDescription": json.dumps({"job_id": "nope"})}, "unknown job nope"),
    ],
)
def test_malformed_or_unknown_notices_are_invalid(stack: Stack, notice: dict, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        thawer(stack)(notice_message(notice))


class _Body:
    """A stand-in for botocore's StreamingBody holding given bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, amount: int | None = None) -> bytes:
        data, self.data = (
            (self.data, b"") if amount is None else (self.data[:amount], self.data[amount:])
        )
        return data


# -- the copy put back can be told from the original --------------------------------------------


def upload_in_parts(stack: Stack, data: bytes, part_size: int) -> str:
    """Replace j1's result with `data` uploaded in parts of `part_size`; its ETag."""
    s3, item = stack.client("s3"), job(stack)
    where = {"Bucket": item["s3_results_bucket"], "Key": item["s3_key_result_file"]}
    upload_id = s3.create_multipart_upload(**where)["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                **where, UploadId=upload_id, PartNumber=n, Body=data[first : first + part_size]
            )["ETag"],
        }
        for n, first in enumerate(range(0, len(data), part_size), 1)
    ]
    return s3.complete_multipart_upload(
        **where, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )["ETag"]


@pytest.mark.parametrize(
    "size, original_part_size",
    [
        (1, None),  # uploaded in one request: thaw's copy is multipart
        (20 * MIB, 8 * MIB),  # three parts, as thaw's 8 MiB parts would make: thaw uses 16 MiB
        (3 * MIB, 8 * MIB),  # one part: thaw's copy goes up in one request
    ],
    ids=["single", "same-parts", "one-part"],
)
def test_the_copy_put_back_never_has_the_original_etag(
    stack: Stack, fast_glacier: None, size: int, original_part_size: int | None
) -> None:
    data = put_job(stack, size=size)
    if original_part_size is not None:
        upload_in_parts(stack, data, original_part_size)
    item = job(stack)
    where = {"Bucket": item["s3_results_bucket"], "Key": item["s3_key_result_file"]}
    original = stack.client("s3").head_object(**where)["ETag"]
    stack.config.archive.part_size_mib = 4
    Pipeline(stack).handler("archive")(message(job_id="j1", user_id="u-alice"))
    restore(stack)
    thawer(stack)(notice_message(notices(stack)[0]))
    assert result_bytes(stack) == data
    assert stack.client("s3").head_object(**where)["ETag"] != original
