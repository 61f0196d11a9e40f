"""RestoreObject's answers, the restored copy's expiry, and S3's ObjectRestore:Completed event.

On AWS the `restored` object's Expedited restore is waited for (1-5 minutes), once for the
three tests that need a restored copy; Standard restores are started and never waited for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_for
from tests.contract.account import Account, error_code, local_only, status, unique


def archived(account: Account, storage_class: str = "GLACIER", name: str = "") -> str:
    """A result archived in the archive bucket under `storage_class`: its key."""
    key = f"{account.config.gas.archive_prefix}{name or unique()}"
    account.client("s3").put_object(
        Bucket=account.config.gas.archive_bucket,
        Key=key,
        Body=os.urandom(1000),
        StorageClass=storage_class,
    )
    return key


def restore(account: Account, key: str, tier: str, days: int = 1) -> int:
    """RestoreObject's HTTP status (one attempt: a 503 is an answer here)."""
    response = account.client("s3", attempts=1).restore_object(
        Bucket=account.config.gas.archive_bucket,
        Key=key,
        RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
    )
    return status(response)


def restore_header(account: Account, key: str) -> str | None:
    head = account.client("s3").head_object(Bucket=account.config.gas.archive_bucket, Key=key)
    return head.get("Restore")


def midnight_after(moment: datetime) -> datetime:
    return datetime.combine(
        moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc
    )


@dataclass
class Restored:
    key: str
    requested: datetime  # just before the RestoreObject
    completed: datetime  # just after its completion was seen


@pytest.fixture(scope="module")
def restored(account: Account) -> Iterator[Restored]:
    """An archived result whose Expedited restore (1 day) has completed; on AWS, 1-5 minutes.
    Its key needs URL-encoding in events."""
    key = archived(account, name=f"{unique()}/a result+1.vcf")
    requested = datetime.now(timezone.utc)
    try:
        assert restore(account, key, "Expedited") == 202
    except ClientError as exc:
        if account.local or error_code(exc) != "GlacierExpeditedRetrievalNotAvailable":
            raise
        pytest.skip("AWS has no Expedited capacity at the moment")
    wait_for(
        lambda: 'ongoing-request="false"' in (restore_header(account, key) or ""),
        timeout=account.waits,
        what="the Expedited restore",
        every=0.05 if account.local else 10,
    )
    yield Restored(key, requested, datetime.now(timezone.utc))


def test_a_restore_starts_with_202_and_the_object_stays_unreadable_until_it_completes(
    account: Account,
) -> None:
    # Given an archived result
    key = archived(account)
    # When a Standard restore is asked for
    # Then S3 accepts it, 202, says it is under way, and the object cannot be read yet
    assert restore(account, key, "Standard") == 202
    assert restore_header(account, key) == 'ongoing-request="true"'
    with pytest.raises(ClientError) as unreadable:
        account.client("s3").get_object(Bucket=account.config.gas.archive_bucket, Key=key)
    assert (error_code(unreadable.value), status(unreadable.value)) == ("InvalidObjectState", 403)


def test_a_second_restore_while_one_is_in_progress_is_409(account: Account) -> None:
    # Given an archived result being restored
    key = archived(account)
    assert restore(account, key, "Standard") == 202
    # When a restore is asked for again
    with pytest.raises(ClientError) as again:
        restore(account, key, "Standard")
    # Then S3 says one is under way already: 409 RestoreAlreadyInProgress
    assert (error_code(again.value), status(again.value)) == ("RestoreAlreadyInProgress", 409)


def test_expedited_is_refused_for_deep_archive(account: Account) -> None:
    # Given a result archived in DEEP_ARCHIVE
    key = archived(account, "DEEP_ARCHIVE")
    # When an Expedited restore is asked for
    with pytest.raises(ClientError) as refused:
        restore(account, key, "Expedited")
    # Then S3 refuses it (a client error: the tier is not available for the class) and
    # starts no restore
    assert 400 <= status(refused.value) < 500, refused.value.response
    assert restore_header(account, key) is None


@local_only("AWS refuses Expedited only when it has no capacity: [local] expedited_capacity")
def test_no_expedited_capacity_is_503(fast: Account) -> None:
    # Given an archived result, and no Expedited capacity
    key = archived(fast)
    # When an Expedited restore is asked for
    with pytest.raises(ClientError) as refused:
        restore(fast, key, "Expedited")
    # Then S3 refuses it, 503 GlacierExpeditedRetrievalNotAvailable, and starts nothing
    assert (error_code(refused.value), status(refused.value)) == (
        "GlacierExpeditedRetrievalNotAvailable",
        503,
    )
    assert restore_header(fast, key) is None


def test_a_restored_copy_expires_at_the_midnight_utc_after_its_days(
    account: Account, restored: Restored
) -> None:
    # Given a result restored for 1 day
    header = restore_header(account, restored.key) or ""
    # Then its copy expires at the first midnight UTC after the restore's time plus 1 day
    assert header.startswith('ongoing-request="false", expiry-date="'), header
    expiry = parsedate_to_datetime(header.split('expiry-date="')[1].rstrip('"'))
    possible = {
        midnight_after(moment + timedelta(days=1))
        for moment in (restored.requested, restored.completed)
    }
    assert expiry in possible, (expiry, possible)


def test_a_restore_of_a_restored_object_is_200(account: Account, restored: Restored) -> None:
    # Given a restored result
    # When a restore is asked for again
    # Then S3 answers 200 (the copy's life is extended; no new restore, no new event)
    assert restore(account, restored.key, "Expedited") == 200
    assert 'ongoing-request="false"' in (restore_header(account, restored.key) or "")


def test_a_completed_restore_is_announced_on_the_thaw_topic(
    account: Account, restored: Restored
) -> None:
    # Given the archive bucket announcing s3:ObjectRestore:Completed on the thaw topic, and a
    # result whose restore completed
    gas = account.config.gas
    sqs, queue = account.client("sqs"), account.queue_url(account.config.thaw.queue)

    def event() -> dict | None:
        for message in sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
        ).get("Messages", []):
            envelope = json.loads(message["Body"])
            for record in json.loads(envelope["Message"]).get("Records", []):
                if unquote_plus(record["s3"]["object"]["key"]) == restored.key:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                    return record
        return None

    # When the thaw queue is read
    record = wait_for(event, timeout=account.waits, what="the restore's event")
    # Then one S3 event names the bucket and the (URL-encoded) key, and when the copy expires
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectRestore:Completed"
    assert record["s3"]["bucket"]["name"] == gas.archive_bucket
    restore_data = record["glacierEventData"]["restoreEventData"]
    assert restore_data["lifecycleRestoreStorageClass"] == "GLACIER"
    expiry = datetime.fromisoformat(restore_data["lifecycleRestorationExpiryTime"])
    assert expiry > restored.completed


@local_only("a restored copy lives its Days; [local] day_seconds makes a day 3 s")
def test_a_restored_copy_expires_after_its_days(fast: Account) -> None:
    # Given a result restored for 1 day
    key = archived(fast)
    assert restore(fast, key, "Standard") == 202
    wait_for(
        lambda: 'ongoing-request="false"' in (restore_header(fast, key) or ""),
        what="the restore",
    )
    # When the day has passed
    wait_for(lambda: restore_header(fast, key) is None, timeout=15, what="the copy to expire")
    # Then the object cannot be read again, and a new restore starts from the beginning
    with pytest.raises(ClientError) as unreadable:
        fast.client("s3").get_object(Bucket=fast.config.gas.archive_bucket, Key=key)
    assert error_code(unreadable.value) == "InvalidObjectState"
    assert restore(fast, key, "Standard") == 202
