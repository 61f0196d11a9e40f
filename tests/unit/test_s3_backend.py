"""Archive, restore and thaw with the S3 storage-class back end (``archive_backend = s3``)."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest
from s3transfer.manager import TransferConfig, TransferManager

from localaws import settings as local_settings
from localaws.stack import announce_restores
from tests.conftest import (
    NOW,
    LostAnswers,
    Stack,
    job,
    message,
    put_job,
    result_bytes,
    result_exists,
    set_role,
    wait_for,
)
from tests.pipeline import Pipeline
from tests.unit.test_restore import requests_sent
from util.archive.archive import Archiver
from util.archives import s3 as s3_archives
from util.archives.layout import MIB
from util.helpers import Annotations, InvalidMessage
from util.messages import decode_body
from util.restore.restore import Restorer
from util.schema import ARCHIVE_ID, RESTORE_JOB_ID, RESTORE_TIER, THAW_JOB_ID
from util.thaw.thaw import Thawer


@pytest.fixture
def s3_backend(stack: Stack) -> Stack:
    """The S3 back end, 5 MiB copy parts (S3's smallest), restores that finish at once."""
    stack.config.gas.archive_backend = "s3"
    announce_restores(stack.aws, stack.config, stack.aws.topic_arn(stack.config.gas.thaw_topic))
    stack.config.gas.copy_part_size_mib = 5
    local_settings.configure(expedited_seconds=0, standard_seconds=0)
    return stack


def s3_calls(handler) -> list[str]:
    """Every S3 operation the handler's client makes from now on (the process shares it)."""
    calls: list[str] = []
    handler.backend.s3.meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name)
    )
    return calls


def archive(stack: Stack, size: int = 12 * MIB) -> bytes:
    data = put_job(stack, size=size)
    outcome = Archiver(stack.config, stack.aws)(message(job_id="j1", user_id="u-alice"))
    assert (outcome.action, outcome.reason) == ("done", "archived"), outcome
    return data


def archived_object(stack: Stack) -> dict:
    return stack.client("s3").head_object(
        Bucket=stack.config.gas.archive_bucket, Key=job(stack)[ARCHIVE_ID]
    )


def restore(stack: Stack) -> None:
    set_role(stack, "u-alice", "premium_user")
    outcome = Restorer(stack.config, stack.aws, clock=lambda: NOW)(message(user_id="u-alice"))
    assert outcome.action == "done", outcome


def completion_events(stack: Stack) -> list[dict]:
    """The archive bucket's restore events, as the thaw queue receives them."""
    sqs = stack.client("sqs")
    url = stack.queue_url(stack.config.thaw.queue)
    events: list[dict] = []

    def receive() -> bool:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            event = decode_body(m["Body"])
            if event.get("Event") != "s3:TestEvent":  # sent when notifications are set
                events.append(event)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return bool(events)

    wait_for(receive, timeout=30, what="the ObjectRestore:Completed event")
    return events


# -- archive -------------------------------------------------------------------------------------


@pytest.fixture(params=["one request", "in parts"])
def copy_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How a 12 MiB result is copied: one CopyObject (S3's limit, 5 GiB, as it is), or
    multipart (the limit lowered to 10 MiB, so that 12 MiB are more than it)."""
    if request.param == "in parts":
        monkeypatch.setattr(s3_archives, "MAX_SINGLE_COPY", 10 * MIB)
    return request.param


def test_archive_is_a_server_side_copy_into_the_archive_class(
    s3_backend: Stack, copy_in: str
) -> None:
    # Given a 12 MiB result
    data = put_job(s3_backend, size=12 * MIB)
    handler = Archiver(s3_backend.config, s3_backend.aws)
    calls = s3_calls(handler)
    # When it is archived
    outcome = handler(message(job_id="j1", user_id="u-alice"))
    # Then it was copied inside S3: not one byte went through the worker
    assert (outcome.action, outcome.reason) == ("done", "archived")
    if copy_in == "one request":  # a look, one copy, the delete
        assert calls == ["HeadObject", "CopyObject", "DeleteObject"]
    else:  # three 5 MiB parts
        assert calls.count("UploadPartCopy") == 3 and "CopyObject" not in calls
    assert "GetObject" not in calls and "UploadPart" not in calls and "PutObject" not in calls
    # And the archive copy is in the Glacier class, under the prefix, and the result is gone
    key = job(s3_backend)[ARCHIVE_ID]
    assert key.startswith(f"{s3_backend.config.gas.archive_prefix}j1/")
    assert archived_object(s3_backend)["StorageClass"] == "GLACIER"
    assert archived_object(s3_backend)["ContentLength"] == len(data)
    assert not result_exists(s3_backend)


MARKER = b"the first copy"


def mark(stack: Stack, key: str) -> None:
    """Put a marker where the archive object is: a copy that replaced it would remove it."""
    stack.client("s3").put_object(
        Bucket=stack.config.gas.archive_bucket, Key=key, Body=MARKER, StorageClass="GLACIER"
    )


def marked(stack: Stack, key: str) -> bool:
    head = stack.client("s3").head_object(Bucket=stack.config.gas.archive_bucket, Key=key)
    return head["ContentLength"] == len(MARKER)


def test_an_archive_made_again_lands_on_the_same_object_and_never_replaces_it(
    s3_backend: Stack, copy_in: str
) -> None:
    # A copy made again (a racing duplicate; a redelivery after a crash) leaves no orphan:
    # the archive key is the job's and the content's.
    put_job(s3_backend, size=12 * MIB)
    handler = Archiver(s3_backend.config, s3_backend.aws)
    item = job(s3_backend)
    source = handler.backend.source(item["s3_results_bucket"], item["s3_key_result_file"])
    backend = handler.backend
    first = backend.commit(backend.upload("j1", "u-alice", source, message().cancelled))
    mark(s3_backend, first)
    second = backend.commit(backend.upload("j1", "u-alice", source, message().cancelled))
    assert (
        first == second == f"{s3_backend.config.gas.archive_prefix}j1/{source.etag.strip(chr(34))}"
    )
    listing = s3_backend.client("s3").list_objects_v2(Bucket=s3_backend.config.gas.archive_bucket)
    assert [o["Key"] for o in listing["Contents"]] == [first]
    # And the second copy did not replace (and so delete early) the first: one request is
    # made only if the key is free; a copy in parts looks first
    assert marked(s3_backend, first)


def test_a_copy_whose_answer_was_lost_is_the_archive(
    s3_backend: Stack, lost_answers: LostAnswers
) -> None:
    # Given a CopyObject that lands and whose answer is lost: botocore's retry finds the key
    # taken, and the first copy is marked before the retry
    put_job(s3_backend, size=3)
    lost_answers.add("CopyObject", meanwhile=lambda: mark(s3_backend, archive_key(s3_backend)))
    # When the result is archived
    outcome = Archiver(s3_backend.config, s3_backend.aws)(message(job_id="j1", user_id="u-alice"))
    # Then the refused retry is looked at: the copy there is this archive, and it is recorded
    assert (outcome.action, outcome.reason) == ("done", "archived"), outcome
    assert lost_answers.hits == [("CopyObject", "retry")]
    key = job(s3_backend)[ARCHIVE_ID]
    assert marked(s3_backend, key) and not result_exists(s3_backend)


def test_a_result_rewritten_before_its_copy_is_not_archived(
    s3_backend: Stack, copy_in: str
) -> None:
    # Given a result rewritten, as long as it was, between the look at it and its copy
    put_job(s3_backend, size=12 * MIB)
    rewritten = bytes(12 * MIB)
    handler = Archiver(s3_backend.config, s3_backend.aws)
    source = handler.backend.source

    def look_then_rewrite(bucket, key):
        looked = source(bucket, key)
        s3_backend.client("s3").put_object(Bucket=bucket, Key=key, Body=rewritten)
        return looked

    handler.backend.source = look_then_rewrite
    # Then the copy, pinned to the ETag seen, is refused and nothing is archived
    outcome = handler(message(job_id="j1", user_id="u-alice"))
    assert (outcome.action, outcome.reason) == (
        "retry",
        "the S3 result changed while it was archived",
    )
    assert ARCHIVE_ID not in job(s3_backend)
    assert result_bytes(s3_backend) == rewritten
    listing = s3_backend.client("s3").list_objects_v2(Bucket=s3_backend.config.gas.archive_bucket)
    assert listing.get("KeyCount", 0) == 0


def archive_key(stack: Stack) -> str:
    """The key the job's result is archived at (its ETag as the results bucket has it)."""
    item = job(stack)
    head = stack.client("s3").head_object(
        Bucket=item["s3_results_bucket"], Key=item["s3_key_result_file"]
    )
    return f"{stack.config.gas.archive_prefix}j1/{head['ETag'].strip(chr(34))}"


def test_a_resent_copy_of_the_message_finds_the_archive_an_earlier_delivery_made(
    s3_backend: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a result copied in parts, whose archive an earlier delivery made before it
    # crashed; its message retried since, so this copy is received for the first time
    monkeypatch.setattr(s3_archives, "MAX_SINGLE_COPY", 10 * MIB)
    put_job(s3_backend, size=12 * MIB)
    key = archive_key(s3_backend)
    mark(s3_backend, key)
    resent = message(job_id="j1", user_id="u-alice")
    resent.attributes = {"gas_retries": {"DataType": "Number", "StringValue": "1"}}
    handler = Archiver(s3_backend.config, s3_backend.aws)
    calls = s3_calls(handler)
    # When the copy is handled
    outcome = handler(resent)
    # Then the archive there is recorded, not copied over (which would delete it early)
    assert (outcome.action, outcome.reason) == ("done", "archived")
    assert "UploadPartCopy" not in calls and marked(s3_backend, key)
    assert job(s3_backend)[ARCHIVE_ID] == key


# -- restore -------------------------------------------------------------------------------------


def test_restore_asks_for_expedited(s3_backend: Stack) -> None:
    archive(s3_backend)
    restore(s3_backend)
    item = job(s3_backend)
    assert item[RESTORE_TIER] == "Expedited" and item[RESTORE_JOB_ID] == item[ARCHIVE_ID]
    assert "ongoing-request" in archived_object(s3_backend)["Restore"]


def test_no_expedited_capacity_falls_back_to_standard_after_one_ask(s3_backend: Stack) -> None:
    archive(s3_backend)
    local_settings.configure(expedited_capacity=False)
    asks = requests_sent(s3_backend.client("s3"), "RestoreObject")
    restore(s3_backend)
    assert job(s3_backend)[RESTORE_TIER] == "Standard"
    # A capacity refusal is an answer, not a fault: botocore does not ask again
    tiers = [b"Expedited" in request.body for request in asks]
    assert tiers == [True, False]


def test_deep_archive_goes_straight_to_standard(s3_backend: Stack) -> None:
    s3_backend.config.gas.archive_storage_class = "DEEP_ARCHIVE"
    archive(s3_backend)
    assert archived_object(s3_backend)["StorageClass"] == "DEEP_ARCHIVE"
    restore(s3_backend)
    assert job(s3_backend)[RESTORE_TIER] == "Standard"


def test_a_restore_already_in_progress_is_not_an_error(s3_backend: Stack) -> None:
    archive(s3_backend)
    local_settings.configure(expedited_seconds=3600)
    item = job(s3_backend)
    s3_backend.client("s3").restore_object(
        Bucket=s3_backend.config.gas.archive_bucket,
        Key=item[ARCHIVE_ID],
        RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Expedited"}},
    )
    restore(s3_backend)
    assert job(s3_backend)[RESTORE_JOB_ID] == item[ARCHIVE_ID]


# -- thaw ----------------------------------------------------------------------------------------


def test_thaw_copies_the_restored_object_back_and_deletes_the_archive(s3_backend: Stack) -> None:
    # Given a result archived in the Glacier class and restored
    data = archive(s3_backend)
    archive_key = job(s3_backend)[ARCHIVE_ID]
    restore(s3_backend)
    [event] = completion_events(s3_backend)
    # When thaw handles the bucket's ObjectRestore:Completed event
    handler = Thawer(s3_backend.config, s3_backend.aws, clock=lambda: NOW)
    calls = s3_calls(handler)
    outcome = handler(message(**event))
    made = list(calls)
    # Then the result is back in STANDARD, byte-identical, copied inside S3
    assert (outcome.action, outcome.reason) == ("done", "thawed")
    assert "UploadPartCopy" in made and "GetObject" not in made
    assert result_bytes(s3_backend) == data
    item = job(s3_backend)
    head = s3_backend.client("s3").head_object(
        Bucket=item["s3_results_bucket"], Key=item["s3_key_result_file"]
    )
    assert head.get("StorageClass", "STANDARD") == "STANDARD"
    # And the item no longer names an archive, and the archive object is gone
    assert ARCHIVE_ID not in item and RESTORE_JOB_ID not in item
    assert item[THAW_JOB_ID] == archive_key
    listing = s3_backend.client("s3").list_objects_v2(Bucket=s3_backend.config.gas.archive_bucket)
    assert listing.get("KeyCount", 0) == 0
    # And the same event again changes nothing
    assert handler(message(**event)).reason == "already thawed"


def test_the_test_event_s3_sends_is_nothing_to_do(s3_backend: Stack) -> None:
    event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "gas-archive-objects"}
    outcome = Thawer(s3_backend.config, s3_backend.aws)(message(**event))
    assert outcome.action == "done"


def encrypt_buckets(stack: Stack, algorithm: str) -> None:
    """Default encryption on the results and archive buckets, as organisations require."""
    for bucket in (stack.config.gas.results_bucket, stack.config.gas.archive_bucket):
        stack.client("s3").put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm}}]
            },
        )


@pytest.mark.parametrize("encryption", ["AES256", "aws:kms", "aws:kms:dsse"])
@pytest.mark.parametrize("size", [3, 12 * MIB], ids=["3 B", "12 MiB"])
def test_every_result_comes_back_under_every_default_encryption(
    s3_backend: Stack, copy_in: str, encryption: str, size: int
) -> None:
    # Given buckets encrypted by default: under SSE-KMS an object's ETag is no MD5 of its bytes
    encrypt_buckets(s3_backend, encryption)
    data = put_job(s3_backend, size=size)
    original = s3_backend.client("s3").head_object(
        Bucket=s3_backend.config.gas.results_bucket, Key=job(s3_backend)["s3_key_result_file"]
    )
    # When the result is archived, restored and thawed
    archive_outcome = Archiver(s3_backend.config, s3_backend.aws)(
        message(job_id="j1", user_id="u-alice")
    )
    assert archive_outcome.action == "done", archive_outcome
    send_restore_request(s3_backend)
    pipeline = Pipeline(s3_backend)
    pipeline.settle(until=lambda: ARCHIVE_ID not in job(s3_backend))
    # Then it is back byte-identical, verified by a checksum S3 computed (ETags say nothing
    # here), with an ETag other than the original's, and nothing was dead-lettered
    assert result_bytes(s3_backend) == data and not pipeline.dead
    thawed = s3_backend.client("s3").head_object(
        Bucket=s3_backend.config.gas.results_bucket, Key=job(s3_backend)["s3_key_result_file"]
    )
    assert thawed["ETag"] != original["ETag"]


def archive_the_old_way(stack: Stack, part_size: int) -> tuple[bytes, str]:
    """A 12 MiB result archived by the version before, in an unencrypted bucket: copied
    without a checksum of its own, its copy's part layout in its metadata. Its data and the
    original's ETag."""
    data = put_job(stack, size=12 * MIB)
    item, s3 = job(stack), stack.client("s3")
    where = {"Bucket": item["s3_results_bucket"], "Key": item["s3_key_result_file"]}
    etag = s3.head_object(**where)["ETag"]
    key = f"{stack.config.gas.archive_prefix}j1/{etag.strip(chr(34))}"
    extra = {
        "StorageClass": "GLACIER",
        "MetadataDirective": "REPLACE",
        "Metadata": {s3_archives.PART_SIZE_METADATA: str(part_size)},
    }
    config = TransferConfig(multipart_threshold=part_size or 6 * 1024 * MIB)
    if part_size:
        config.multipart_chunksize = part_size
    TransferManager(s3, config).copy(where, stack.config.gas.archive_bucket, key, extra).result()
    assert "ChecksumCRC64NVME" not in s3.head_object(
        Bucket=stack.config.gas.archive_bucket, Key=key, ChecksumMode="ENABLED"
    )
    Annotations(stack.aws, stack.config.gas.annotations_table).put(
        {**item, ARCHIVE_ID: key, "results_file_etag": etag}
    )
    s3.delete_object(**where)
    return data, etag


@pytest.mark.parametrize("part_size", [0, 5 * MIB], ids=["one request", "in parts"])
def test_an_archive_made_before_archives_had_checksums_still_comes_back(
    s3_backend: Stack, part_size: int
) -> None:
    data, etag = archive_the_old_way(s3_backend, part_size)
    # When the user upgrades, and restore and thaw run
    send_restore_request(s3_backend)
    pipeline = Pipeline(s3_backend)
    pipeline.settle(until=lambda: ARCHIVE_ID not in job(s3_backend))
    # Then it is back, checked by its ETag, as before
    assert result_bytes(s3_backend) == data and not pipeline.dead
    item = job(s3_backend)
    thawed = s3_backend.client("s3").head_object(
        Bucket=item["s3_results_bucket"], Key=item["s3_key_result_file"]
    )
    assert thawed["ETag"] != etag


def corrupt_copies(stack: Stack, handler: Thawer) -> None:
    """Every copy the handler's back end makes is replaced by other bytes at once."""
    copy = handler.backend.copy

    def copy_then_corrupt(source, bucket, key, *args):
        copy(source, bucket, key, *args)
        stack.client("s3").put_object(Bucket=bucket, Key=key, Body=b"not the result")

    handler.backend.copy = copy_then_corrupt


def test_a_bad_copy_back_of_an_archive_made_before_checksums_commits_nothing(
    s3_backend: Stack,
) -> None:
    archive_the_old_way(s3_backend, 0)
    restore(s3_backend)
    [event] = completion_events(s3_backend)
    handler = Thawer(s3_backend.config, s3_backend.aws, clock=lambda: NOW)
    corrupt_copies(s3_backend, handler)
    outcome = handler(message(**event))
    assert outcome.action == "retry" and outcome.reason.startswith("nothing committed")
    assert not result_exists(s3_backend) and ARCHIVE_ID in job(s3_backend)


def test_a_copy_whose_checksum_differs_commits_nothing(s3_backend: Stack) -> None:
    archive(s3_backend)
    restore(s3_backend)
    [event] = completion_events(s3_backend)
    handler = Thawer(s3_backend.config, s3_backend.aws, clock=lambda: NOW)
    corrupt_copies(s3_backend, handler)
    outcome = handler(message(**event))
    assert outcome.action == "retry" and outcome.reason.startswith("nothing committed")
    assert not result_exists(s3_backend) and ARCHIVE_ID in job(s3_backend)


def restore_event(stack: Stack) -> dict:
    """The archive bucket's ObjectRestore:Completed event for the job's archive object."""
    return {
        "Records": [
            {
                "eventName": "ObjectRestore:Completed",
                "s3": {
                    "bucket": {"name": stack.config.gas.archive_bucket},
                    "object": {"key": quote_plus(job(stack)[ARCHIVE_ID])},
                },
            }
        ]
    }


def test_an_event_while_the_restore_is_still_in_progress_is_retried(s3_backend: Stack) -> None:
    # Given a restore under way (an event S3 sent early, or one forged ahead of time)
    archive(s3_backend)
    local_settings.configure(expedited_seconds=3600)
    restore(s3_backend)
    # When thaw handles its event
    outcome = Thawer(s3_backend.config, s3_backend.aws)(message(**restore_event(s3_backend)))
    # Then it waits for the restore: nothing is copied yet
    assert (outcome.action, outcome.reason) == ("retry", "retrieval is InProgress")
    assert not result_exists(s3_backend) and ARCHIVE_ID in job(s3_backend)


def test_an_event_for_an_archive_object_that_is_gone_is_invalid(s3_backend: Stack) -> None:
    # Given an archive object deleted although the item still names it
    archive(s3_backend)
    event = restore_event(s3_backend)
    s3_backend.client("s3").delete_object(
        Bucket=s3_backend.config.gas.archive_bucket, Key=job(s3_backend)[ARCHIVE_ID]
    )
    # Then its event is for an operator to look at, not retried forever
    with pytest.raises(InvalidMessage, match="its archive .* is gone"):
        Thawer(s3_backend.config, s3_backend.aws)(message(**event))


def test_an_event_for_an_archive_object_never_restored_restarts_its_retrieval(
    s3_backend: Stack,
) -> None:
    # Given an event for an archive object that is not restored (forged, or its copy expired)
    archive(s3_backend)
    # When thaw handles it, it copies nothing from an object it cannot read, and starts a
    # retrieval instead (Standard, as after any failed one)
    outcome = Thawer(s3_backend.config, s3_backend.aws, clock=lambda: NOW)(
        message(**restore_event(s3_backend))
    )
    assert outcome.action == "done", outcome
    assert outcome.reason == (
        "retrieval failed (not restored (or its copy expired)); started Standard"
    )
    assert not result_exists(s3_backend)
    assert job(s3_backend)[RESTORE_JOB_ID] == job(s3_backend)[ARCHIVE_ID]


def test_an_event_handled_after_the_restored_copy_expired_restores_it_again(
    s3_backend: Stack,
) -> None:
    # Given a restored copy that lasts its Days (a day here being 1 s) before thaw gets to it
    data = archive(s3_backend)
    local_settings.configure(day_seconds=1)
    restore(s3_backend)
    [event] = completion_events(s3_backend)
    wait_for(lambda: "Restore" not in archived_object(s3_backend), what="the copy to expire")
    # When thaw handles the event, it finds nothing to copy, and restores the object again
    local_settings.configure(day_seconds=86400)
    handler = Thawer(s3_backend.config, s3_backend.aws, clock=lambda: NOW)
    outcome = handler(message(**event))
    assert (
        outcome.reason == "retrieval failed (not restored (or its copy expired)); started Standard"
    )
    # And the new restore's event brings the result back
    [again] = completion_events(s3_backend)
    assert handler(message(**again)).reason == "thawed"
    assert result_bytes(s3_backend) == data


def test_stopping_abandons_the_copy_back_and_commits_nothing(
    s3_backend: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive(s3_backend)
    restore(s3_backend)
    [event] = completion_events(s3_backend)
    # The copy looks at the stop at once, not after its first 0.2 s poll, by which time a
    # small in-process copy may have finished
    monkeypatch.setattr(s3_archives, "CANCEL_POLL_SECONDS", 0)
    msg = message(**event)
    msg.cancelled.set()
    outcome = Thawer(s3_backend.config, s3_backend.aws, clock=lambda: NOW)(msg)
    assert (outcome.action, outcome.reason) == ("retry", "worker stopping: copy abandoned")
    assert not result_exists(s3_backend) and ARCHIVE_ID in job(s3_backend)
    assert (
        s3_backend.client("s3")
        .list_multipart_uploads(Bucket=s3_backend.config.gas.results_bucket)
        .get("Uploads", [])
        == []
    )


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda r: r.update(eventName="ObjectRestore:Post"), "is not ObjectRestore:Completed"),
        (lambda r: r["s3"]["bucket"].update(name="gas-results"), "is not in the archive"),
        (lambda r: r["s3"]["object"].update(key="elsewhere/j1/x"), "is not in the archive"),
    ],
    ids=["post-event", "other-bucket", "outside-prefix"],
)
def test_events_that_are_not_archive_completions_are_invalid(
    s3_backend: Stack, change, reason: str
) -> None:
    archive(s3_backend)
    restore(s3_backend)
    [event] = completion_events(s3_backend)
    change(event["Records"][0])
    with pytest.raises(InvalidMessage, match=reason):
        Thawer(s3_backend.config, s3_backend.aws)(message(**event))
    assert ARCHIVE_ID in job(s3_backend)


# -- answers lost, messages late ------------------------------------------------------------------


def send_restore_request(stack: Stack) -> None:
    set_role(stack, "u-alice", "premium_user")
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url(stack.config.restore.queue),
        MessageBody=json.dumps({"user_id": "u-alice"}),
    )


def test_a_lost_restore_object_answer_still_brings_the_result_back(
    s3_backend: Stack, lost_answers: LostAnswers
) -> None:
    # Given an archived result, and an Expedited RestoreObject that takes effect while its
    # answer is lost (the Expedited call is made once)
    data = archive(s3_backend)
    lost_answers.add("RestoreObject", then="raise")
    send_restore_request(s3_backend)
    # When restore and thaw run until nothing is left to do
    pipeline = Pipeline(s3_backend)
    pipeline.settle(until=lambda: ARCHIVE_ID not in job(s3_backend))
    # Then the result is back, byte-identical, and no notice was thrown away
    assert lost_answers.hits == [("RestoreObject", "raise")]
    assert result_bytes(s3_backend) == data
    assert not pipeline.dead


def test_a_result_restored_already_is_announced_by_restore(s3_backend: Stack) -> None:
    # S3 sends no second ObjectRestore:Completed for an object restored already (a restore
    # whose notice was lost, or an earlier one that was never thawed): RestoreObject's 200
    # says "restored now", and restore announces it itself.
    data = archive(s3_backend)
    archive_key = job(s3_backend)[ARCHIVE_ID]
    s3_backend.client("s3").restore_object(
        Bucket=s3_backend.config.gas.archive_bucket,
        Key=archive_key,
        RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Expedited"}},
    )
    wait_for(
        lambda: 'ongoing-request="false"' in archived_object(s3_backend).get("Restore", ""),
        what="the restore",
    )
    completion_events(s3_backend)  # S3's own event, consumed: as if it was lost
    send_restore_request(s3_backend)
    pipeline = Pipeline(s3_backend)
    pipeline.settle(until=lambda: ARCHIVE_ID not in job(s3_backend))
    assert result_bytes(s3_backend) == data and not pipeline.dead


def test_a_late_copy_of_the_archive_message_never_deletes_the_thawed_result(
    s3_backend: Stack,
) -> None:
    # Given a result archived, then restored for a user who upgraded
    data = archive(s3_backend, size=3)
    pipeline = Pipeline(s3_backend)
    thaw = pipeline.handler("thaw")
    copy_back = thaw.backend.copy_back

    def copy_back_then_a_late_archive_message(*args):
        copy_back(*args)
        # Thaw has put the result back, and not yet recorded it on the item, when a late
        # copy of the original archive message reaches an archive worker
        late = Archiver(s3_backend.config, s3_backend.aws)(message(job_id="j1", user_id="u-alice"))
        assert late.action == "done", late

    thaw.backend.copy_back = copy_back_then_a_late_archive_message
    pipeline.handler = lambda utility: (
        thaw if utility == "thaw" else Pipeline.handler(pipeline, utility)
    )
    send_restore_request(s3_backend)
    # When restore and thaw run to the end
    pipeline.settle(until=lambda: ARCHIVE_ID not in job(s3_backend))
    # Then the result is in S3, byte-identical
    assert result_exists(s3_backend) and result_bytes(s3_backend) == data
    assert not pipeline.dead


def upload_in_two_parts(stack: Stack, data: bytes) -> None:
    """Put the job's result again as a two-part upload (a multipart ETag, ``-2``)."""
    s3, bucket, key = (
        stack.client("s3"),
        stack.config.gas.results_bucket,
        job(stack)["s3_key_result_file"],
    )
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    halves = [data[: 5 * MIB], data[5 * MIB :]]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=half
            )["ETag"],
        }
        for n, half in enumerate(halves, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )


@pytest.mark.parametrize(
    "size, two_parts",
    [(1, False), (3 * MIB, False), (12 * MIB, False), (12 * MIB, True)],
    ids=["1 B", "3 MiB", "12 MiB", "12 MiB in two parts"],
)
def test_the_thawed_copy_never_has_the_original_etag(
    s3_backend: Stack, copy_in: str, size: int, two_parts: bool
) -> None:
    data = put_job(s3_backend, size=size)
    if two_parts:
        upload_in_two_parts(s3_backend, data)
    original = s3_backend.client("s3").head_object(
        Bucket=s3_backend.config.gas.results_bucket, Key=job(s3_backend)["s3_key_result_file"]
    )
    assert (
        Archiver(s3_backend.config, s3_backend.aws)(message(job_id="j1", user_id="u-alice")).action
        == "done"
    )
    send_restore_request(s3_backend)
    Pipeline(s3_backend).settle(until=lambda: ARCHIVE_ID not in job(s3_backend))
    thawed = s3_backend.client("s3").head_object(
        Bucket=s3_backend.config.gas.results_bucket, Key=job(s3_backend)["s3_key_result_file"]
    )
    assert result_bytes(s3_backend) == data
    assert thawed["ETag"] != original["ETag"]
