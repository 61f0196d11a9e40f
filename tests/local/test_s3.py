"""The S3 restore emulation (localaws.s3) as boto3 sees it, in process and from a server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.s3.models import FakeMultipart

from localaws import s3 as s3_emulation
from localaws.settings import DEFAULT_SETTINGS, configure
from localaws.stack import announce_restores, encrypt_by_default
from tests.conftest import Server, Stack, wait_for

MIB = 1024 * 1024
REGION = "us-east-1"
BUCKET = "archive-bucket"
NO_RETRIES = Config(retries={"total_max_attempts": 1})
# Every tier done at once unless a test says otherwise.
INSTANT = replace(
    DEFAULT_SETTINGS,
    expedited_seconds=0,
    standard_seconds=0,
    bulk_seconds=0,
    expedited_capacity=True,
)
HOUR = 3600


@pytest.fixture
def s3(aws_env: None) -> Iterator[BaseClient]:
    """An S3 client (one attempt per call) on moto in process with the emulation installed,
    every tier taking no time, and an empty bucket."""
    s3_emulation.install()
    configure(INSTANT)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION, config=NO_RETRIES)
        client.create_bucket(Bucket=BUCKET)
        yield client


def archived(
    s3: BaseClient,
    key: str = "archive/j1",
    body: bytes = b"result",
    storage_class: str = "GLACIER",
    bucket: str = BUCKET,
) -> bytes:
    s3.put_object(Bucket=bucket, Key=key, Body=body, StorageClass=storage_class)
    return body


def restore(
    s3: BaseClient,
    key: str = "archive/j1",
    tier: str | None = None,
    days: int = 1,
    bucket: str = BUCKET,
) -> int:
    """RestoreObject's HTTP status."""
    request: dict = {"Days": days}
    if tier:
        request["GlacierJobParameters"] = {"Tier": tier}
    response = s3.restore_object(Bucket=bucket, Key=key, RestoreRequest=request)
    return response["ResponseMetadata"]["HTTPStatusCode"]


def error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def restore_header(s3: BaseClient, key: str = "archive/j1", bucket: str = BUCKET) -> str | None:
    return s3.head_object(Bucket=bucket, Key=key).get("Restore")


def expiry_date(header: str) -> datetime:
    """The expiry-date of an x-amz-restore header of a completed restore."""
    assert header.startswith('ongoing-request="false", expiry-date="'), header
    return parsedate_to_datetime(header.split('expiry-date="')[1].rstrip('"'))


def midnight_after(moment: datetime) -> datetime:
    return datetime.combine(
        moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc
    )


def subscribe_queue(sqs: BaseClient, topic_arn: str, name: str = "restores") -> str:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=arn
    )
    return url


def receive_all(sqs: BaseClient, url: str, until: int) -> list[dict]:
    """Bodies from the queue until `until` have come (SNS envelopes unwrapped), then a long
    poll that must find nothing more."""
    bodies: list[dict] = []

    def receive() -> bool:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            bodies.append(
                json.loads(body["Message"]) if body.get("Type") == "Notification" else body
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(bodies) >= until

    wait_for(receive, timeout=15, what=f"{until} messages")
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    return bodies


def event_names(bodies: list[dict]) -> list[str]:
    return [b["Records"][0]["eventName"] if "Records" in b else b["Event"] for b in bodies]


# -- RestoreObject ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "storage_class, capacity, refusal",
    [
        ("DEEP_ARCHIVE", True, ("InvalidTier", 403)),
        ("GLACIER", False, ("GlacierExpeditedRetrievalNotAvailable", 503)),
    ],
    ids=["deep-archive", "no-capacity"],
)
def test_expedited_is_refused_where_aws_refuses_it_and_standard_then_works(
    s3: BaseClient, storage_class: str, capacity: bool, refusal: tuple[str, int]
) -> None:
    # Given an archived object, and Expedited capacity or not
    configure(expedited_capacity=capacity)
    archived(s3, storage_class=storage_class)

    # When an Expedited restore is requested, then AWS's error comes back, in S3's format
    with pytest.raises(ClientError) as excinfo:
        restore(s3, tier="Expedited")
    assert error(excinfo) == refusal
    assert excinfo.value.response["Error"]["Key"] == "archive/j1"
    # and no restore was started
    assert restore_header(s3) is None

    # When a Standard one is, then it is accepted and the object is restored
    assert restore(s3, tier="Standard") == 202
    assert restore_header(s3).startswith('ongoing-request="false"')


def test_glacier_expedited_with_capacity_and_default_tier_are_accepted(s3: BaseClient) -> None:
    # Given two archived objects, and Expedited restores that take an hour
    configure(expedited_seconds=HOUR)
    archived(s3, key="a")
    archived(s3, key="b")
    # When one is restored Expedited, the other with no tier (Standard, which takes no time)
    assert restore(s3, key="a", tier="Expedited") == 202
    assert restore(s3, key="b") == 202
    # Then the first is in progress and the second done
    assert restore_header(s3, "a") == 'ongoing-request="true"'
    assert restore_header(s3, "b").startswith('ongoing-request="false"')


@pytest.mark.parametrize("storage_class", ["STANDARD", "GLACIER_IR", "STANDARD_IA"])
def test_restore_of_an_object_not_archived_is_invalid_object_state(
    s3: BaseClient, storage_class: str
) -> None:
    archived(s3, storage_class=storage_class)
    with pytest.raises(ClientError) as excinfo:
        restore(s3)
    assert error(excinfo) == ("InvalidObjectState", 403)


@pytest.mark.parametrize(
    "request_body, refusal",
    [
        ({"GlacierJobParameters": {"Tier": "Standard"}}, ("InvalidArgument", 400)),  # no Days
        ({"Days": 0}, ("InvalidArgument", 400)),
        ({"Days": 1, "GlacierJobParameters": {"Tier": "Slow"}}, ("MalformedXML", 400)),
    ],
    ids=["no-days", "zero-days", "unknown-tier"],
)
def test_malformed_restore_requests_are_refused(
    s3: BaseClient, request_body: dict, refusal: tuple[str, int]
) -> None:
    archived(s3)
    with pytest.raises(ClientError) as excinfo:
        s3.restore_object(Bucket=BUCKET, Key="archive/j1", RestoreRequest=request_body)
    assert error(excinfo) == refusal
    assert restore_header(s3) is None


def restore_events_to_queue(s3: BaseClient) -> tuple[BaseClient, str]:
    """The bucket sends its restore events (started, completed, copy expired) to a queue."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="restores")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = ["s3:ObjectRestore:Post", "s3:ObjectRestore:Completed", "s3:ObjectRestore:Delete"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": events}]
        },
    )
    return sqs, url


def test_a_second_restore_while_one_is_in_progress_is_refused_unless_faster(s3: BaseClient) -> None:
    # Given a bucket that sends its restore events to a queue, and Bulk restores taking two
    # seconds while Standard ones take none
    configure(bulk_seconds=2)
    sqs, url = restore_events_to_queue(s3)
    archived(s3)
    # and a Bulk restore in progress
    earlier = set(restore_timers())
    assert restore(s3, tier="Bulk") == 202
    [bulk_timer] = set(restore_timers()) - earlier

    # When the same restore, or a faster one for other Days, is requested, then S3 refuses
    for tier, days in (("Bulk", 1), ("Standard", 2)):
        with pytest.raises(ClientError) as excinfo:
            restore(s3, tier=tier, days=days)
        assert error(excinfo) == ("RestoreAlreadyInProgress", 409)
    assert restore_header(s3) == 'ongoing-request="true"'

    # When a faster tier with the same Days is requested, then it upgrades the restore
    assert restore(s3, tier="Standard") == 202
    assert restore_header(s3).startswith('ongoing-request="false"')
    # and, once the Bulk restore's time has passed too, S3 has announced one start and one
    # completion
    bulk_timer.join(timeout=10)
    assert not bulk_timer.is_alive()
    bodies = receive_all(sqs, url, until=3)
    assert event_names(bodies) == ["s3:TestEvent", "ObjectRestore:Post", "ObjectRestore:Completed"]


def test_restoring_a_restored_object_extends_its_copys_life(s3: BaseClient) -> None:
    # Given an object restored for a day
    archived(s3)
    before = datetime.now(timezone.utc)
    assert restore(s3, days=1) == 202
    after = datetime.now(timezone.utc)
    # Then its copy expires at the first midnight UTC after a day from the request
    first = expiry_date(restore_header(s3))
    assert first in {
        midnight_after(before + timedelta(days=1)),
        midnight_after(after + timedelta(days=1)),
    }

    # When it is restored again for five days, then S3 says 200 and the expiry moves
    assert restore(s3, days=5) == 200
    assert expiry_date(restore_header(s3)) == first + timedelta(days=4)


def expired(s3: BaseClient) -> bool:
    return restore_header(s3) is None


def assert_neither_read_nor_copied(s3: BaseClient) -> None:
    """GetObject, CopyObject and UploadPartCopy of the archived object are refused."""
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=BUCKET, Key="archive/j1")
    assert error(excinfo) == ("InvalidObjectState", 403)
    source = {"Bucket": BUCKET, "Key": "archive/j1"}
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=BUCKET, Key="copy", CopySource=source)
    assert error(excinfo) == ("ObjectNotInActiveTierError", 403)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="copy")["UploadId"]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket=BUCKET,
            Key="copy",
            UploadId=upload_id,
            PartNumber=1,
            CopySource=source,
            CopySourceRange="bytes=0-5",
        )
    assert error(excinfo) == ("ObjectNotInActiveTierError", 403)


def test_a_restored_copy_expires_after_its_days_and_can_be_restored_again(
    s3: BaseClient,
) -> None:
    # Given days of a second, and an archived object whose restore events go to a queue
    configure(day_seconds=1)
    sqs, url = restore_events_to_queue(s3)
    archived(s3)
    # When it is restored for two days
    before = datetime.now(timezone.utc)
    assert restore(s3, days=2) == 202
    after = datetime.now(timezone.utc)
    # Then its copy expires two (short) days after the request, not rounded
    expiry = expiry_date(restore_header(s3))
    assert before.replace(microsecond=0) + timedelta(seconds=2) <= expiry
    assert expiry <= after + timedelta(seconds=2)
    assert s3.get_object(Bucket=BUCKET, Key="archive/j1")["Body"].read() == b"result"

    # When that time has passed, then HEAD shows no restore, the object neither reads nor
    # copies, and S3 announced the copy's end after its start and completion
    wait_for(lambda: expired(s3), timeout=10, what="the restored copy to expire")
    assert datetime.now(timezone.utc) >= expiry
    assert_neither_read_nor_copied(s3)
    events = event_names(receive_all(sqs, url, until=4))
    assert events == [
        "s3:TestEvent",
        "ObjectRestore:Post",
        "ObjectRestore:Completed",
        "ObjectRestore:Delete",
    ]

    # When it is restored again, then that is a new restore, announced as the first was
    assert restore(s3, days=2) == 202
    assert restore_header(s3).startswith('ongoing-request="false"')
    assert s3.get_object(Bucket=BUCKET, Key="archive/j1")["Body"].read() == b"result"
    again = event_names(receive_all(sqs, url, until=2))
    assert again == ["ObjectRestore:Post", "ObjectRestore:Completed"]


def test_an_extension_moves_the_expiry_of_the_restored_copy(s3: BaseClient) -> None:
    # Given days of a second, and an object restored for one, whose events go to a queue
    configure(day_seconds=1)
    sqs, url = restore_events_to_queue(s3)
    archived(s3)
    assert restore(s3, days=1) == 202
    first = expiry_date(restore_header(s3))
    # When its copy's life is extended to two days from now, before it expired
    assert restore(s3, days=2) == 200
    extended = expiry_date(restore_header(s3))
    assert extended > first
    # Then it is still there when the first expiry has passed
    wait_for(lambda: datetime.now(timezone.utc) > first + timedelta(seconds=1), timeout=10)
    assert expiry_date(restore_header(s3)) == extended
    assert s3.get_object(Bucket=BUCKET, Key="archive/j1")["Body"].read() == b"result"
    # and expires at the new one, announced once
    wait_for(lambda: expired(s3), timeout=10, what="the restored copy to expire")
    assert datetime.now(timezone.utc) >= extended
    events = event_names(receive_all(sqs, url, until=4))
    assert events == [
        "s3:TestEvent",
        "ObjectRestore:Post",
        "ObjectRestore:Completed",
        "ObjectRestore:Delete",
    ]


def test_while_a_restore_is_ongoing_the_object_cannot_be_read_or_copied(s3: BaseClient) -> None:
    # Given a restore that takes an hour
    configure(standard_seconds=HOUR)
    archived(s3)
    assert restore(s3) == 202
    # Then HEAD says it is ongoing, and GET, a copy and a copied part are refused
    assert restore_header(s3) == 'ongoing-request="true"'
    assert_neither_read_nor_copied(s3)


def test_a_restored_object_copies_back_in_parts_byte_identical(s3: BaseClient) -> None:
    # Given an archived object of three 5 MiB parts (the last one short), restored
    s3.create_bucket(Bucket="results")
    data = bytes(range(256)) * (10 * MIB // 256) + b"tail"
    archived(s3, body=data)
    assert restore(s3, tier="Expedited") == 202
    wait_for(
        lambda: restore_header(s3).startswith('ongoing-request="false"'),
        timeout=10,
        what="the restore",
    )

    # When s3transfer copies it back into STANDARD, in 5 MiB parts (UploadPartCopy ranges)
    s3.copy(
        {"Bucket": BUCKET, "Key": "archive/j1"},
        "results",
        "gas/u/j1~result.vcf",
        ExtraArgs={"StorageClass": "STANDARD"},
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )

    # Then the copy was made of three parts, is in STANDARD and has the same bytes
    head = s3.head_object(Bucket="results", Key="gas/u/j1~result.vcf")
    assert head["ETag"].endswith('-3"')
    assert head.get("StorageClass", "STANDARD") == "STANDARD" and "Restore" not in head
    body = s3.get_object(Bucket="results", Key="gas/u/j1~result.vcf")["Body"].read()
    assert body == data


# -- events -------------------------------------------------------------------------------------


def test_completion_after_the_tiers_time_is_announced_once_on_the_thaw_queue(stack: Stack) -> None:
    # Given the stack of the s3 back end (its archive bucket announces completed restores on
    # the thaw topic; configured twice, as a restarted stack would), and a second per
    # Standard restore
    stack.config.gas.archive_backend = "s3"
    thaw_topic = stack.aws.topic_arn(stack.config.gas.thaw_topic)
    for _ in range(2):
        announce_restores(stack.aws, stack.config, thaw_topic)
    configure(standard_seconds=1)
    s3 = stack.client("s3")
    bucket = stack.config.gas.archive_bucket
    key = f"{stack.config.gas.archive_prefix}j1/red flower+1~x.vcf"
    data = archived(s3, key=key, body=b"annotated" * 1000, bucket=bucket)

    # When a Standard restore is requested
    before = datetime.now(timezone.utc)
    assert restore(s3, key=key, days=3, bucket=bucket) == 202
    after = datetime.now(timezone.utc)
    # Then it is ongoing at first
    assert restore_header(s3, key, bucket) == 'ongoing-request="true"'

    # Then the thaw queue gets S3's test event once and, a second later, the Completed event
    # once, read or not
    sqs = stack.client("sqs")
    url = stack.queue_url(stack.config.thaw.queue)
    test_event, completed = receive_all(sqs, url, until=2)
    assert (test_event["Event"], test_event["Bucket"]) == ("s3:TestEvent", bucket)
    [record] = completed["Records"]
    event_time = datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert event_time.replace(tzinfo=timezone.utc) - before >= timedelta(seconds=0.99)
    # with the fields AWS documents
    assert (record["eventSource"], record["awsRegion"], record["eventName"]) == (
        "aws:s3",
        REGION,
        "ObjectRestore:Completed",
    )
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] == quote_plus(key)
    assert unquote_plus(record["s3"]["object"]["key"]) == key
    head = s3.head_object(Bucket=bucket, Key=key)
    assert record["s3"]["object"]["size"] == len(data) == head["ContentLength"]
    assert record["s3"]["object"]["eTag"] == head["ETag"].strip('"')
    restored = record["glacierEventData"]["restoreEventData"]
    assert restored["lifecycleRestoreStorageClass"] == "GLACIER"
    expiry = datetime.strptime(
        restored["lifecycleRestorationExpiryTime"], "%Y-%m-%dT%H:%M:%S.000Z"
    ).replace(tzinfo=timezone.utc)
    assert expiry == expiry_date(head["Restore"])
    assert expiry in {
        midnight_after(before + timedelta(days=3)),
        midnight_after(after + timedelta(days=3)),
    }
    # and the object now reads, without announcing anything more
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_event_due_after_its_context_ended_is_dropped(aws_env: None) -> None:
    # Given a restore due in a second, announced to a topic, whose mock_aws context then ends
    s3_emulation.install()
    configure(INSTANT, standard_seconds=1)

    def bucket_announcing_to_a_queue() -> tuple[BaseClient, BaseClient, str]:
        s3 = boto3.client("s3", region_name=REGION, config=NO_RETRIES)
        s3.create_bucket(Bucket=BUCKET)
        topic_arn = boto3.client("sns", region_name=REGION).create_topic(Name="t")["TopicArn"]
        sqs = boto3.client("sqs", region_name=REGION)
        url = subscribe_queue(sqs, topic_arn)
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "TopicConfigurations": [
                    {"TopicArn": topic_arn, "Events": ["s3:ObjectRestore:Completed"]}
                ]
            },
        )
        return s3, sqs, url

    with mock_aws():
        s3, _, _ = bucket_announcing_to_a_queue()
        archived(s3)
        earlier = set(restore_timers())
        assert restore(s3) == 202
        [stale] = set(restore_timers()) - earlier

    with mock_aws():
        # and a later context with the same bucket, key, topic and queue
        s3, sqs, url = bucket_announcing_to_a_queue()
        archived(s3)
        # When the timer fires
        stale.join(timeout=10)
        assert not stale.is_alive()
        # Then it announces nothing (only the test event is there) and restores nothing
        assert event_names(receive_all(sqs, url, until=1)) == ["s3:TestEvent"]
        assert restore_header(s3) is None


def restore_timers() -> list[threading.Timer]:
    """The timers that are to complete restores (earlier tests' may still be waiting)."""
    return [
        t
        for t in threading.enumerate()
        if isinstance(t, threading.Timer) and getattr(t, "function", None) is s3_emulation._complete
    ]


# -- through the server -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stack_settings",
    [
        {
            "GAS_GAS_ARCHIVE_BACKEND": "s3",
            "GAS_LOCAL_EXPEDITED_CAPACITY": "false",
            "GAS_LOCAL_STANDARD_SECONDS": "0",
        }
    ],
)
def test_restore_through_the_server_announces_on_the_thaw_queue(server: Server) -> None:
    # Given the stack served for the s3 back end with no Expedited capacity, and an object
    # archived in its archive bucket
    s3 = server.aws.session.client("s3", config=NO_RETRIES)
    bucket = server.config.gas.archive_bucket
    key = f"{server.config.gas.archive_prefix}j1/abc"
    data = archived(s3, key=key, body=b"served" * 1000, bucket=bucket)

    # When an Expedited restore is requested, then the server refuses it
    with pytest.raises(ClientError) as excinfo:
        restore(s3, key=key, tier="Expedited", bucket=bucket)
    assert error(excinfo) == ("GlacierExpeditedRetrievalNotAvailable", 503)

    # When a Standard one is, then its completion reaches the thaw queue, after S3's test event
    assert restore(s3, key=key, tier="Standard", bucket=bucket) == 202
    url = server.queue_url(server.config.thaw.queue)
    bodies = receive_all(server.client("sqs"), url, until=2)
    assert event_names(bodies) == ["s3:TestEvent", "ObjectRestore:Completed"]
    assert bodies[1]["Records"][0]["s3"]["object"]["key"] == quote_plus(key)
    # and the object copies back
    s3.copy({"Bucket": bucket, "Key": key}, server.config.gas.results_bucket, "back")
    back = s3.get_object(Bucket=server.config.gas.results_bucket, Key="back")
    assert back["Body"].read() == data


def test_a_conditional_delete_never_deletes_a_write_that_landed_after_its_check(
    s3: BaseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a delete on condition of the first version's ETag, slow between its check and its
    # delete, and a second version written meanwhile
    from moto.s3.models import S3Backend

    first = s3.put_object(Bucket=BUCKET, Key="k", Body=b"first")["ETag"]
    checked, written = threading.Event(), threading.Event()
    delete_object = S3Backend.delete_object

    def slow_delete(self, *args, **kwargs):
        if threading.current_thread().name == "delete":
            checked.set()
            written.wait(0.5)  # the write cannot land while the delete holds the key
        return delete_object(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "delete_object", slow_delete)
    delete = threading.Thread(
        name="delete",
        target=lambda: _ignore_precondition(
            lambda: s3.delete_object(Bucket=BUCKET, Key="k", IfMatch=first)
        ),
    )
    delete.start()
    assert checked.wait(5)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"second")
    written.set()
    delete.join(5)
    # Then the second version is there: the delete came before it, or its condition failed
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"second"


def _ignore_precondition(call) -> None:
    try:
        call()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "PreconditionFailed"


class CountingBuffer:
    """A key's buffer that counts the bytes read from it."""

    def __init__(self, buffer) -> None:
        self.buffer, self.read_bytes = buffer, 0

    def read(self, size: int = -1) -> bytes:
        data = self.buffer.read(size)
        self.read_bytes += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self.buffer, name)


def counting_reads(key_name: str) -> CountingBuffer:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    key = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[BUCKET].keys[key_name]
    key._value_buffer = CountingBuffer(key._value_buffer)
    return key._value_buffer


SIZE = 4 * MIB


@pytest.mark.parametrize(
    "header, first, last",
    [
        ("bytes=1048576-2097151", MIB, 2 * MIB - 1),  # a part, as archive reads it
        (f"bytes={SIZE - 100}-", SIZE - 100, SIZE - 1),  # open-ended
        ("bytes=-10", SIZE - 10, SIZE - 1),  # a suffix
        (f"bytes={SIZE - 5}-{10 * SIZE}", SIZE - 5, SIZE - 1),  # past the end: up to the end
    ],
)
def test_a_ranged_get_reads_only_its_range(
    s3: BaseClient, header: str, first: int, last: int
) -> None:
    # Given a 4 MiB object
    data = bytes(range(256)) * (SIZE // 256)
    s3.put_object(Bucket=BUCKET, Key="big", Body=data)
    buffer = counting_reads("big")
    # When a range of it is read
    answer = s3.get_object(Bucket=BUCKET, Key="big", Range=header)
    # Then the answer is that range, as S3 gives it, and only its bytes were read
    assert answer["Body"].read() == data[first : last + 1]
    assert answer["ContentRange"] == f"bytes {first}-{last}/{SIZE}"
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert buffer.read_bytes == last - first + 1


def test_ranges_s3_answers_otherwise_are_answered_as_before(s3: BaseClient) -> None:
    s3.put_object(Bucket=BUCKET, Key="small", Body=b"0123456789")
    # Several ranges: the whole object, 200
    several = s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=0-1,5-6")
    assert several["Body"].read() == b"0123456789"
    assert several["ResponseMetadata"]["HTTPStatusCode"] == 200
    # A range that starts past the end: InvalidRange
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=10-")
    assert error(excinfo) == ("InvalidRange", 416)
    # No range, or a precondition that fails, as always
    assert s3.get_object(Bucket=BUCKET, Key="small")["Body"].read() == b"0123456789"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=0-1", IfMatch='"other"')
    assert error(excinfo) == ("PreconditionFailed", 412)


# -- CompleteMultipartUpload --------------------------------------------------------------------


def upload_in_parts(s3: BaseClient, key: str, parts: list[bytes], **checksum: str) -> dict:
    """Complete an upload of `parts`, each with its checksum if the upload has an algorithm;
    the object's HeadObject (checksums included)."""
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **checksum)["UploadId"]
    where = {"Bucket": BUCKET, "Key": key, "UploadId": upload_id}
    algorithm = {k: v for k, v in checksum.items() if k == "ChecksumAlgorithm"}
    listed = []
    for number, body in enumerate(parts, 1):
        answer = s3.upload_part(**where, PartNumber=number, Body=body, **algorithm)
        sums = {k: v for k, v in answer.items() if k.startswith("Checksum") and algorithm}
        listed.append({"PartNumber": number, "ETag": answer["ETag"], **sums})
    s3.complete_multipart_upload(**where, MultipartUpload={"Parts": listed})
    return s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")


@pytest.mark.parametrize(
    "checksum",
    [
        {},
        {"ChecksumAlgorithm": "CRC32"},
        {"ChecksumAlgorithm": "SHA256"},
        {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"},
    ],
    ids=["default", "crc32", "sha256", "crc32-full-object"],
)
def test_a_completed_upload_is_the_object_moto_makes(
    s3: BaseClient, monkeypatch: pytest.MonkeyPatch, checksum: dict[str, str]
) -> None:
    # Given three parts (two of 5 MiB, the smallest S3 takes but the last, and one byte)
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"!"]
    # When they are uploaded and completed, here and by moto's own CompleteMultipartUpload
    ours = upload_in_parts(s3, "ours", parts, **checksum)
    monkeypatch.setattr(FakeMultipart, "complete", s3_emulation._moto_complete)
    theirs = upload_in_parts(s3, "theirs", parts, **checksum)
    # Then the objects have the same bytes, ETag, size and checksums
    for key in ("ours", "theirs"):
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"".join(parts)

    def described(head: dict) -> dict:
        return {k: v for k, v in head.items() if k.startswith(("Checksum", "ETag", "Content"))}

    assert described(ours) == described(theirs)
    assert ours["ETag"].endswith('-3"') and ours["ContentLength"] == 10 * MIB + 1


@pytest.mark.parametrize(
    "parts, listed, code",
    [
        ([b"a" * MIB, b"b"], lambda etags: [(1, etags[0]), (2, etags[1])], "EntityTooSmall"),
        ([b"a"], lambda etags: [(1, '"0123"')], "InvalidPart"),
        ([b"a"], lambda etags: [(2, etags[0])], "InvalidPart"),
    ],
    ids=["small-part", "wrong-etag", "no-such-part"],
)
def test_a_completion_moto_refuses_is_refused_alike(
    s3: BaseClient, monkeypatch: pytest.MonkeyPatch, parts: list, listed: Any, code: str
) -> None:
    def complete(key: str) -> str:
        upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        where = {"Bucket": BUCKET, "Key": key, "UploadId": upload_id}
        etags = [
            s3.upload_part(**where, PartNumber=n, Body=body)["ETag"]
            for n, body in enumerate(parts, 1)
        ]
        entries = [{"PartNumber": n, "ETag": e} for n, e in listed(etags)]
        with pytest.raises(ClientError) as excinfo:
            s3.complete_multipart_upload(**where, MultipartUpload={"Parts": entries})
        return error(excinfo)[0]

    assert complete("ours") == code
    monkeypatch.setattr(FakeMultipart, "complete", s3_emulation._moto_complete)
    assert complete("theirs") == code


def test_a_completed_upload_outlives_a_deleted_copy_that_shares_its_parts(s3: BaseClient) -> None:
    # Given an object completed from two parts, and a CopyObject copy of it (moto's copy
    # shares the original's upload, parts included)
    parts = [os.urandom(5 * MIB), os.urandom(MIB)]
    upload_in_parts(s3, "original", parts)
    s3.copy_object(Bucket=BUCKET, Key="copy", CopySource={"Bucket": BUCKET, "Key": "original"})
    # When the copy is deleted
    s3.delete_object(Bucket=BUCKET, Key="copy")
    # Then the original still reads, whole and by range
    read = s3.get_object(Bucket=BUCKET, Key="original")["Body"].read()
    assert read == b"".join(parts)
    ranged = s3.get_object(
        Bucket=BUCKET, Key="original", Range=f"bytes={5 * MIB - 2}-{5 * MIB + 1}"
    )
    assert ranged["Body"].read() == parts[0][-2:] + parts[1][:2]


# -- conditional copies ----------------------------------------------------------------------------


def test_a_copy_pinned_to_an_etag_the_source_no_longer_has_is_refused(s3: BaseClient) -> None:
    # Given a source rewritten since its ETag was read
    first = s3.put_object(Bucket=BUCKET, Key="src", Body=b"first")["ETag"]
    second = s3.put_object(Bucket=BUCKET, Key="src", Body=b"second")["ETag"]
    source = {"Bucket": BUCKET, "Key": "src"}
    # Then a copy pinned to the old ETag is refused, as a copy in parts is
    with pytest.raises(ClientError) as refused:
        s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=source, CopySourceIfMatch=first)
    assert error(refused) == ("PreconditionFailed", 412)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as refused:
        s3.upload_part_copy(
            Bucket=BUCKET,
            Key="dst",
            UploadId=upload,
            PartNumber=1,
            CopySource=source,
            CopySourceIfMatch=first,
        )
    assert error(refused) == ("PreconditionFailed", 412)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="dst")
    # And one pinned to the ETag it has copies it
    s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=source, CopySourceIfMatch=second)
    assert s3.get_object(Bucket=BUCKET, Key="dst")["Body"].read() == b"second"
    part = s3.upload_part_copy(
        Bucket=BUCKET,
        Key="dst",
        UploadId=upload,
        PartNumber=1,
        CopySource=source,
        CopySourceIfMatch=second,
    )
    assert part["CopyPartResult"]["ETag"] == second


def test_a_copy_only_if_none_never_replaces_an_object(s3: BaseClient) -> None:
    s3.put_object(Bucket=BUCKET, Key="src", Body=b"new")
    s3.put_object(Bucket=BUCKET, Key="dst", Body=b"there before")
    source = {"Bucket": BUCKET, "Key": "src"}
    with pytest.raises(ClientError) as refused:
        s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=source, IfNoneMatch="*")
    assert error(refused) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=BUCKET, Key="dst")["Body"].read() == b"there before"
    s3.copy_object(Bucket=BUCKET, Key="free", CopySource=source, IfNoneMatch="*")
    assert s3.get_object(Bucket=BUCKET, Key="free")["Body"].read() == b"new"


# -- ETags ----------------------------------------------------------------------------------------


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def test_etags_read_while_large_objects_are_copied_are_their_md5s(s3: BaseClient) -> None:
    # Given an object above 16 MiB (moto read its ETag lazily, in 16 MiB chunks, from a buffer
    # other readers seek), and a listing and HEADs of the bucket running all the time
    data = os.urandom(16 * MIB + 512 * 1024)
    s3.put_object(Bucket=BUCKET, Key="big", Body=data)
    copies = 8
    done = threading.Event()

    def read_etags() -> None:
        while not done.is_set():
            for listed in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                s3.head_object(Bucket=BUCKET, Key=listed["Key"])

    readers = [threading.Thread(target=read_etags) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        # When it is copied, again and again
        for n in range(copies):
            s3.copy_object(
                Bucket=BUCKET, Key=f"copy{n}", CopySource={"Bucket": BUCKET, "Key": "big"}
            )
    finally:
        done.set()
        for reader in readers:
            reader.join(10)
    # Then every copy's ETag, however it is read, is the MD5 of its bytes
    expected = md5_etag(data)
    listed = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert listed == {"big": expected, **{f"copy{n}": expected for n in range(copies)}}
    assert {s3.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in listed} == {expected}


def multipart_etag(parts: list[bytes]) -> str:
    """S3's ETag of an unencrypted object uploaded in `parts`: the MD5 of their MD5s, "-N"."""
    md5s = b"".join(hashlib.md5(part, usedforsecurity=False).digest() for part in parts)
    return f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"'


def write_every_way(s3: BaseClient, data: bytes, asked: dict[str, str]) -> dict[str, Any]:
    """`data` put twice at "put", copied to "copy", and uploaded to "parts" as a part of its
    first 5 MiB and a part copied from "put" (its rest), each asking for the encryption
    `asked`: the ETags each write answered."""
    sse_c = {k: v for k, v in asked.items() if k.startswith("SSECustomer")}
    source = {"Bucket": BUCKET, "Key": "put"}
    puts = [s3.put_object(Bucket=BUCKET, Key="put", Body=data, **asked)["ETag"] for _ in "12"]
    copy_sse_c = {f"CopySource{k}": v for k, v in sse_c.items()}
    copied = s3.copy_object(Bucket=BUCKET, Key="copy", CopySource=source, **asked, **copy_sse_c)
    upload = {"Bucket": BUCKET, "Key": "parts"}
    upload["UploadId"] = s3.create_multipart_upload(**upload, **asked)["UploadId"]
    first = s3.upload_part(**upload, PartNumber=1, Body=data[: 5 * MIB], **sse_c)["ETag"]
    second = s3.upload_part_copy(
        **upload,
        PartNumber=2,
        CopySource=source,
        CopySourceRange=f"bytes={5 * MIB}-{len(data) - 1}",
        CopySourceIfMatch=puts[1],
        **sse_c,
        **copy_sse_c,
    )["CopyPartResult"]["ETag"]
    parts = [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
    completed = s3.complete_multipart_upload(**upload, MultipartUpload={"Parts": parts}, **sse_c)
    return {
        "puts": puts,
        "copy": copied["CopyObjectResult"]["ETag"],
        "part etags": [first, second],
        "parts": completed["ETag"],
    }


SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}


@pytest.mark.parametrize(
    "default, asked",
    [
        (None, {"ServerSideEncryption": "aws:kms"}),
        (None, {"ServerSideEncryption": "aws:kms:dsse"}),
        (None, SSE_C),
        ("aws:kms", {}),
        ("aws:kms:dsse", {}),
    ],
    ids=["sse-kms", "dsse-kms", "sse-c", "sse-kms-by-default", "dsse-kms-by-default"],
)
def test_objects_under_kms_or_sse_c_have_new_etags_that_are_not_md5s_read_alike_everywhere(
    s3: BaseClient, default: str | None, asked: dict[str, str]
) -> None:
    # Given a bucket encrypting with SSE-KMS or DSSE-KMS by default, or requests asking for
    # SSE-KMS, DSSE-KMS or SSE-C
    if default:
        encrypt_by_default(s3, BUCKET, default)
    data = os.urandom(5 * MIB) + b"tail"
    # When an object is put (twice), copied, and uploaded in parts (one of them copied)
    etags = write_every_way(s3, data, asked)
    # Then no ETag is an MD5 digest of the bytes, and every write made a new one
    puts, parts = etags["puts"], [data[: 5 * MIB], data[5 * MIB :]]
    assert len({*puts, etags["copy"], md5_etag(data)}) == 4
    assert etags["part etags"] != [md5_etag(part) for part in parts]
    assert etags["parts"] != multipart_etag(parts) and etags["parts"].endswith('-2"')
    assert all(re.fullmatch(r'"[0-9a-f]{32}(-2)?"', etag) for etag in [*puts, etags["copy"]])
    # And every read sees the ETag the write answered
    sse_c = {k: v for k, v in asked.items() if k.startswith("SSECustomer")}
    written = {"put": puts[1], "copy": etags["copy"], "parts": etags["parts"]}
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert {o["Key"]: o["ETag"] for o in listed} == written
    for key, etag in written.items():
        assert s3.head_object(Bucket=BUCKET, Key=key, **sse_c)["ETag"] == etag
        got = s3.get_object(Bucket=BUCKET, Key=key, IfMatch=etag, **sse_c)
        assert got["ETag"] == etag and got["Body"].read() == data
        with pytest.raises(ClientError) as not_modified:
            s3.get_object(Bucket=BUCKET, Key=key, IfNoneMatch=etag, **sse_c)
        assert error(not_modified) == ("304", 304)
    # and conditions on an earlier write's ETag fail, on this one's succeed
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=BUCKET, Key="put", IfMatch=puts[0])
    assert error(refused) == ("PreconditionFailed", 412)
    s3.delete_object(Bucket=BUCKET, Key="put", IfMatch=puts[1])
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["copy", "parts"]


@pytest.mark.parametrize(
    "default, asked",
    [(None, {}), (None, {"ServerSideEncryption": "AES256"}), ("AES256", {})],
    ids=["unencrypted", "sse-s3", "sse-s3-by-default"],
)
def test_objects_unencrypted_or_under_sse_s3_have_md5_etags(
    s3: BaseClient, default: str | None, asked: dict[str, str]
) -> None:
    if default:
        encrypt_by_default(s3, BUCKET, default)
    data = os.urandom(5 * MIB) + b"tail"
    etags = write_every_way(s3, data, asked)
    parts = [data[: 5 * MIB], data[5 * MIB :]]
    assert etags["puts"] == [md5_etag(data)] * 2 and etags["copy"] == md5_etag(data)
    assert etags["part etags"] == [md5_etag(part) for part in parts]
    assert etags["parts"] == multipart_etag(parts)


def stack_buckets(stack: Stack) -> list[str]:
    gas = stack.config.gas
    return [gas.inputs_bucket, gas.results_bucket, gas.archive_bucket]


def default_encryption(s3: BaseClient, bucket: str) -> str:
    [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    return rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]


def test_the_stacks_buckets_encrypt_with_sse_s3_by_default_and_objects_keep_md5_etags(
    stack: Stack,
) -> None:
    s3 = stack.client("s3")
    for bucket in stack_buckets(stack):
        assert default_encryption(s3, bucket) == "AES256"
        put = s3.put_object(Bucket=bucket, Key="k", Body=b"result")
        assert (put["ETag"], put["ServerSideEncryption"]) == (md5_etag(b"result"), "AES256")


@pytest.mark.parametrize("stack_settings", [{"GAS_LOCAL_BUCKET_ENCRYPTION": "aws:kms"}])
def test_a_stack_served_with_kms_buckets_gives_objects_etags_that_are_not_md5s(
    server: Server,
) -> None:
    s3 = server.client("s3")
    for bucket in stack_buckets(server):
        assert default_encryption(s3, bucket) == "aws:kms"
        put = s3.put_object(Bucket=bucket, Key="k", Body=b"result")
        assert put["ServerSideEncryption"] == "aws:kms"
        assert s3.head_object(Bucket=bucket, Key="k")["ETag"] == put["ETag"] != md5_etag(b"result")


# -- checksums S3 computes on copies ------------------------------------------------------------

IN_5_MIB_PARTS = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
CRC64NVME = {"ChecksumAlgorithm": "CRC64NVME"}


def full_object_crc64nvme(s3: BaseClient, key: str, bucket: str = BUCKET) -> str:
    """The CRC64NVME S3 keeps for the whole object (HeadObject, ChecksumMode ENABLED)."""
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT", head
    return head["ChecksumCRC64NVME"]


def copy_in_parts(s3: BaseClient, source: str, key: str, config: TransferConfig) -> None:
    """s3transfer's multipart copy with S3 computing CRC64NVME checksums (the archive's above
    5 GiB: CreateMultipartUpload with the algorithm, UploadPartCopy, Complete with the parts'
    checksums)."""
    s3.copy({"Bucket": BUCKET, "Key": source}, BUCKET, key, ExtraArgs=CRC64NVME, Config=config)


@pytest.mark.parametrize("encryption", [None, "aws:kms"], ids=["unencrypted", "sse-kms"])
def test_copies_have_equal_full_object_checksums_exactly_when_their_bytes_are_equal(
    s3: BaseClient, encryption: str | None
) -> None:
    # Given a bucket (encrypting with SSE-KMS or not), a result and another that differs from
    # it in one byte
    if encryption:
        encrypt_by_default(s3, BUCKET, encryption)
    data = os.urandom(12 * MIB)
    s3.put_object(Bucket=BUCKET, Key="result", Body=data)
    s3.put_object(Bucket=BUCKET, Key="other", Body=data[:-1] + bytes([data[-1] ^ 1]))
    # When each is archived, in one CopyObject or in 5 MiB parts, and the first archive is
    # copied back in 6 MiB parts and in one request
    s3.copy_object(
        Bucket=BUCKET, Key="archive", CopySource={"Bucket": BUCKET, "Key": "result"}, **CRC64NVME
    )
    copy_in_parts(s3, "result", "archive-in-parts", IN_5_MIB_PARTS)
    copy_in_parts(s3, "other", "other-in-parts", IN_5_MIB_PARTS)
    in_6_mib_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=6 * MIB)
    copy_in_parts(s3, "archive", "back-in-parts", in_6_mib_parts)
    s3.copy_object(
        Bucket=BUCKET, Key="back", CopySource={"Bucket": BUCKET, "Key": "archive"}, **CRC64NVME
    )
    # Then the copies of the result, whatever their part layout, have one full-object
    # checksum, and the copy of the other result another
    assert s3.head_object(Bucket=BUCKET, Key="archive-in-parts")["ETag"].endswith('-3"')
    assert s3.head_object(Bucket=BUCKET, Key="back-in-parts")["ETag"].endswith('-2"')
    copies = ["archive", "archive-in-parts", "back-in-parts", "back"]
    [checksum] = {full_object_crc64nvme(s3, key) for key in copies}
    assert full_object_crc64nvme(s3, "other-in-parts") != checksum


def test_a_part_copied_into_an_upload_with_a_checksum_algorithm_has_its_checksum(
    s3: BaseClient,
) -> None:
    # Given an object, one holding its last 5 MiB alone with the checksum S3 computes on a
    # copy, and an upload created with CRC64NVME
    data = os.urandom(7 * MIB)
    s3.put_object(Bucket=BUCKET, Key="source", Body=data)
    s3.put_object(Bucket=BUCKET, Key="tail-bytes", Body=data[2 * MIB :])
    tail = {"Bucket": BUCKET, "Key": "tail-bytes"}
    s3.copy_object(Bucket=BUCKET, Key="tail", CopySource=tail, **CRC64NVME)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="copy", **CRC64NVME)["UploadId"]
    # When that range is copied into the upload as a part
    part = s3.upload_part_copy(
        Bucket=BUCKET,
        Key="copy",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": BUCKET, "Key": "source"},
        CopySourceRange=f"bytes={2 * MIB}-{7 * MIB - 1}",
    )["CopyPartResult"]
    # Then CopyPartResult has the part's checksum: the one S3 gives those bytes
    assert part["ChecksumCRC64NVME"] == full_object_crc64nvme(s3, "tail")


def test_a_copy_back_from_a_restored_archive_has_the_archives_checksum(s3: BaseClient) -> None:
    # Given a result archived into GLACIER by a CopyObject computing CRC64NVME, then restored
    data = os.urandom(11 * MIB)
    s3.put_object(Bucket=BUCKET, Key="result", Body=data)
    s3.copy_object(
        Bucket=BUCKET,
        Key="archive",
        CopySource={"Bucket": BUCKET, "Key": "result"},
        StorageClass="GLACIER",
        **CRC64NVME,
    )
    assert restore(s3, key="archive") == 202
    # When it is copied back into STANDARD in 5 MiB parts, and in one request
    s3.copy(
        {"Bucket": BUCKET, "Key": "archive"},
        BUCKET,
        "back-in-parts",
        ExtraArgs={"StorageClass": "STANDARD", **CRC64NVME},
        Config=IN_5_MIB_PARTS,
    )
    s3.copy_object(
        Bucket=BUCKET, Key="back", CopySource={"Bucket": BUCKET, "Key": "archive"}, **CRC64NVME
    )
    # Then both copies have the archive's checksum
    checksum = full_object_crc64nvme(s3, "archive")
    assert full_object_crc64nvme(s3, "back-in-parts") == full_object_crc64nvme(s3, "back")
    assert full_object_crc64nvme(s3, "back") == checksum
