"""The Glacier emulation (util.local.glacier) as boto3 sees it, in process and from a server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.utils import calculate_tree_hash
from moto import mock_aws
from moto.glacier.models import glacier_backends
from moto.server import ThreadedMotoServer

from util.local.glacier import install

MIB = 1024 * 1024
VAULT = "test-vault"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account for the access key "testing"
NO_RETRIES = Config(retries={"total_max_attempts": 1})


def tree_hash(data: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(data))


def sample(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from MiB to MiB, so misplaced parts change the hash."""
    pattern = bytes((seed + i) % 251 for i in range(4096))
    return (pattern * (size // len(pattern) + 1))[:size]


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no endpoint from the environment, and the emulation installed."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_GLACIER"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    install()


@pytest.fixture
def glacier(fake_aws: None) -> Iterator[BaseClient]:
    with mock_aws():
        client = boto3.client("glacier", region_name=REGION, config=NO_RETRIES)
        client.create_vault(vaultName=VAULT)
        yield client


def error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def upload_parts(client: BaseClient, data: bytes, part_size: int = MIB,
                 description: str = "") -> str:
    """Initiate a multipart upload and send `data` in parts; return the upload id."""
    upload_id = client.initiate_multipart_upload(
        vaultName=VAULT, partSize=str(part_size), archiveDescription=description,
    )["uploadId"]
    for first in range(0, len(data), part_size):
        part = data[first:first + part_size]
        response = client.upload_multipart_part(
            vaultName=VAULT, uploadId=upload_id, body=part,
            range=f"bytes {first}-{first + len(part) - 1}/*",
        )
        assert response["checksum"] == tree_hash(part)
    return upload_id


def finish_jobs() -> None:
    """Make every job due now instead of after moto's fixed 2-10 s."""
    for vault in glacier_backends[ACCOUNT][REGION].vaults.values():
        for job in vault.jobs.values():
            job.et = job.st


def finished_job(client: BaseClient, parameters: dict[str, str]) -> dict:
    job_id = client.initiate_job(vaultName=VAULT, jobParameters=parameters)["jobId"]
    finish_jobs()
    job = client.describe_job(vaultName=VAULT, jobId=job_id)
    assert job["Completed"] and job["StatusCode"] == "Succeeded"
    return job


def inventory(client: BaseClient) -> dict[str, dict]:
    job = finished_job(client, {"Type": "inventory-retrieval"})
    output = client.get_job_output(vaultName=VAULT, jobId=job["JobId"])
    return {a["ArchiveId"]: a for a in json.load(output["body"])["ArchiveList"]}


def test_multipart_upload_round_trip(glacier: BaseClient) -> None:
    data = sample(2 * MIB + 3 * 4096 + 5)  # three parts, the last one short
    upload_id = upload_parts(glacier, data, description="sample.vcf")

    parts = glacier.list_parts(vaultName=VAULT, uploadId=upload_id)
    assert parts["ArchiveDescription"] == "sample.vcf"
    assert parts["PartSizeInBytes"] == MIB
    assert "Marker" not in parts  # null: everything fits in one page
    assert [(p["RangeInBytes"], p["SHA256TreeHash"]) for p in parts["Parts"]] == [
        (f"{first}-{min(first + MIB, len(data)) - 1}", tree_hash(data[first:first + MIB]))
        for first in range(0, len(data), MIB)
    ]

    done = glacier.complete_multipart_upload(
        vaultName=VAULT, uploadId=upload_id, archiveSize=str(len(data)),
        checksum=tree_hash(data),
    )
    archive_id = done["archiveId"]
    assert done["checksum"] == tree_hash(data)
    assert done["location"] == f"/{ACCOUNT}/vaults/{VAULT}/archives/{archive_id}"
    assert len(archive_id) == 138
    assert glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"] == []

    job_id = glacier.initiate_job(vaultName=VAULT, jobParameters={
        "Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited",
    })["jobId"]
    pending = glacier.describe_job(vaultName=VAULT, jobId=job_id)
    assert not pending["Completed"]
    assert pending["ArchiveSizeInBytes"] == len(data)
    assert pending["ArchiveSHA256TreeHash"] == tree_hash(data)
    assert "SHA256TreeHash" not in pending  # null while a whole-archive job is in progress

    finish_jobs()
    job = glacier.describe_job(vaultName=VAULT, jobId=job_id)
    assert job["Completed"]
    assert job["SHA256TreeHash"] == tree_hash(data)
    assert job["RetrievalByteRange"] == f"0-{len(data) - 1}"
    output = glacier.get_job_output(vaultName=VAULT, jobId=job_id)
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
        glacier.upload_multipart_part(vaultName=VAULT, uploadId=upload_id, body=sample(MIB),
                                      range=f"bytes 0-{MIB - 1}/*", checksum=tree_hash(b"other"))
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    assert "Checksum mismatch" in str(excinfo.value)
    assert glacier.list_parts(vaultName=VAULT, uploadId=upload_id)["Parts"] == []


def test_whole_checksum_mismatch_is_rejected(glacier: BaseClient) -> None:
    data = sample(3 * MIB)
    upload_id = upload_parts(glacier, data)
    with pytest.raises(ClientError) as excinfo:
        glacier.complete_multipart_upload(vaultName=VAULT, uploadId=upload_id,
                                          archiveSize=str(len(data)),
                                          checksum=tree_hash(data[::-1]))
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


@pytest.mark.parametrize("size, content_range", [
    (2 * MIB, f"bytes 0-{2 * MIB - 1}/*"),  # larger than the part size
    (MIB, f"bytes {MIB // 2}-{MIB // 2 + MIB - 1}/*"),  # not at a multiple of the part size
    (MIB, f"bytes 0-{MIB - 2}/*"),  # range and body lengths differ
    (MIB, f"bytes 0-{MIB - 1}/{MIB}"),  # AWS wants "/*"
], ids=["too-large", "unaligned", "length-mismatch", "total-instead-of-star"])
def test_misshapen_part_is_rejected(glacier: BaseClient, size: int, content_range: str) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_multipart_part(vaultName=VAULT, uploadId=upload_id, body=sample(size),
                                      range=content_range)
    assert error(excinfo) == ("InvalidParameterValueException", 400)


def test_part_without_content_range_is_rejected(glacier: BaseClient) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.upload_multipart_part(vaultName=VAULT, uploadId=upload_id, body=b"x")
    assert error(excinfo) == ("MissingParameterValueException", 400)


@pytest.mark.parametrize("parts, archive_size", [
    ([(0, MIB), (2 * MIB, MIB)], 3 * MIB),  # gap at the second part
    ([(MIB, MIB)], 2 * MIB),  # nothing at byte 0
    ([(0, MIB // 2), (MIB, MIB)], MIB + MIB // 2),  # short part that is not the last
    ([(0, MIB), (MIB, MIB)], 3 * MIB),  # parts cover less than the archive size
    ([(0, MIB), (MIB, MIB)], MIB),  # parts cover more than the archive size
    ([], 1),  # no parts at all
], ids=["gap", "no-first-part", "short-middle-part", "too-few-bytes", "too-many-bytes",
        "no-parts"])
def test_incomplete_parts_are_rejected_at_complete(
    glacier: BaseClient, parts: list[tuple[int, int]], archive_size: int
) -> None:
    upload_id = glacier.initiate_multipart_upload(vaultName=VAULT, partSize=str(MIB))["uploadId"]
    bodies = [sample(size, seed=first) for first, size in parts]
    for (first, size), body in zip(parts, bodies):
        glacier.upload_multipart_part(vaultName=VAULT, uploadId=upload_id, body=body,
                                      range=f"bytes {first}-{first + size - 1}/*")
    with pytest.raises(ClientError) as excinfo:  # the checksum is right for what was sent
        glacier.complete_multipart_upload(vaultName=VAULT, uploadId=upload_id,
                                          archiveSize=str(archive_size),
                                          checksum=tree_hash(b"".join(bodies)))
    assert error(excinfo) == ("InvalidParameterValueException", 400)
    # A failed complete leaves the upload in progress, to be fixed or aborted.
    assert glacier.list_parts(vaultName=VAULT, uploadId=upload_id)["MultipartUploadId"] == upload_id


def test_resent_part_replaces_the_first(glacier: BaseClient) -> None:
    data = sample(MIB + 10)
    upload_id = upload_parts(glacier, data)
    corrected = sample(10, seed=7)
    glacier.upload_multipart_part(vaultName=VAULT, uploadId=upload_id, body=corrected,
                                  range=f"bytes {MIB}-{MIB + 9}/*")
    parts = glacier.list_parts(vaultName=VAULT, uploadId=upload_id)["Parts"]
    assert [p["SHA256TreeHash"] for p in parts] == [tree_hash(data[:MIB]), tree_hash(corrected)]
    expected = data[:MIB] + corrected
    done = glacier.complete_multipart_upload(vaultName=VAULT, uploadId=upload_id,
                                             archiveSize=str(len(expected)),
                                             checksum=tree_hash(expected))
    assert done["checksum"] == tree_hash(expected)


def test_abort_removes_the_upload(glacier: BaseClient) -> None:
    upload_id = upload_parts(glacier, sample(MIB + 1))
    assert [u["MultipartUploadId"] for u in
            glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"]] == [upload_id]
    response = glacier.abort_multipart_upload(vaultName=VAULT, uploadId=upload_id)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert glacier.list_multipart_uploads(vaultName=VAULT)["UploadsList"] == []
    for call in (glacier.list_parts, glacier.abort_multipart_upload):
        with pytest.raises(ClientError) as excinfo:
            call(vaultName=VAULT, uploadId=upload_id)
        assert error(excinfo) == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as excinfo:
        glacier.complete_multipart_upload(vaultName=VAULT, uploadId=upload_id,
                                          archiveSize="1", checksum=tree_hash(b"x"))
    assert error(excinfo) == ("ResourceNotFoundException", 404)


def test_upload_archive_tree_hash_ids_and_description(glacier: BaseClient) -> None:
    data = sample(2 * MIB + 1)  # above 1 MiB the tree hash is not a plain SHA-256
    first, second = (glacier.upload_archive(vaultName=VAULT, body=data,
                                            archiveDescription="twin") for _ in range(2))
    assert first["archiveId"] != second["archiveId"]
    assert first["checksum"] == second["checksum"] == tree_hash(data)
    listed = inventory(glacier)
    assert set(listed) == {first["archiveId"], second["archiveId"]}
    assert all(a["ArchiveDescription"] == "twin" and a["Size"] == len(data)
               and a["SHA256TreeHash"] == tree_hash(data) for a in listed.values())
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
        lambda: glacier.delete_archive(vaultName=VAULT, archiveId=archive_id),
        lambda: glacier.initiate_job(vaultName=VAULT, jobParameters={
            "Type": "archive-retrieval", "ArchiveId": archive_id}),
        lambda: glacier.describe_job(vaultName=VAULT, jobId="NOSUCHJOB"),
        lambda: glacier.get_job_output(vaultName=VAULT, jobId="NOSUCHJOB"),
        lambda: glacier.upload_multipart_part(vaultName=VAULT, uploadId="nosuchupload",
                                              body=b"x", range="bytes 0-0/*"),
        lambda: glacier.describe_vault(vaultName="no-such-vault"),
        lambda: glacier.upload_archive(vaultName="no-such-vault", body=b"x"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error(excinfo) == ("ResourceNotFoundException", 404)


def test_job_output_before_completion_is_rejected(glacier: BaseClient) -> None:
    job_id = glacier.initiate_job(vaultName=VAULT,
                                  jobParameters={"Type": "inventory-retrieval"})["jobId"]
    with pytest.raises(ClientError) as excinfo:
        glacier.get_job_output(vaultName=VAULT, jobId=job_id)
    assert error(excinfo) == ("InvalidParameterValueException", 400)


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
        client = boto3.client("glacier", region_name=REGION, config=NO_RETRIES,
                              endpoint_url=f"http://{host}:{port}")
        client.create_vault(vaultName=VAULT)
        data = sample(2 * MIB + 12345)
        upload_id = upload_parts(client, data)
        assert len(client.list_parts(vaultName=VAULT, uploadId=upload_id)["Parts"]) == 3
        done = client.complete_multipart_upload(vaultName=VAULT, uploadId=upload_id,
                                                archiveSize=str(len(data)),
                                                checksum=tree_hash(data))
        assert done["checksum"] == tree_hash(data)
        assert client.describe_vault(vaultName=VAULT)["SizeInBytes"] == len(data)
        with pytest.raises(ClientError) as excinfo:
            client.delete_archive(vaultName=VAULT, archiveId="nosucharchive")
        assert error(excinfo) == ("ResourceNotFoundException", 404)
    finally:
        # The server shares moto's state with the process: leave nothing for later tests.
        glacier_backends[ACCOUNT][REGION].reset()
        server.stop()
