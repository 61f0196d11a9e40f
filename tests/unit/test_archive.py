"""Every branch of the archive handler, against moto in process with the Glacier emulation."""

from __future__ import annotations

import io
import json
import os

import pytest
from botocore.utils import calculate_tree_hash

from localaws import settings as local_settings
from tests.conftest import (
    NOW,
    Killed,
    LostAnswers,
    Stack,
    archive_job,
    archived_bytes,
    job,
    message,
    put_job,
    result_bytes,
    result_exists,
    set_role,
    sets,
    vault_archive_count,
    vault_archive_description,
)
from tests.pipeline import Pipeline
from tests.scenarios import World, use_backend
from util.archive.archive import Archiver
from util.archives.layout import MIB
from util.archives.vault.glacier import combine_tree_hashes, part_size_for
from util.helpers import Annotations, InvalidMessage
from util.schema import ARCHIVE_ID, ARCHIVE_UPLOAD, RESULT_ETAG


def archiver(stack: Stack, part_size_mib: int = 1, clock: float = NOW) -> Archiver:
    stack.config.archive.part_size_mib = part_size_mib
    return Archiver(stack.config, stack.aws, clock=lambda: clock)


def etag(stack: Stack, job_id: str = "j1") -> str:
    item = job(stack, job_id)
    return stack.client("s3").head_object(
        Bucket=item["s3_results_bucket"], Key=item["s3_key_result_file"]
    )["ETag"]


def restore_requests(stack: Stack) -> list[dict]:
    messages = (
        stack.client("sqs")
        .receive_message(
            QueueUrl=stack.queue_url(stack.config.restore.queue),
            MaxNumberOfMessages=10,
        )
        .get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in messages]


# -- the happy paths -----------------------------------------------------------------------


def test_multipart_archive_is_byte_identical_then_s3_copy_deleted(stack: Stack) -> None:
    # Given a 3.5 MiB result and 1 MiB parts (four parts, the last one short)
    data = put_job(stack, size=3 * MIB + MIB // 2)
    # When the archive message is handled
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    # Then the vault holds exactly those bytes, the job records it, and S3 no longer has it
    assert (outcome.action, outcome.reason) == ("done", "archived")
    archive_id = job(stack)[ARCHIVE_ID]
    assert archived_bytes(stack, archive_id) == data
    assert not result_exists(stack)


def test_small_file_goes_up_in_one_request(stack: Stack) -> None:
    data = put_job(stack, size=10)
    assert archiver(stack)(message(job_id="j1", user_id="u-alice")).action == "done"
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == data
    assert (
        stack.client("glacier").list_multipart_uploads(vaultName=stack.config.gas.vault)[
            "UploadsList"
        ]
        == []
    )


def test_archive_description_names_the_job(stack: Stack) -> None:
    put_job(stack)
    archiver(stack)(message(job_id="j1", user_id="u-alice"))
    description = vault_archive_description(stack, job(stack)[ARCHIVE_ID])
    assert json.loads(description) == {"job_id": "j1", "user_id": "u-alice"}


# -- branches that archive nothing -----------------------------------------------------------


def test_premium_user_is_not_archived(stack: Stack) -> None:
    put_job(stack, job_id="jb", user_id="u-bob")
    handler = archiver(stack)
    uploads = []
    handler.backend.upload = lambda *args, **kwargs: uploads.append(args)
    outcome = handler(message(job_id="jb", user_id="u-bob"))
    # Nothing is even copied: the user's role is known before any transfer
    assert (outcome.action, outcome.reason) == ("done", "premium user: result stays in S3")
    assert uploads == []
    assert ARCHIVE_ID not in job(stack, "jb") and result_exists(stack, "jb")
    assert vault_archive_count(stack) == 0


def leave_unprocessed(handler: Archiver, table: str) -> None:
    """Make the handler's BatchGetItems answer as DynamoDB does when it throttles `table`:
    its keys come back in UnprocessedKeys, read by nobody."""
    client = handler.jobs.dynamodb
    batch_get_item = client.batch_get_item

    def throttled(RequestItems: dict, **kwargs) -> dict:
        keys = {table: RequestItems.pop(table)}
        response = batch_get_item(RequestItems=RequestItems, **kwargs)
        response["Responses"].pop(table, None)
        return {**response, "UnprocessedKeys": keys}

    client.batch_get_item = throttled


@pytest.mark.parametrize("throttled", ["annotations", "users"])
@pytest.mark.parametrize("user_id, archived", [("u-alice", True), ("u-bob", False)])
def test_a_job_or_user_dynamodb_leaves_unprocessed_is_read_on_its_own(
    stack: Stack, throttled: str, user_id: str, archived: bool
) -> None:
    # Given a job of a free user (alice) or a premium one (bob), and a DynamoDB that leaves
    # the job's or the user's key unprocessed
    put_job(stack, user_id=user_id)
    handler = archiver(stack)
    tables = {
        "annotations": stack.config.gas.annotations_table,
        "users": stack.config.gas.users_table,
    }
    leave_unprocessed(handler, tables[throttled])
    # Then the decision is the one the whole read would give
    outcome = handler(message(job_id="j1", user_id=user_id))
    if archived:
        assert (outcome.action, outcome.reason) == ("done", "archived")
        assert not result_exists(stack)
    else:
        assert (outcome.action, outcome.reason) == ("done", "premium user: result stays in S3")
        assert result_exists(stack) and ARCHIVE_ID not in job(stack)


def test_early_message_is_deferred_to_the_end_of_the_grace_period(stack: Stack) -> None:
    put_job(stack, complete_time=NOW - 100)
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    assert (outcome.action, outcome.delay) == ("defer", 300 - 100)
    assert result_exists(stack) and vault_archive_count(stack) == 0


@pytest.mark.parametrize(
    "body, item, reason",
    [
        ({"job_id": "nope", "user_id": "u-alice"}, {}, "unknown job nope"),
        ({"job_id": "j1", "user_id": "u-carol"}, {}, "user u-carol does not own job j1"),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {"job_status": "RUNNING"},
            "is RUNNING, not COMPLETED",
        ),
        (
            {"job_id": "j1", "user_id": "u-alice"},
            {"s3_results_bucket": "elsewhere"},
            "is not in the results bucket",
        ),
        ({"job_id": "j1"}, {}, "field 'user_id' missing"),
        ({"job_id": "j1", "user_id": 7}, {}, "field 'user_id' missing or not a non-empty string"),
        ({"job_id": "j1", "user_id": "u-ghost"}, {"user_id": "u-ghost"}, "unknown user u-ghost"),
    ],
)
def test_forged_or_stale_messages_are_invalid_and_touch_nothing(
    stack: Stack, body: dict, item: dict, reason: str
) -> None:
    put_job(stack, **item)
    with pytest.raises(InvalidMessage, match=reason):
        archiver(stack)(message(**body))
    assert vault_archive_count(stack) == 0
    assert ARCHIVE_ID not in job(stack) and result_exists(stack)


def test_a_job_without_complete_time_is_invalid(stack: Stack) -> None:
    # A completed item with no complete time has no grace period to count from
    put_job(stack)
    item = job(stack)
    del item["complete_time"]
    Annotations(stack.aws, stack.config.gas.annotations_table).put(item)
    with pytest.raises(InvalidMessage, match="job j1 has no complete_time"):
        archiver(stack)(message(job_id="j1", user_id="u-alice"))
    assert vault_archive_count(stack) == 0 and result_exists(stack)


def test_result_gone_and_never_archived_is_invalid(stack: Stack) -> None:
    put_job(stack)
    stack.client("s3").delete_object(
        Bucket=stack.config.gas.results_bucket, Key=job(stack)["s3_key_result_file"]
    )
    with pytest.raises(InvalidMessage, match="not in S3 and was never archived"):
        archiver(stack)(message(job_id="j1", user_id="u-alice"))


# -- redelivery and races ------------------------------------------------------------------


def test_redelivery_after_the_archive_finishes_without_a_second_archive(stack: Stack) -> None:
    put_job(stack)
    handler = archiver(stack)
    # Given a crash after the item was updated but before the S3 object was deleted
    original_delete = handler.s3.delete_object
    handler.s3.delete_object = lambda **kw: (_ for _ in ()).throw(ConnectionError("crash"))
    with pytest.raises(ConnectionError):
        handler(message(job_id="j1", user_id="u-alice"))
    assert result_exists(stack) and ARCHIVE_ID in job(stack)
    # When the message comes again
    handler.s3.delete_object = original_delete
    outcome = handler(message(job_id="j1", user_id="u-alice"))
    # Then the remaining step is done and there is still only one archive
    assert (outcome.action, outcome.reason) == ("done", "already archived")
    assert not result_exists(stack) and vault_archive_count(stack) == 1


def test_losing_a_race_deletes_our_orphan_archive(stack: Stack) -> None:
    put_job(stack)
    handler = archiver(stack)
    commit = handler.backend.commit

    def upload_while_another_copy_wins(*args, **kwargs):
        ours = commit(*args, **kwargs)
        Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
            "j1",
            "SET #a = :a, #e = :e",
            "attribute_not_exists(#a)",
            {"#a": ARCHIVE_ID, "#e": RESULT_ETAG},
            {":a": "winner-archive-id", ":e": etag(stack)},
        )
        return ours

    handler.backend.commit = upload_while_another_copy_wins
    outcome = handler(message(job_id="j1", user_id="u-alice"))
    assert (outcome.action, outcome.reason) == ("done", "archived by another worker")
    assert job(stack)[ARCHIVE_ID] == "winner-archive-id"
    assert vault_archive_count(stack) == 0  # ours was deleted; the winner's is not in this vault
    assert not result_exists(stack)


def test_a_result_gone_because_another_copy_archived_it_is_done(stack: Stack) -> None:
    # Given a copy of the message that read the job just before another copy archived the
    # result and deleted it from S3
    data = put_job(stack)
    ours = archiver(stack)
    source = ours.backend.source

    def another_copy_finishes_first(bucket, key):
        other = archiver(stack)(message(job_id="j1", user_id="u-alice"))
        assert (other.action, other.reason) == ("done", "archived")
        return source(bucket, key)

    ours.backend.source = another_copy_finishes_first
    # When ours finds no S3 result
    outcome = ours(message(job_id="j1", user_id="u-alice"))
    # Then that is no invalid message: the result is in the archive, once
    assert (outcome.action, outcome.reason) == ("done", "archived by another worker")
    assert vault_archive_count(stack) == 1
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == data


def test_a_result_rewritten_during_the_upload_is_retried_not_archived(stack: Stack) -> None:
    # Given a result rewritten in S3 while its parts are read (every read is pinned to the
    # ETag the upload started with)
    put_job(stack, size=3 * MIB)
    handler = archiver(stack)
    read = handler.s3.get_object
    item = job(stack)

    def rewritten_after_the_first_part(**kwargs):
        if not kwargs["Range"].startswith("bytes=0-"):
            stack.client("s3").put_object(
                Bucket=item["s3_results_bucket"],
                Key=item["s3_key_result_file"],
                Body=b"new content",
            )
        return read(**kwargs)

    handler.s3.get_object = rewritten_after_the_first_part
    # When the message is handled
    outcome = handler(message(job_id="j1", user_id="u-alice"))
    # Then it is retried, nothing is archived, and the new result stays
    assert (outcome.action, outcome.reason) == (
        "retry",
        "the S3 result changed while it was archived",
    )
    handler.s3.get_object = read
    assert vault_archive_count(stack) == 0 and ARCHIVE_ID not in job(stack)
    assert result_bytes(stack) == b"new content"


def test_an_upload_recorded_for_other_content_is_not_completed(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    # Given a worker killed after recording its upload, before completing it
    put_job(stack, size=3 * MIB)
    lost_answers.add("CompleteMultipartUpload", then="kill-before")
    with pytest.raises(Killed):
        archiver(stack)(message(job_id="j1", user_id="u-alice"))
    assert ARCHIVE_UPLOAD in job(stack)
    # And the result rewritten since (the recorded upload holds the old bytes)
    item = job(stack)
    new = os.urandom(2 * MIB)
    stack.client("s3").put_object(
        Bucket=item["s3_results_bucket"], Key=item["s3_key_result_file"], Body=new
    )
    # When the message comes back
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    # Then the archive holds the result as it is now, not the upload of the old one
    assert (outcome.action, outcome.reason) == ("done", "archived")
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == new


def test_an_archive_recorded_during_our_upload_stops_us_before_we_complete_ours(
    stack: Stack,
) -> None:
    # Given a copy of the message that read the job, then uploaded its parts, while another
    # copy archived the result and recorded it
    put_job(stack, size=3 * MIB)
    ours = archiver(stack)
    jobs = ours.jobs
    update_if = jobs.update_if

    def another_copy_records_first(*args, **kwargs):
        jobs.update_if = update_if
        outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
        assert (outcome.action, outcome.reason) == ("done", "archived")
        return update_if(*args, **kwargs)

    jobs.update_if = another_copy_records_first  # the first write: recording our upload
    # When ours is about to record its upload
    outcome = ours(message(job_id="j1", user_id="u-alice"))
    # Then it stops there: the other copy's archive stands, ours was never completed, and
    # the item records no upload of ours
    assert (outcome.action, outcome.reason) == ("done", "archived by another worker")
    assert vault_archive_count(stack) == 1 and ARCHIVE_UPLOAD not in job(stack)
    assert not result_exists(stack)


@pytest.mark.parametrize("size", [1000, 3 * MIB])
def test_a_user_who_became_premium_during_the_upload_keeps_the_result_in_s3(
    stack: Stack, size: int
) -> None:
    # Given a user who upgrades while their result is being archived, before it is recorded
    data = put_job(stack, size=size)
    handler = archiver(stack)
    commit = handler.backend.commit

    def upload_while_user_upgrades(*args, **kwargs):
        archive_id = commit(*args, **kwargs)
        set_role(stack, "u-alice", "premium_user")
        return archive_id

    handler.backend.commit = upload_while_user_upgrades
    # When the archive is about to be recorded
    outcome = handler(message(job_id="j1", user_id="u-alice"))
    # Then it is not: the result stays in S3 as it was, the archive made for it is deleted,
    # and the item keeps no trace of it (nor of its upload, which a later message could
    # otherwise complete again and record)
    assert (outcome.action, outcome.reason) == (
        "done",
        "user became premium: result stays in S3, this archive deleted",
    )
    assert result_bytes(stack) == data
    assert ARCHIVE_ID not in job(stack) and ARCHIVE_UPLOAD not in job(stack)
    assert vault_archive_count(stack) == 0
    assert restore_requests(stack) == []


def test_an_upgrade_between_the_record_and_its_lost_answer_keeps_the_archive(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    # Given the record of the archive takes effect, the user upgrades, and only then does
    # botocore's retry of the record arrive: both its conditions fail against what is there
    data = put_job(stack)
    lost_answers.add(
        "TransactWriteItems",
        when=sets(ARCHIVE_ID),
        meanwhile=lambda: set_role(stack, "u-alice", "premium_user"),
    )
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    # Then the archive recorded by the first attempt is ours, kept, and the S3 copy deleted
    # (the web app's restore after the upgrade finds it there)
    assert lost_answers.hits == [("TransactWriteItems", "retry")]
    assert (outcome.action, outcome.reason) == ("done", "archived")
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == data
    assert vault_archive_count(stack) == 1 and not result_exists(stack)


def test_cancelled_upload_is_aborted_and_retried(stack: Stack) -> None:
    put_job(stack, size=3 * MIB)
    handler = archiver(stack)
    msg = message(job_id="j1", user_id="u-alice")
    read = handler.s3.get_object

    def read_then_cancel(**kwargs):
        msg.cancelled.set()  # the drain grace ends while the first part is read
        return read(**kwargs)

    handler.s3.get_object = read_then_cancel
    outcome = handler(msg)
    assert outcome.action == "retry"
    assert (
        stack.client("glacier").list_multipart_uploads(vaultName=stack.config.gas.vault)[
            "UploadsList"
        ]
        == []
    )
    assert ARCHIVE_ID not in job(stack) and result_exists(stack)


def test_a_short_read_of_the_result_is_refused_and_the_upload_aborted(stack: Stack) -> None:
    # Given an S3 answer that ends early for the second 1 MiB part
    put_job(stack, size=3 * MIB)
    handler = archiver(stack)
    read = handler.s3.get_object

    def short_second_part(**kwargs):
        response = read(**kwargs)
        if kwargs["Range"].startswith(f"bytes={MIB}-"):
            response["Body"] = io.BytesIO(response["Body"].read()[:1000])
        return response

    handler.s3.get_object = short_second_part
    # When the message is handled, the short part is refused before it is sent
    with pytest.raises(IOError, match=f"source returned 1000 bytes for {MIB}-{2 * MIB - 1}"):
        handler(message(job_id="j1", user_id="u-alice"))
    # Then nothing was archived and the result is still in S3
    assert (
        stack.client("glacier").list_multipart_uploads(vaultName=stack.config.gas.vault)[
            "UploadsList"
        ]
        == []
    )
    assert vault_archive_count(stack) == 0
    assert ARCHIVE_ID not in job(stack) and result_exists(stack)


# -- tree hashes and part sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    "size, part_mib", [(1, 1), (MIB, 1), (3 * MIB + 5, 1), (5 * MIB, 2), (9 * MIB + 1, 4), (0, 1)]
)
def test_part_hashes_combine_to_botocores_tree_hash(size: int, part_mib: int) -> None:
    data = os.urandom(size)
    part = part_mib * MIB
    digests = [
        bytes.fromhex(calculate_tree_hash(io.BytesIO(data[i : i + part])))
        for i in range(0, size, part)
    ]
    assert combine_tree_hashes(digests) == calculate_tree_hash(io.BytesIO(data))


def test_part_size_doubles_to_stay_within_ten_thousand_parts() -> None:
    assert part_size_for(100 * MIB, 16 * MIB) == 16 * MIB
    assert part_size_for(200_000 * MIB, 16 * MIB) == 32 * MIB
    assert part_size_for(10**15, 16 * MIB) == 4096 * MIB


# -- answers lost, workers killed, messages late -------------------------------------------------


def test_a_lost_answer_to_recording_the_archive_keeps_it(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    # Given the write of the archive id takes effect but its answer is lost, so botocore's
    # retry fails its condition against that first attempt
    data = put_job(stack)
    lost_answers.add("TransactWriteItems", when=sets(ARCHIVE_ID))
    # When the message is handled
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    # Then it is recognised as our own write: the archive it names is kept, with the bytes
    assert lost_answers.hits == [("TransactWriteItems", "retry")]
    assert (outcome.action, outcome.reason) == ("done", "archived")
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == data
    assert vault_archive_count(stack) == 1 and not result_exists(stack)


def test_a_lost_answer_to_completing_the_upload_makes_no_second_archive(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    # Whatever call creates the archive, its answer is lost and botocore makes it again
    data = put_job(stack, size=10)
    lost_answers.add("UploadArchive")
    lost_answers.add("CompleteMultipartUpload")
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    assert outcome.action == "done" and len(lost_answers.hits) == 1
    assert vault_archive_count(stack) == 1
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == data


def test_a_worker_killed_between_archiving_and_recording_leaves_no_orphan(
    stack: Stack, lost_answers: LostAnswers
) -> None:
    # Given a worker killed just before it records the archive Glacier made
    data = put_job(stack)
    lost_answers.add("TransactWriteItems", when=sets(ARCHIVE_ID), then="kill-before")
    with pytest.raises(Killed):
        archiver(stack)(message(job_id="j1", user_id="u-alice"))
    assert ARCHIVE_ID not in job(stack) and result_exists(stack)
    # When the message comes back to a fresh worker
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    # Then the vault holds one archive, the one the job names
    assert outcome.action == "done"
    assert vault_archive_count(stack) == 1
    assert archived_bytes(stack, job(stack)[ARCHIVE_ID]) == data


def test_an_empty_result_stays_in_s3(stack: Stack) -> None:
    # Glacier takes no empty archive; an empty file costs nothing in S3
    put_job(stack, size=0)
    outcome = archiver(stack)(message(job_id="j1", user_id="u-alice"))
    assert (outcome.action, outcome.reason) == (
        "done",
        "empty result: nothing to archive, it stays in S3",
    )
    assert result_exists(stack) and ARCHIVE_ID not in job(stack)
    assert vault_archive_count(stack) == 0


def test_a_late_copy_of_the_message_never_deletes_a_result_put_back_by_thaw(stack: Stack) -> None:
    # Given an archived result whose user upgraded: restore started its retrieval
    data = archive_job(stack, size=3 * MIB)
    local_settings.configure(expedited_seconds=0)
    set_role(stack, "u-alice", "premium_user")
    pipeline = Pipeline(stack)
    thaw = pipeline.handler("thaw")
    copy_back = thaw.backend.copy_back

    def copy_back_then_a_late_archive_message(*args):
        copy_back(*args)
        # Thaw has put the result back at its key, and not yet recorded that on the item,
        # when a late copy of the original archive message reaches an archive worker
        late = archiver(stack)(message(job_id="j1", user_id="u-alice"))
        assert late.action == "done", late

    thaw.backend.copy_back = copy_back_then_a_late_archive_message
    pipeline.handler = lambda utility: (
        thaw if utility == "thaw" else Pipeline.handler(pipeline, utility)
    )
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url(stack.config.restore.queue),
        MessageBody=json.dumps({"user_id": "u-alice"}),
    )
    # When restore and thaw run to the end
    pipeline.settle(until=lambda: ARCHIVE_ID not in job(stack))
    # Then the result is in S3, byte-identical, and only then was the archive deleted
    assert result_exists(stack) and result_bytes(stack) == data
    assert vault_archive_count(stack) == 0 and not pipeline.dead


@pytest.mark.parametrize("backend", ["vault", "s3"])
def test_a_stale_worker_never_records_an_archive_thaw_has_deleted(
    stack: Stack, lost_answers: LostAnswers, backend: str
) -> None:
    # Given a worker killed between making the archive and recording it
    use_backend(stack, backend)
    world = World(stack)
    job_ = world.job(world.user("free_user"), size=3)
    body = {"job_id": job_.job_id, "user_id": job_.user_id}
    lost_answers.add("TransactWriteItems", when=sets(ARCHIVE_ID), then="kill-before")
    with pytest.raises(Killed):
        archiver(stack)(message(**body))
    # And a stale copy of its message that finds that archive, then stalls while the whole
    # cycle runs: the redelivery records it and deletes the S3 copy, the user upgrades,
    # restore and thaw bring the result back and delete the archive, and the user is free
    # again
    stale = Archiver(stack.config, stack.aws, clock=lambda: NOW)
    found = stale.backend.commit  # the vault completes the upload recorded, S3 copies

    def found_then_stall(*args, **kwargs):
        archive_id = found(*args, **kwargs)
        assert archiver(stack)(message(**body)).reason == "archived"
        world.upgrade(job_.user_id)
        world.redeliver_after(("restore", {"user_id": job_.user_id}))
        assert not world.archive_exists(archive_id)
        set_role(stack, job_.user_id, "free_user")
        return archive_id

    stale.backend.commit = found_then_stall
    # When the stale copy goes on
    outcome = stale(message(**body))
    # Then it does not record the archive thaw deleted: the job names no missing archive
    assert outcome.action == "done", outcome
    world.check(Pipeline(stack))
    assert world.item(job_).get(ARCHIVE_ID) is None and world.in_s3(world.item(job_))
