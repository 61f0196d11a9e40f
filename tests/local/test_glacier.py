"""The Glacier emulation (localaws.glacier) as boto3 sees it, in process and from a server."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.utils import calculate_tree_hash
from moto import mock_aws
from moto.glacier.models import glacier_backends
from moto.server import ThreadedMotoServer

from localaws.glacier import NOTIFICATION_SUBJECT, install
from localaws.settings import DEFAULT_SETTINGS, Settings, configure
from tests.conftest import wait_for
from util.util_config import ConfigError, load

MIB = 1024 * 1024
VAULT = "test-vault"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account for the access key "testing"
NO_RETRIES = Config(retries={"total_max_attempts": 1})
# Every tier done at once unless a test says otherwise: most tests want finished jobs.
INSTANT = replace(DEFAULT_SETTINGS, expedited_seconds=0, standard_seconds=0, bulk_seconds=0)
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:glacier-notices"
# Every field of Glacier's completion notice: DescribeJob's answer for the job.
NOTICE_FIELDS = {
    "Action",
    "ArchiveId",
    "ArchiveSHA256TreeHash",
    "ArchiveSizeInBytes",
    "Completed",
    "CompletionDate",
    "CreationDate",
    "InventorySizeInBytes",
    "JobDescription",
    "JobId",
    "RetrievalByteRange",
    "SHA256TreeHash",
    "SNSTopic",
    "StatusCode",
    "StatusMessage",
    "Tier",
    "VaultARN",
}


def tree_hash(data: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(data))


def sample(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from MiB to MiB, so misplaced parts change the hash."""
    pattern = bytes((seed + i) % 251 for i in range(4096))
    return (pattern * (size // len(pattern) + 1))[:size]


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no endpoint from the environment, and the emulation installed
    with jobs that complete at once."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_GLACIER"):
        monkeypatch.delenv(name, raising=False)
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SECURITY_TOKEN",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    install(INSTANT)


@pytest.fixture
def glacier(fake_aws: None) -> Iterator[BaseClient]:
    with mock_aws():
        client = boto3.client("glacier", region_name=REGION, config=NO_RETRIES)
        client.create_vault(vaultName=VAULT)
        yield client


def error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def upload_parts(
    client: BaseClient, data: bytes, part_size: int = MIB, description: str = ""
) -> str:
    """Initiate a multipart upload and send `data` in parts; return the upload id."""
    upload_id = client.initiate_multipart_upload(
        vaultName=VAULT,
        partSize=str(part_size),
        archiveDescription=description,
    )["uploadId"]
    for first in range(0, len(data), part_size):
        part = data[first : first + part_size]
        response = client.upload_multipart_part(
            vaultName=VAULT,
            uploadId=upload_id,
            body=part,
            range=f"bytes {first}-{first + len(part) - 1}/*",
        )
        assert response["checksum"] == tree_hash(part)
    return upload_id


def finished_job(client: BaseClient, parameters: dict[str, str]) -> dict:
    """A job of a tier that takes 0 s, so it is done as soon as it is initiated."""
    job_id = client.initiate_job(vaultName=VAULT, jobParameters=parameters)["jobId"]
    job = client.describe_job(vaultName=VAULT, jobId=job_id)
    assert job["Completed"] and job["StatusCode"] == "Succeeded"
    return job


def inventory(client: BaseClient) -> dict[str, dict]:
    job = finished_job(client, {"Type": "inventory-retrieval"})
    output = client.get_job_output(vaultName=VAULT, jobId=job["JobId"])
    return {a["ArchiveId"]: a for a in json.load(output["body"])["ArchiveList"]}


def described(client: BaseClient, job_id: str) -> dict:
    """DescribeJob's fields as botocore parses them (it leaves out the null ones)."""
    job = client.describe_job(vaultName=VAULT, jobId=job_id)
    del job["ResponseMetadata"]
    return job


def utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def subscribe_queue(sns: BaseClient, sqs: BaseClient) -> str:
    """A queue subscribed to TOPIC_ARN, as the local stack subscribes the thaw queue."""
    assert sns.create_topic(Name=TOPIC_ARN.rsplit(":", 1)[1])["TopicArn"] == TOPIC_ARN
    url = sqs.create_queue(QueueName="glacier-notices")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=TOPIC_ARN, Protocol="sqs", Endpoint=queue_arn)
    return url


def receive_notices(sqs: BaseClient, url: str, count: int) -> dict[str, dict]:
    """Exactly `count` completion notices from the queue, by job id, with their envelopes
    checked; a further long poll finds no second notice."""
    envelopes: list[dict] = []

    def receive() -> bool:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            envelopes.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(envelopes) >= count

    wait_for(receive, timeout=15, what=f"{count} completion notices")
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert len(envelopes) == count
    assert all(
        e["Type"] == "Notification"
        and e["TopicArn"] == TOPIC_ARN
        and e["Subject"] == NOTIFICATION_SUBJECT
        for e in envelopes
    )
    notices = [json.loads(e["Message"]) for e in envelopes]
    assert all(set(notice) == NOTICE_FIELDS for notice in notices)
    return {notice["JobId"]: notice for notice in notices}


def test_multipart_upload_round_trip(glacier: BaseClient) -> None:
    data = sample(2 * MIB + 3 * 4096 + 5)  # three parts, the last one short
    upload_id = upload_parts(glacier, data, description="sample.vcf")

    parts = glacier.list_parts(vaultName=VAULT, uploadId=upload_id)
    assert parts["ArchiveDescription"] == "sample.vcf"
    assert parts["PartSizeInBytes"] == MIB
    assert "Marker" not in parts  # null: everything fits in one page
    assert [(p["RangeInBytes"], p["SHA256TreeHash"]) for p in parts["Parts"]] == [
        (f"{first}-{min(first + MIB, len(data)) - 1}", tree_hash(data[first : first + MIB]))
        for first in range(0, len(data), MIB)
    ]

    done = glacier.complete_multipart_upload(
        vaultName=VAULT,
        uploadId=upload_id,
        archiveSize=str(len(data)),
        checksum=tree_hash(data),
    )
    archive_id = done["archiveId"]
    assert done["checksum"] == tree_hash(data)
    assert done["location"] == f"/{ACCOUNT}/vaults/{VAULT}/archives/{archive_id}"
    assert len(archive_id) == 138
    assert glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"] == []

    configure(expedited_seconds=3600)
    pending_id = glacier.initiate_job(
        vaultName=VAULT,
        jobParameters={
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "Tier": "Expedited",
        },
    )["jobId"]
    pending = glacier.describe_job(vaultName=VAULT, jobId=pending_id)
    assert not pending["Completed"]
    assert pending["ArchiveSizeInBytes"] == len(data)
    assert pending["ArchiveSHA256TreeHash"] == tree_hash(data)
    assert "SHA256TreeHash" not in pending  # null while a whole-archive job is in progress

    job = finished_job(glacier, {"Type": "archive-retrieval", "ArchiveId": archive_id})
    assert job["SHA256TreeHash"] == tree_hash(data)
    assert job["RetrievalByteRange"] == f"0-{len(data) - 1}"
    output = glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"])
    assert output["status"] == 200 and "contentRange" not in output
    assert output["body"].read() == data
    assert output["checksum"] == tree_hash(data)
    assert output["archiveDescription"] == "sample.vcf"

    entry = inventory(glacier)[archive_id]
    assert entry["ArchiveDescription"] == "sample.vcf"
    assert entry["Size"] == len(data)
    assert entry["SHA256TreeHash"] == tree_hash(data)
    assert glacier.describe_vault(vaultName=VAULT)["SizeInBytes"] == len(data)


def test_part_checksum_mismatch_is_rejected(glacier: BaseClient) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_multipart_part(
            vaultName=VAULT,
            uploadId=upload_id,
            body=sample(MIB),
            range=f"bytes 0-{MIB - 1}/*",
            checksum=tree_hash(b"other"),
        )
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    assert "Checksum mismatch" in str(excinfo.value)
    assert glacier.list_parts(vaultName=VAULT, uploadId=upload_id)["Parts"] == []


def test_whole_checksum_mismatch_is_rejected(glacier: BaseClient) -> None:
    data = sample(3 * MIB)
    upload_id = upload_parts(glacier, data)
    with pytest.raises(ClientError) as excinfo:
        glacier.complete_multipart_upload(
            vaultName=VAULT,
            uploadId=upload_id,
            archiveSize=str(len(data)),
            checksum=tree_hash(data[::-1]),
        )
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    assert "Checksum mismatch" in str(excinfo.value)


@pytest.mark.parametrize("part_size", ["1000000", str(3 * MIB), str(8192 * MIB), "0", "abc"])
def test_invalid_part_size_is_rejected(glacier: BaseClient, part_size: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        glacier.initiate_multipart_upload(vaultName=VAULT, partSize=part_size)
    assert error(excinfo) == ("InvalidParameterValueException", 400)


@pytest.mark.parametrize("part_size", [MIB, 4096 * MIB])
def test_part_size_bounds_are_accepted(glacier: BaseClient, part_size: int) -> None:
    glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(part_size))


@pytest.mark.parametrize(
    "size, content_range",
    [
        (2 * MIB, f"bytes 0-{2 * MIB - 1}/*"),  # larger than the part size
        (MIB, f"bytes {MIB // 2}-{MIB // 2 + MIB - 1}/*"),  # not at a multiple of the part size
        (MIB, f"bytes 0-{MIB - 2}/*"),  # range and body lengths differ
        (MIB, f"bytes 0-{MIB - 1}/{MIB}"),  # AWS wants "/*"
    ],
    ids=["too-large", "unaligned", "length-mismatch", "total-instead-of-star"],
)
def test_misshapen_part_is_rejected(glacier: BaseClient, size: int, content_range: str) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_multipart_part(
            vaultName=VAULT, uploadId=upload_id, body=sample(size), range=content_range
        )
    assert error(excinfo) == ("InvalidParameterValueException", 400)


def test_part_without_content_range_is_rejected(glacier: BaseClient) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_multipart_part(vaultName=VAULT, uploadId=upload_id, body=b"x")
    assert error(excinfo) == ("MissingParameterValueException", 400)


def test_a_repeated_complete_answers_the_same_archive(glacier: BaseClient) -> None:
    # AWS: "Complete Multipart Upload is an idempotent operation": repeated within a short
    # period it answers the same archive id and makes no second archive.
    data = sample(MIB + 7)
    upload_id = upload_parts(glacier, data)
    complete = dict(
        vaultName=VAULT, uploadId=upload_id, archiveSize=str(len(data)), checksum=tree_hash(data)
    )
    first = glacier.complete_multipart_upload(**complete)["archiveId"]
    again = glacier.complete_multipart_upload(**complete)["archiveId"]
    assert again == first
    assert list(inventory(glacier)) == [first]
    # A completed upload is no longer an upload: not listed, no parts, nothing to abort
    assert glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"] == []
    for call in (glacier.list_parts, glacier.abort_multipart_upload):
        with pytest.raises(ClientError) as error:
            call(vaultName=VAULT, uploadId=upload_id)
        assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Repeated with another size, it is refused
    with pytest.raises(ClientError) as error:
        glacier.complete_multipart_upload(**{**complete, "archiveSize": str(len(data) - 1)})
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"


@pytest.mark.parametrize(
    "parts, archive_size",
    [
        ([(0, MIB), (2 * MIB, MIB)], 3 * MIB),  # gap at the second part
        ([(MIB, MIB)], 2 * MIB),  # nothing at byte 0
        ([(0, MIB // 2), (MIB, MIB)], MIB + MIB // 2),  # short part that is not the last
        ([(0, MIB), (MIB, MIB)], 3 * MIB),  # parts cover less than the archive size
        ([(0, MIB), (MIB, MIB)], MIB),  # parts cover more than the archive size
        ([], 1),  # no parts at all
    ],
    ids=[
        "gap",
        "no-first-part",
        "short-middle-part",
        "too-few-bytes",
        "too-many-bytes",
        "no-parts",
    ],
)
def test_incomplete_parts_are_rejected_at_complete(
    glacier: BaseClient, parts: list[tuple[int, int]], archive_size: int
) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    bodies = [sample(size, seed=first) for first, size in parts]
    for (first, size), body in zip(parts, bodies, strict=True):
        glacier.upload_multipart_part(
            vaultName=VAULT,
            uploadId=upload_id,
            body=body,
            range=f"bytes {first}-{first + size - 1}/*",
        )
    with pytest.raises(ClientError) as excinfo:  # the checksum is right for what was sent
        glacier.complete_multipart_upload(
            vaultName=VAULT,
            uploadId=upload_id,
            archiveSize=str(archive_size),
            checksum=tree_hash(b"".join(bodies)),
        )
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    # A failed complete leaves the upload in progress, to be fixed or aborted.
    assert glacier.list_parts(vaultName=VAULT, uploadId=upload_id)["MultipartUploadId"] == upload_id


def test_resent_part_replaces_the_first(glacier: BaseClient) -> None:
    data = sample(MIB + 10)
    upload_id = upload_parts(glacier, data)
    corrected = sample(10, seed=7)
    glacier.upload_multipart_part(
        vaultName=VAULT, uploadId=upload_id, body=corrected, range=f"bytes {MIB}-{MIB + 9}/*"
    )
    parts = glacier.list_parts(vaultName=VAULT, uploadId=upload_id)["Parts"]
    assert [p["SHA256TreeHash"] for p in parts] == [tree_hash(data[:MIB]), tree_hash(corrected)]
    expected = data[:MIB] + corrected
    done = glacier.complete_multipart_upload(
        vaultName=VAULT,
        uploadId=upload_id,
        archiveSize=str(len(expected)),
        checksum=tree_hash(expected),
    )
    assert done["checksum"] == tree_hash(expected)


def test_abort_removes_the_upload(glacier: BaseClient) -> None:
    upload_id = upload_parts(glacier, sample(MIB + 1))
    assert [
        u["MultipartUploadId"]
        for u in glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"]
    ] == [upload_id]
    response = glacier.abort_multipart_upload(vaultName=VAULT, uploadId=upload_id)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"] == []
    for call in (glacier.list_parts, glacier.abort_multipart_upload):
        with pytest.raises(ClientError) as excinfo:
            call(vaultName=VAULT, uploadId=upload_id)
        assert error(excinfo) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as excinfo:
        glacier.complete_multipart_upload(
            vaultName=VAULT, uploadId=upload_id, archiveSize="1", checksum=tree_hash(b"x")
        )
    assert error(excinfo) == ("ResourceNotFoundException", 404)


def test_upload_archive_tree_hash_ids_and_description(glacier: BaseClient) -> None:
    data = sample(2 * MIB + 1)  # above 1 MiB the tree hash is not a plain SHA-256
    first, second = (
        glacier.upload_archive(vaultName=VAULT, body=data, archiveDescription="twin")
        for _ in range(2)
    )
    assert first["archiveId"] != second["archiveId"]
    assert first["checksum"] == second["checksum"] == tree_hash(data)
    listed = inventory(glacier)
    assert set(listed) == {first["archiveId"], second["archiveId"]}
    assert all(
        a["ArchiveDescription"] == "twin"
        and a["Size"] == len(data)
        and a["SHA256TreeHash"] == tree_hash(data)
        for a in listed.values()
    )
    assert glacier.describe_vault(vaultName=VAULT)["NumberOfArchives"] == 2


def test_upload_archive_checks_the_sent_tree_hash(glacier: BaseClient) -> None:
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_archive(vaultName=VAULT, body=b"data", checksum=tree_hash(b"atad"))
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_archive(vaultName=VAULT, body=b"")
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    assert glacier.describe_vault(vaultName=VAULT)["NumberOfArchives"] == 0


def test_unknown_ids_are_resource_not_found(glacier: BaseClient) -> None:
    archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]
    glacier.delete_archive(vaultName=VAULT, archiveId=archive_id)
    calls = [
        lambda: glacier.delete_archive(vaultName=VAULT, archiveId="NOSUCHARCHIVE"),
        lambda: glacier.initiate_job(
            vaultName=VAULT, jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id}
        ),
        lambda: glacier.describe_job(vaultName=VAULT, jobId="NOSUCHJOB"),
        lambda: glacier.get_job_output(vaultName=VAULT, jobId="NOSUCHJOB"),
        lambda: glacier.upload_multipart_part(
            vaultName=VAULT, uploadId="nosuchupload", body=b"x", range="bytes 0-0/*"
        ),
        lambda: glacier.describe_vault(vaultName="no-such-vault"),
        lambda: glacier.upload_archive(vaultName="no-such-vault", body=b"x"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error(excinfo) == ("ResourceNotFoundException", 404)


def test_deleting_an_archive_again_succeeds(glacier: BaseClient) -> None:
    # AWS: "Attempting to delete an already-deleted archive does not result in an error."
    archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]
    for _ in range(2):
        response = glacier.delete_archive(vaultName=VAULT, archiveId=archive_id)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert glacier.describe_vault(vaultName=VAULT)["NumberOfArchives"] == 0


def test_job_output_before_completion_is_rejected(glacier: BaseClient) -> None:
    configure(standard_seconds=3600)
    job_id = glacier.initiate_job(vaultName=VAULT, jobParameters={"Type": "inventory-retrieval"})[
        "jobId"
    ]
    with pytest.raises(ClientError) as excinfo:
        glacier.get_job_output(vaultName=VAULT, jobId=job_id)
    assert error(excinfo) == ("InvalidParameterValueException", 400)


def test_a_job_is_forgotten_a_day_after_it_completes(glacier: BaseClient) -> None:
    # Given a day of one second, and a retrieval that takes one
    configure(day_seconds=1, expedited_seconds=1)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]
    job_id = glacier.initiate_job(
        vaultName=VAULT,
        jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited"},
    )["jobId"]
    started = time.monotonic()

    def listed() -> list[str]:
        return [j["JobId"] for j in glacier.list_jobs(vaultName=VAULT)["JobList"]]

    # When it completes, then its output can be downloaded
    wait_for(lambda: described(glacier, job_id)["Completed"], timeout=10, what="the job")
    assert glacier.get_job_output(vaultName=VAULT, jobId=job_id)["body"].read() == b"data"
    assert listed() == [job_id]

    # When a day has passed since it completed (not since it started), then it is gone
    def forgotten() -> bool:
        try:
            glacier.describe_job(vaultName=VAULT, jobId=job_id)
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return False

    wait_for(forgotten, timeout=10, what="the job to be forgotten")
    assert time.monotonic() - started >= 2
    with pytest.raises(ClientError) as excinfo:
        glacier.get_job_output(vaultName=VAULT, jobId=job_id)
    assert error(excinfo) == ("ResourceNotFoundException", 404)
    assert listed() == []


def test_create_vault_again_keeps_archives_and_install_is_idempotent(
    glacier: BaseClient,
) -> None:
    install()
    glacier.upload_archive(vaultName=VAULT, body=b"data")
    glacier.create_vault(vaultName=VAULT)
    assert glacier.describe_vault(vaultName=VAULT)["NumberOfArchives"] == 1


def test_multipart_upload_through_the_server(fake_aws: None) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client(
            "glacier", region_name=REGION, config=NO_RETRIES, endpoint_url=f"http://{host}:{port}"
        )
        client.create_vault(vaultName=VAULT)
        data = sample(2 * MIB + 12345)
        upload_id = upload_parts(client, data)
        assert len(client.list_parts(vaultName=VAULT, uploadId=upload_id)["Parts"]) == 3
        done = client.complete_multipart_upload(
            vaultName=VAULT,
            uploadId=upload_id,
            archiveSize=str(len(data)),
            checksum=tree_hash(data),
        )
        assert done["checksum"] == tree_hash(data)
        assert client.describe_vault(vaultName=VAULT)["SizeInBytes"] == len(data)
        with pytest.raises(ClientError) as excinfo:
            client.delete_archive(vaultName=VAULT, archiveId="nosucharchive")
        assert error(excinfo) == ("ResourceNotFoundException", 404)
    finally:
        # The server shares moto's state with the process: leave nothing for later tests.
        glacier_backends[ACCOUNT][REGION].reset()
        server.stop()


# -- jobs: description, timing, notices, ranges, capacity, failures ----------------------------

SIZE = 3 * MIB + 12345  # four tree-hash leaves, the last one short


def test_jobs_keep_description_topic_tier_and_range(glacier: BaseClient) -> None:
    # Given an archive and Bulk jobs that take an hour
    configure(bulk_seconds=3600)
    data = sample(SIZE)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=data)["archiveId"]

    # When a ranged archive retrieval and an inventory retrieval are initiated
    retrieval_id = glacier.initiate_job(
        vaultName=VAULT,
        jobParameters={
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "Tier": "Bulk",
            "Description": '{"job_id": "j1"}',
            "SNSTopic": TOPIC_ARN,
            "RetrievalByteRange": f"{MIB}-{3 * MIB - 1}",
        },
    )["jobId"]
    inventory_id = glacier.initiate_job(
        vaultName=VAULT,
        jobParameters={
            "Type": "inventory-retrieval",
            "Description": "stock-take",
        },
    )["jobId"]

    # Then DescribeJob gives back what was asked, as AWS does (no SHA256TreeHash: 1-3 MiB is
    # not tree-hash aligned; no CompletionDate: in progress)
    retrieval = described(glacier, retrieval_id)
    assert retrieval == {
        "Action": "ArchiveRetrieval",
        "ArchiveId": archive_id,
        "ArchiveSizeInBytes": SIZE,
        "ArchiveSHA256TreeHash": tree_hash(data),
        "Completed": False,
        "CreationDate": retrieval["CreationDate"],
        "JobDescription": '{"job_id": "j1"}',
        "JobId": retrieval_id,
        "RetrievalByteRange": f"{MIB}-{3 * MIB - 1}",
        "SNSTopic": TOPIC_ARN,
        "StatusCode": "InProgress",
        "StatusMessage": "Operation in progress.",
        "Tier": "Bulk",
        "VaultARN": f"arn:aws:glacier:{REGION}:{ACCOUNT}:vaults/{VAULT}",
    }
    # and the inventory, Standard by default (0 s here), is done with its size known
    inventory_job = described(glacier, inventory_id)
    assert (
        inventory_job["Action"],
        inventory_job["JobDescription"],
        inventory_job["Tier"],
        inventory_job["StatusCode"],
    ) == ("InventoryRetrieval", "stock-take", "Standard", "Succeeded")
    output = glacier.get_job_output(vaultName=VAULT, jobId=inventory_id)["body"].read()
    assert inventory_job["InventorySizeInBytes"] == len(output)
    # and ListJobs lists both the same way
    listed = glacier.list_jobs(vaultName=VAULT)["JobList"]
    assert sorted(listed, key=lambda j: j["JobId"]) == sorted(
        [retrieval, described(glacier, inventory_id)], key=lambda j: j["JobId"]
    )


def test_each_tier_takes_its_configured_time(glacier: BaseClient) -> None:
    # Given Standard jobs done at once, Expedited ones after a second, Bulk after an hour
    configure(standard_seconds=0, expedited_seconds=1, bulk_seconds=3600)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]

    def initiate(**tier: str) -> str:
        return glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, **tier},
        )["jobId"]

    # When one job of each tier is initiated
    standard, expedited, bulk = initiate(), initiate(Tier="Expedited"), initiate(Tier="Bulk")

    # Then the Standard one is done at once
    job = described(glacier, standard)
    assert (job["Tier"], job["Completed"], job["StatusCode"]) == ("Standard", True, "Succeeded")
    assert job["CompletionDate"] == job["CreationDate"]
    # and the Expedited one is not, but is done a second after it was created
    assert not described(glacier, expedited)["Completed"]
    job = wait_for(
        lambda: (j := described(glacier, expedited))["Completed"] and j,
        timeout=10,
        what="the Expedited job",
    )
    assert utc(job["CompletionDate"]) - utc(job["CreationDate"]) == timedelta(seconds=1)
    # and the Bulk one is still in progress, its output not available
    job = described(glacier, bulk)
    assert (job["Completed"], job["StatusCode"]) == (False, "InProgress")
    assert "CompletionDate" not in job
    with pytest.raises(ClientError) as excinfo:
        glacier.get_job_output(vaultName=VAULT, jobId=bulk)
    assert error(excinfo) == ("InvalidParameterValueException", 400)


def test_completion_notice_reaches_a_subscribed_queue_once_per_job(glacier: BaseClient) -> None:
    # Given a queue subscribed to a topic, and an archive
    sqs = boto3.client("sqs", region_name=REGION)
    url = subscribe_queue(boto3.client("sns", region_name=REGION), sqs)
    data = sample(MIB + 5)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=data)["archiveId"]

    # When an archive retrieval and an inventory retrieval that name the topic complete
    retrieval_id = glacier.initiate_job(
        vaultName=VAULT,
        jobParameters={
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "SNSTopic": TOPIC_ARN,
            "Description": '{"job_id": "j1"}',
        },
    )["jobId"]
    inventory_id = glacier.initiate_job(
        vaultName=VAULT,
        jobParameters={
            "Type": "inventory-retrieval",
            "SNSTopic": TOPIC_ARN,
        },
    )["jobId"]

    # Then each is announced once, with every field of DescribeJob for that job
    notices = receive_notices(sqs, url, count=2)
    assert set(notices) == {retrieval_id, inventory_id}
    for job_id, notice in notices.items():
        assert {k: v for k, v in notice.items() if v is not None} == described(glacier, job_id)
    retrieval = notices[retrieval_id]
    assert (retrieval["Action"], retrieval["StatusCode"], retrieval["Completed"]) == (
        "ArchiveRetrieval",
        "Succeeded",
        True,
    )
    assert retrieval["JobDescription"] == '{"job_id": "j1"}'
    assert retrieval["SHA256TreeHash"] == retrieval["ArchiveSHA256TreeHash"] == tree_hash(data)
    assert retrieval["InventorySizeInBytes"] is None
    inventory_notice = notices[inventory_id]
    assert inventory_notice["Action"] == "InventoryRetrieval"
    assert inventory_notice["ArchiveId"] is inventory_notice["RetrievalByteRange"] is None


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_notice_due_after_its_context_ended_or_to_no_topic_is_dropped(fake_aws: None) -> None:
    # Given a job due in a second whose mock_aws context then ends
    configure(standard_seconds=1)
    with mock_aws():
        glacier = boto3.client("glacier", region_name=REGION, config=NO_RETRIES)
        glacier.create_vault(vaultName=VAULT)
        archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]
        job_id = glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "SNSTopic": TOPIC_ARN,
            },
        )["jobId"]
        stale = notice_timer(job_id)

    with mock_aws():
        # and a later context with a topic and queue of the same names
        sqs = boto3.client("sqs", region_name=REGION)
        url = subscribe_queue(boto3.client("sns", region_name=REGION), sqs)
        # and, in it, a job due in a second whose topic does not exist
        glacier = boto3.client("glacier", region_name=REGION, config=NO_RETRIES)
        glacier.create_vault(vaultName=VAULT)
        archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]
        job_id = glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "SNSTopic": f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic",
            },
        )["jobId"]
        orphan = notice_timer(job_id)

        # When both timers fire
        for timer in (stale, orphan):
            timer.join(timeout=10)
            assert not timer.is_alive()

        # Then neither publishes anything, nor fails loudly (an exception in the timer
        # thread would be an error here)
        assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert described(glacier, job_id)["StatusCode"] == "Succeeded"


def notice_timer(job_id: str) -> threading.Timer:
    """The timer that is to publish the completion notice of the job `job_id`."""
    job = glacier_backends[ACCOUNT][REGION].vaults[VAULT].jobs[job_id]
    [timer] = [
        t
        for t in threading.enumerate()
        if isinstance(t, threading.Timer) and getattr(t, "function", None) == job._publish_notice
    ]
    return timer


@pytest.mark.parametrize(
    "first, last, aligned",
    [
        (0, MIB - 1, True),  # a 1 MiB leaf of the tree hash
        (MIB, 2 * MIB - 1, True),  # another leaf
        (0, 2 * MIB - 1, True),  # a 2 MiB node
        (2 * MIB, SIZE - 1, True),  # a 2 MiB node cut short by the end
        (3 * MIB, SIZE - 1, True),  # the last, short leaf
        (0, SIZE - 1, True),  # the whole archive, asked for as a range
        (0, 1023, False),  # not whole MiB
        (MIB, 3 * MIB - 1, False),  # 2 MiB, not at a multiple of 2 MiB
        (MIB, SIZE - 1, False),  # from 1 MiB to the end is no node of the tree
    ],
    ids=[
        "leaf",
        "second-leaf",
        "node",
        "node-to-end",
        "short-leaf",
        "whole",
        "partial-mib",
        "misaligned-node",
        "mib-to-end",
    ],
)
def test_ranged_output_has_a_tree_hash_only_when_tree_hash_aligned(
    glacier: BaseClient, first: int, last: int, aligned: bool
) -> None:
    # Given a finished retrieval of a whole archive
    data = sample(SIZE)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=data)["archiveId"]
    job = finished_job(glacier, {"Type": "archive-retrieval", "ArchiveId": archive_id})

    # When a range of its output is downloaded
    output = glacier.get_job_output(
        vaultName=VAULT, jobId=job["JobId"], range=f"bytes={first}-{last}"
    )

    # Then exactly those bytes come, as partial content, with the range's tree hash if aligned
    assert output["status"] == 206
    assert output["contentRange"] == f"bytes {first}-{last}/{SIZE}"
    assert output["acceptRanges"] == "bytes"
    assert output["body"].read() == data[first : last + 1]
    assert output.get("checksum") == (tree_hash(data[first : last + 1]) if aligned else None)


def test_retrieval_of_a_range_outputs_that_range(glacier: BaseClient) -> None:
    # Given an archive
    data = sample(SIZE)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=data)["archiveId"]

    # When a tree-hash aligned range of it is retrieved
    job = finished_job(
        glacier,
        {
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "RetrievalByteRange": f"{2 * MIB}-{SIZE - 1}",
        },
    )

    # Then its output is that range, with checksums for it and for aligned parts of it
    assert job["SHA256TreeHash"] == tree_hash(data[2 * MIB :])
    output = glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"])
    assert (output["body"].read(), output["checksum"]) == (
        data[2 * MIB :],
        tree_hash(data[2 * MIB :]),
    )
    output = glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"], range=f"bytes=0-{MIB - 1}")
    assert output["contentRange"] == f"bytes 0-{MIB - 1}/{SIZE - 2 * MIB}"
    part = data[2 * MIB : 3 * MIB]
    assert (output["body"].read(), output["checksum"]) == (part, tree_hash(part))

    # When a megabyte-aligned range that is not tree-hash aligned is retrieved
    job = finished_job(
        glacier,
        {
            "Type": "archive-retrieval",
            "ArchiveId": archive_id,
            "RetrievalByteRange": f"{MIB}-{3 * MIB - 1}",
        },
    )

    # Then its output is that range, with no checksum for it or any part of it
    assert "SHA256TreeHash" not in job
    output = glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"])
    assert output["body"].read() == data[MIB : 3 * MIB] and "checksum" not in output
    output = glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"], range=f"bytes=0-{MIB - 1}")
    assert output["body"].read() == data[MIB : 2 * MIB] and "checksum" not in output


@pytest.mark.parametrize(
    "parameters",
    [
        {"RetrievalByteRange": "1000-2000"},  # not at a MiB
        {"RetrievalByteRange": f"0-{MIB - 2}"},  # ends neither at a MiB nor at the end
        {"RetrievalByteRange": f"0-{SIZE}"},  # beyond the end
        {"RetrievalByteRange": f"{MIB}-{MIB - 1}"},  # backwards
        {"RetrievalByteRange": "0-"},
        {"Tier": "Glacial"},
    ],
    ids=["unaligned-start", "unaligned-end", "beyond-end", "backwards", "open", "unknown-tier"],
)
def test_malformed_retrievals_are_rejected(glacier: BaseClient, parameters: dict) -> None:
    archive_id = glacier.upload_archive(vaultName=VAULT, body=sample(SIZE))["archiveId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, **parameters},
        )
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    assert glacier.list_jobs(vaultName=VAULT)["JobList"] == []


@pytest.mark.parametrize("byte_range", [f"bytes={SIZE}-", "bytes=10-5", "items=0-1", "0-1"])
def test_unsatisfiable_download_range_is_rejected(glacier: BaseClient, byte_range: str) -> None:
    archive_id = glacier.upload_archive(vaultName=VAULT, body=sample(SIZE))["archiveId"]
    job = finished_job(glacier, {"Type": "archive-retrieval", "ArchiveId": archive_id})
    with pytest.raises(ClientError) as excinfo:
        glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"], range=byte_range)
    assert error(excinfo) == ("InvalidParameterValueException", 400)


def test_expedited_without_capacity_is_refused_while_standard_works(glacier: BaseClient) -> None:
    # Given no Expedited capacity
    configure(expedited_capacity=False)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=b"data")["archiveId"]

    # When an Expedited retrieval is initiated, then AWS's 503 error comes back
    with pytest.raises(ClientError) as excinfo:
        glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "Tier": "Expedited",
            },
        )
    assert error(excinfo) == ("InsufficientCapacityException", 503)
    assert excinfo.value.response["type"] == "Server"

    # When a Standard one is, then it works, and it is the only job
    job = finished_job(
        glacier, {"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Standard"}
    )
    assert glacier.list_jobs(vaultName=VAULT)["JobList"] == [described(glacier, job["JobId"])]


def test_failing_retrievals_end_failed_and_are_announced(glacier: BaseClient) -> None:
    # Given that the next archive retrieval is to fail, and a queue subscribed to a topic
    configure(fail_retrievals=1)
    sqs = boto3.client("sqs", region_name=REGION)
    url = subscribe_queue(boto3.client("sns", region_name=REGION), sqs)
    data = sample(100)
    archive_id = glacier.upload_archive(vaultName=VAULT, body=data)["archiveId"]

    # When two retrievals announced on the topic complete
    failed_id, succeeded_id = (
        glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "SNSTopic": TOPIC_ARN,
            },
        )["jobId"]
        for _ in range(2)
    )

    # Then the first ends Failed, and says so in its notice as in DescribeJob
    notices = receive_notices(sqs, url, count=2)
    failed = notices[failed_id]
    assert (failed["Completed"], failed["StatusCode"]) == (True, "Failed")
    assert failed["StatusMessage"]
    assert {k: v for k, v in failed.items() if v is not None} == described(glacier, failed_id)
    # and has no output
    with pytest.raises(ClientError) as excinfo:
        glacier.get_job_output(vaultName=VAULT, jobId=failed_id)
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    # while the second succeeds
    assert notices[succeeded_id]["StatusCode"] == "Succeeded"
    assert glacier.get_job_output(vaultName=VAULT, jobId=succeeded_id)["body"].read() == data


def test_settings_come_from_the_local_config_section() -> None:
    config = load(
        environ={
            "GAS_LOCAL_EXPEDITED_CAPACITY": "False",
            "GAS_LOCAL_BULK_SECONDS": "0",
            "GAS_LOCAL_FAIL_RETRIEVALS": "2",
        }
    )
    assert Settings.from_config(config.local) == replace(
        DEFAULT_SETTINGS, expedited_capacity=False, bulk_seconds=0, fail_retrievals=2
    )
    with pytest.raises(ConfigError, match=r"\[local\] expedited_capacity"):
        load(environ={"GAS_LOCAL_EXPEDITED_CAPACITY": "maybe"})


def test_notice_range_and_capacity_through_the_server(fake_aws: None) -> None:
    # Given the emulation in a moto server, a vault, and a queue subscribed to a topic
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        glacier, sns, sqs = (
            boto3.client(name, region_name=REGION, config=NO_RETRIES, endpoint_url=endpoint)
            for name in ("glacier", "sns", "sqs")
        )
        glacier.create_vault(vaultName=VAULT)
        url = subscribe_queue(sns, sqs)
        data = sample(2 * MIB + 7)
        archive_id = glacier.upload_archive(vaultName=VAULT, body=data)["archiveId"]

        # When a retrieval announced on the topic completes
        job_id = glacier.initiate_job(
            vaultName=VAULT,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "SNSTopic": TOPIC_ARN,
                "Description": "via the server",
            },
        )["jobId"]

        # Then its notice reaches the queue, once
        notice = receive_notices(sqs, url, count=1)[job_id]
        assert (notice["StatusCode"], notice["JobDescription"]) == ("Succeeded", "via the server")
        assert notice["SHA256TreeHash"] == tree_hash(data)
        # and a range of its output comes with the range's tree hash
        output = glacier.get_job_output(
            vaultName=VAULT, jobId=job_id, range=f"bytes={MIB}-{2 * MIB - 1}"
        )
        part = data[MIB : 2 * MIB]
        assert (output["status"], output["contentRange"]) == (
            206,
            f"bytes {MIB}-{2 * MIB - 1}/{len(data)}",
        )
        assert (output["body"].read(), output["checksum"]) == (part, tree_hash(part))

        # When Expedited capacity runs out, then the server refuses Expedited retrievals
        configure(expedited_capacity=False)
        with pytest.raises(ClientError) as excinfo:
            glacier.initiate_job(
                vaultName=VAULT,
                jobParameters={
                    "Type": "archive-retrieval",
                    "ArchiveId": archive_id,
                    "Tier": "Expedited",
                },
            )
        assert error(excinfo) == ("InsufficientCapacityException", 503)
    finally:
        # The server shares moto's state with the process: leave nothing for later tests.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
        server.stop()


def test_an_inventory_is_the_vault_as_of_the_jobs_start(glacier: BaseClient) -> None:
    # AWS's inventory is a snapshot older than the job: archives made or deleted after it
    # do not change an inventory already started.
    kept = glacier.upload_archive(vaultName=VAULT, body=b"kept")["archiveId"]
    deleted = glacier.upload_archive(vaultName=VAULT, body=b"deleted")["archiveId"]
    job = finished_job(glacier, {"Type": "inventory-retrieval"})
    glacier.delete_archive(vaultName=VAULT, archiveId=deleted)
    glacier.upload_archive(vaultName=VAULT, body=b"later")
    output = json.load(glacier.get_job_output(vaultName=VAULT, jobId=job["JobId"])["body"])
    assert sorted(a["ArchiveId"] for a in output["ArchiveList"]) == sorted([kept, deleted])
    assert output["InventoryDate"] == job["CreationDate"]


def test_a_new_vault_has_no_inventory_until_the_delay_then_one_a_day(glacier: BaseClient) -> None:
    # Given a vault made when inventories come a second after creation, then once a second
    configure(inventory_delay_seconds=1, day_seconds=1)
    glacier.create_vault(vaultName="new-vault")
    started = time.monotonic()
    created = utc(glacier.describe_vault(vaultName="new-vault")["CreationDate"])
    first = glacier.upload_archive(vaultName="new-vault", body=b"first")["archiveId"]

    def start_inventory() -> str:
        return glacier.initiate_job(
            vaultName="new-vault", jobParameters={"Type": "inventory-retrieval"}
        )["jobId"]

    def inventory_output() -> dict:
        output = glacier.get_job_output(vaultName="new-vault", jobId=start_inventory())
        return json.load(output["body"])

    # Then, before its first inventory, an inventory retrieval is refused, and the vault
    # says it has none
    with pytest.raises(ClientError) as excinfo:
        start_inventory()
    assert error(excinfo) == ("ResourceNotFoundException", 404)
    vault = glacier.describe_vault(vaultName="new-vault")
    assert not {"LastInventoryDate", "NumberOfArchives", "SizeInBytes"} & set(vault)

    # When the first inventory is due, then it lists the vault as it was then, dated then
    def first_inventory() -> dict | None:
        try:
            return inventory_output()
        except ClientError:
            return None

    output = wait_for(first_inventory, timeout=10, what="the first inventory")
    assert time.monotonic() - started >= 1
    assert [a["ArchiveId"] for a in output["ArchiveList"]] == [first]
    dated = utc(output["InventoryDate"])
    assert timedelta(seconds=1) <= dated - created < timedelta(seconds=2)
    vault = glacier.describe_vault(vaultName="new-vault")
    assert (vault["LastInventoryDate"], vault["NumberOfArchives"], vault["SizeInBytes"]) == (
        output["InventoryDate"],
        1,
        5,
    )
    # and an archive made now is not in it, but in the next day's
    second = glacier.upload_archive(vaultName="new-vault", body=b"second")["archiveId"]
    assert inventory_output() == output
    output = wait_for(
        lambda: (o := inventory_output())["InventoryDate"] != output["InventoryDate"] and o,
        timeout=10,
        what="the next inventory",
    )
    assert sorted(a["ArchiveId"] for a in output["ArchiveList"]) == sorted([first, second])
    assert utc(output["InventoryDate"]) - dated == timedelta(seconds=1)

    # When a day passes with no archive made or deleted, then the inventory keeps its date
    wait_for(lambda: time.monotonic() - started >= 3.1, timeout=10, what="another day")
    assert inventory_output() == output
