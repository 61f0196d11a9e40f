"""The Glacier vault: multipart uploads completed again, retrievals and their notices, job output
kept a day, inventories, DeleteArchive repeated.

On AWS these need a vault: the suite makes one when the account still has the vault API (it
takes no new accounts since 2025-12-15), and they skip otherwise. The notice test waits for an
Expedited retrieval (1-5 minutes).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_for
from tests.contract.account import Account, error_code, local_only, status, unique
from util.archives import backend_named
from util.archives.layout import MIB
from util.archives.vault.glacier import combine_tree_hashes, tree_hash_leaves
from util.resources import queue_policy, thaw_topic_policy


def utc(iso: str | None) -> datetime:
    """Glacier's ISO 8601 dates (``2012-03-20T17:03:43.221Z``); none is the epoch."""
    return datetime.fromisoformat((iso or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))


def upload(account: Account, vault: str, data: bytes) -> str:
    """An archive of `data` made in one request: its id, deleted at the end of the session."""
    glacier = account.client("glacier")
    archive = str(glacier.upload_archive(vaultName=vault, body=data)["archiveId"])
    account.cleanups.append(lambda: glacier.delete_archive(vaultName=vault, archiveId=archive))
    return archive


def test_a_multipart_upload_completed_again_answers_the_same_archive(
    account: Account, vault: str
) -> None:
    # Given an upload of 2.5 MiB in 1 MiB parts, every part sent
    glacier = account.client("glacier")
    data = os.urandom(2 * MIB + MIB // 2)
    upload_id = glacier.initiate_multipart_upload(
        vaultName=vault, archiveDescription=unique(), partSize=str(MIB)
    )["uploadId"]
    for offset in range(0, len(data), MIB):
        part = data[offset : offset + MIB]
        glacier.upload_multipart_part(
            vaultName=vault,
            uploadId=upload_id,
            range=f"bytes {offset}-{offset + len(part) - 1}/*",
            body=part,
        )
    tree_hash = combine_tree_hashes(tree_hash_leaves(data))

    def complete() -> str:
        return str(
            glacier.complete_multipart_upload(
                vaultName=vault, uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash
            )["archiveId"]
        )

    # When it is completed, and completed again (its first answer lost)
    first = complete()
    account.cleanups.append(lambda: glacier.delete_archive(vaultName=vault, archiveId=first))
    # Then the second completion answers the same archive: no second archive is made
    assert complete() == first


@local_only("AWS refuses Expedited only when it has no capacity: [local] expedited_capacity")
def test_no_expedited_capacity_is_insufficient_capacity(fast: Account) -> None:
    # Given an archive, and no Expedited capacity
    vault = fast.config.gas.vault
    archive = upload(fast, vault, os.urandom(1000))
    # When an Expedited retrieval is asked for
    with pytest.raises(ClientError) as refused:
        fast.client("glacier", attempts=1).initiate_job(
            vaultName=vault,
            jobParameters={"Type": "archive-retrieval", "ArchiveId": archive, "Tier": "Expedited"},
        )
    # Then Glacier refuses it: 503 InsufficientCapacityException
    assert (error_code(refused.value), status(refused.value)) == (
        "InsufficientCapacityException",
        503,
    )


def test_a_finished_retrieval_is_announced_on_its_topic_and_its_output_read(
    account: Account, vault: str
) -> None:
    # Given a topic Glacier may publish on (the thaw topic's policy, util/resources.py) with a
    # queue subscribed (the thaw queue's), and an archive
    sns, sqs = account.client("sns"), account.client("sqs")
    topic = str(sns.create_topic(Name=unique())["TopicArn"])
    account.cleanups.append(lambda: sns.delete_topic(TopicArn=topic))
    policy = thaw_topic_policy(backend_named("vault"), topic, None, account.account_id())
    sns.set_topic_attributes(
        TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps(policy)
    )
    queue = account.queue()
    queue_arn = account.queue_arn(queue)
    sqs.set_queue_attributes(
        QueueUrl=queue, Attributes={"Policy": json.dumps(queue_policy(queue_arn, topic))}
    )
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    data = os.urandom(1000)
    archive = upload(account, vault, data)
    # When an Expedited retrieval naming the topic is started (1-5 minutes on AWS)
    description = json.dumps({"job_id": unique("job"), "request": unique()})
    try:
        job = account.client("glacier", attempts=1).initiate_job(
            vaultName=vault,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive,
                "Tier": "Expedited",
                "SNSTopic": topic,
                "Description": description,
            },
        )["jobId"]
    except ClientError as exc:
        if account.local or error_code(exc) != "InsufficientCapacityException":
            raise
        pytest.skip("Glacier has no Expedited capacity at the moment")

    def notice() -> dict | None:
        messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5).get("Messages", [])
        return json.loads(messages[0]["Body"]) if messages else None

    envelope = wait_for(notice, timeout=account.waits, what="the retrieval's notice")
    # Then its notice comes in the topic's envelope: the job as DescribeJob gives it, finished
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
    job_notice = json.loads(envelope["Message"])
    assert job_notice["JobId"] == job
    assert job_notice["Action"] == "ArchiveRetrieval"
    assert job_notice["ArchiveId"] == archive
    assert job_notice["JobDescription"] == description
    assert (job_notice["Completed"], job_notice["StatusCode"]) == (True, "Succeeded")
    # And the job's output is the archive
    output = account.client("glacier").get_job_output(vaultName=vault, jobId=job)
    assert output["body"].read() == data


@local_only("Glacier keeps a job at least 24 hours; [local] day_seconds makes a day 3 s")
def test_a_finished_job_is_forgotten_after_a_day(fast: Account) -> None:
    # Given an archive retrieved (Standard: 1 s here)
    glacier, vault = fast.client("glacier"), fast.config.gas.vault
    data = os.urandom(1000)
    archive = upload(fast, vault, data)
    job = glacier.initiate_job(
        vaultName=vault,
        jobParameters={"Type": "archive-retrieval", "ArchiveId": archive, "Tier": "Standard"},
    )["jobId"]
    wait_for(lambda: glacier.describe_job(vaultName=vault, jobId=job)["Completed"], what="the job")
    assert glacier.get_job_output(vaultName=vault, jobId=job)["body"].read() == data

    # When a day has passed
    def forgotten() -> bool:
        try:
            glacier.describe_job(vaultName=vault, jobId=job)
            return False
        except ClientError as exc:
            return error_code(exc) == "ResourceNotFoundException"

    wait_for(forgotten, timeout=15, what="the job to be forgotten")
    # Then its output is gone too
    with pytest.raises(ClientError) as gone:
        glacier.get_job_output(vaultName=vault, jobId=job)
    assert error_code(gone.value) == "ResourceNotFoundException"


def test_a_new_vault_has_no_inventory(account: Account, vault: str) -> None:
    # Given a vault made for this run (no inventory taken yet: up to a day on AWS)
    glacier = account.client("glacier")
    # Then it has no inventory date, and an inventory retrieval is refused
    assert "LastInventoryDate" not in glacier.describe_vault(vaultName=vault)
    with pytest.raises(ClientError) as refused:
        glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    assert error_code(refused.value) == "ResourceNotFoundException"


@local_only(
    "a vault's inventory is taken about daily; [local] inventory_delay_seconds, day_seconds"
)
def test_an_inventory_lists_the_vault_as_of_its_date(fast: Account) -> None:
    # Given an archive made before an inventory was taken, and one made just now
    glacier, vault = fast.client("glacier"), fast.config.gas.vault
    first = upload(fast, vault, os.urandom(1000))
    made = datetime.now(timezone.utc)
    wait_for(
        lambda: utc(glacier.describe_vault(vaultName=vault).get("LastInventoryDate")) > made,
        timeout=15,
        what="an inventory taken after the first archive",
    )
    before_second = datetime.now(timezone.utc)
    second = upload(fast, vault, os.urandom(1000))
    after_second = datetime.now(timezone.utc)
    # When the inventory is retrieved
    job = glacier.initiate_job(
        vaultName=vault, jobParameters={"Type": "inventory-retrieval", "Tier": "Standard"}
    )["jobId"]
    wait_for(lambda: glacier.describe_job(vaultName=vault, jobId=job)["Completed"], what="the job")
    inventory = json.load(glacier.get_job_output(vaultName=vault, jobId=job)["body"])
    listed = {a["ArchiveId"] for a in inventory["ArchiveList"]}
    date = utc(inventory["InventoryDate"])
    # Then it lists the vault as of its date: the first archive, and the second only if the
    # inventory was taken after it was made
    assert first in listed
    if date < before_second:
        assert second not in listed
    elif date > after_second:
        assert second in listed


def test_deleting_a_deleted_archive_succeeds(account: Account, vault: str) -> None:
    # Given an archive deleted
    glacier = account.client("glacier")
    archive = upload(account, vault, os.urandom(1000))
    glacier.delete_archive(vaultName=vault, archiveId=archive)
    # When it is deleted again (its first answer lost)
    again = glacier.delete_archive(vaultName=vault, archiveId=archive)
    # Then Glacier answers as the first time: 204, no error
    assert status(again) == 204
