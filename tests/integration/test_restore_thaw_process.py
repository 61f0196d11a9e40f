"""Archive → upgrade → restore → thaw with the real processes against the local stack server."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    Server,
    UtilityProcess,
    dead_letters,
    job,
    put_job,
    result_bytes,
    run_once,
    set_role,
    vault_archive_count,
    wait_for,
)
from util.archives.layout import MIB
from util.schema import ARCHIVE_ID, RESTORE_JOB_ID, RESTORE_TIER, THAW_JOB_ID

SIZES = {"small": 10, "medium": 3 * MIB + 7, "large": 20 * MIB + 3}  # large: 3 ranges of 8 MiB
FAST_THAW = {"thaw_part_size_mib": "8"}


def send(server: Server, queue: str, body: dict) -> None:
    server.client("sqs").send_message(
        QueueUrl=server.queue_url(queue), MessageBody=json.dumps(body)
    )


def archive_count(server: Server) -> int:
    """Archives in the configured back end: the vault, or the archive bucket."""
    if server.config.gas.archive_backend == "vault":
        return vault_archive_count(server)
    return (
        server.client("s3")
        .list_objects_v2(Bucket=server.config.gas.archive_bucket)
        .get("KeyCount", 0)
    )


def put_results(server: Server, sizes: dict[str, int]) -> dict[str, bytes]:
    """Free u-alice's finished jobs, their results in S3."""
    return {job_id: put_job(server, job_id=job_id, size=size) for job_id, size in sizes.items()}


def archive(server: Server, tmp_path: Path, job_ids) -> None:
    """The archive utility archives the jobs."""
    for job_id in job_ids:
        send(server, server.config.archive.queue, {"job_id": job_id, "user_id": "u-alice"})
    run_once("archive", tmp_path, archive_grace_seconds="0", archive_part_size_mib="4")
    assert archive_count(server) == len(job_ids)


def upgrade_and_restore(server: Server, tmp_path: Path) -> UtilityProcess:
    set_role(server, "u-alice", "premium_user")
    send(server, server.config.restore.queue, {"user_id": "u-alice"})
    return run_once("restore", tmp_path)


def all_thawed(server: Server, job_ids) -> bool:
    return all(ARCHIVE_ID not in job(server, job_id) for job_id in job_ids)


def record_requests(server: Server) -> Callable[[], list[dict]]:
    """Start moto's request recorder; the function returns what reached the server since."""
    endpoint = server.env["AWS_ENDPOINT_URL"]
    urllib.request.urlopen(
        urllib.request.Request(f"{endpoint}/moto-api/recorder/start-recording", method="POST"),
        timeout=10,
    ).read()

    def recorded() -> list[dict]:
        with urllib.request.urlopen(
            f"{endpoint}/moto-api/recorder/download-recording", timeout=10
        ) as response:
            text = response.read().decode()
        # One JSON object a request; the newlines of concurrent requests may come late.
        decoder, requests, position = json.JSONDecoder(), [], 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position == len(text):
                return requests
            request, position = decoder.raw_decode(text, position)
            requests.append(request)

    return recorded


def retrieval_tiers(requests: list[dict]) -> list[str]:
    """The tier of each retrieval asked of the stack: InitiateJob of an archive retrieval
    (vault), RestoreObject (s3); botocore's retries count."""
    tiers = []
    for request in requests:
        url, body = request["url"], request["body"]
        if request["method"] != "POST" or not (url.endswith("/jobs") or "?restore" in url):
            continue
        text = (base64.b64decode(body) if request["body_encoded"] else body.encode()).decode()
        if url.endswith("/jobs") and json.loads(text)["Type"] != "archive-retrieval":
            continue
        tiers.append(re.search(r"(Expedited|Standard|Bulk)", text).group(1))
    return tiers


def bytes_through_workers(requests: list[dict], buckets: tuple[str, ...]) -> list[str]:
    """S3 requests that carried an object's bytes to or from a client: GETs of objects and
    uploads with a body. A server-side copy (x-amz-copy-source) carries none."""
    moved = []
    for request in requests:
        path = urllib.parse.urlsplit(request["url"]).path
        if not path.startswith(tuple(f"/{b}/" for b in buckets)):
            continue
        headers = {k.lower(): v for k, v in request["headers"].items()}
        if request["method"] == "GET" or (
            request["method"] == "PUT" and "x-amz-copy-source" not in headers
        ):
            moved.append(f"{request['method']} {path}")
    return moved


@pytest.fixture(
    params=[
        ("vault", "true", "AES256"),
        ("vault", "false", "AES256"),
        ("s3", "true", "AES256"),
        ("s3", "false", "AES256"),
        ("vault", "true", "aws:kms"),
        ("s3", "true", "aws:kms"),
    ],
    ids=[
        "vault",
        "vault-no-expedited-capacity",
        "s3",
        "s3-no-expedited-capacity",
        "vault-sse-kms",
        "s3-sse-kms",
    ],
)
def stack_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    backend, expedited_capacity, encryption = request.param
    return {
        "GAS_GAS_ARCHIVE_BACKEND": backend,
        "GAS_LOCAL_EXPEDITED_CAPACITY": expedited_capacity,
        # SSE-KMS (the buckets' default, as organisations require it): no ETag is an MD5
        "GAS_LOCAL_BUCKET_ENCRYPTION": encryption,
        "GAS_LOCAL_EXPEDITED_SECONDS": "1",
        "GAS_LOCAL_STANDARD_SECONDS": "2",
        # 8 MiB copy parts: the large result is a multipart copy, as a 5 GB one would be
        "GAS_GAS_COPY_PART_SIZE_MIB": "8",
        "MOTO_RECORDER_FILEPATH": str(tmp_path / "moto-requests.jsonl"),
    }


def test_every_result_comes_back_byte_identical(
    server: Server, tmp_path: Path, stack_settings: dict[str, str]
) -> None:
    # Given three results of a free user in the archive
    originals = put_results(server, SIZES)
    copies = server.config.gas.archive_backend == "s3"
    recorded = record_requests(server) if copies else None
    archive(server, tmp_path, SIZES)
    recorded = recorded or record_requests(server)
    # When the user upgrades and restore runs
    restore = upgrade_and_restore(server, tmp_path)
    # Then each result has one retrieval, Expedited if Glacier has the capacity, asked once:
    # a refusal for capacity is final at once, then Standard
    expedited = stack_settings["GAS_LOCAL_EXPEDITED_CAPACITY"] == "true"
    tier = "Expedited" if expedited else "Standard"
    assert {job(server, j)[RESTORE_TIER] for j in SIZES} == {tier}, restore.log
    asked = ["Expedited"] * 3 + ([] if expedited else ["Standard"] * 3)
    assert sorted(retrieval_tiers(recorded())) == asked
    # And when thaw handles Glacier's completion notices
    thaw = UtilityProcess("thaw", tmp_path / "thaw.log", **FAST_THAW)
    wait_for(lambda: all_thawed(server, SIZES), timeout=90, what="every result thawed")
    assert thaw.stop() == 0, thaw.log
    requests = recorded()  # what the workers sent, before we read
    # Then every file is back at its original key, byte-identical, and the archive is empty
    for job_id, data in originals.items():
        assert result_bytes(server, job_id) == data, job_id
        item = job(server, job_id)
        assert RESTORE_JOB_ID not in item and THAW_JOB_ID in item
    assert archive_count(server) == 0
    assert thaw.log.count("reason='thawed'") == 3
    assert dead_letters(server, server.config.thaw.queue) == []
    if copies:
        # And with S3 storage classes no byte went through a worker, either way: each result
        # went in as one CopyObject, and came back as a one-part copy (its original was
        # uploaded in one request, so the archive copy has its ETag, as a copy back in one
        # request would)
        gas = server.config.gas
        assert bytes_through_workers(requests, (gas.archive_bucket,)) == []
        assert [
            m for m in bytes_through_workers(requests, (gas.results_bucket,)) if m.startswith("GET")
        ] == []
        copies = [
            r["url"]
            for r in requests
            if r["method"] == "PUT" and "x-amz-copy-source" in {k.lower() for k in r["headers"]}
        ]
        assert sorted("partNumber=" in url for url in copies) == [False] * 3 + [True] * 3


@pytest.mark.parametrize("stack_settings", [{"GAS_LOCAL_EXPEDITED_SECONDS": "0"}])
def test_thaw_killed_mid_download_still_delivers_the_file_once(
    server: Server, tmp_path: Path
) -> None:
    # Given a restored 64 MiB result: eight 8 MiB ranges, so the copy takes a while
    [(job_id, data)] = put_results(server, {"big": 64 * MIB}).items()
    archive(server, tmp_path, [job_id])
    upgrade_and_restore(server, tmp_path)
    # A short visibility timeout, so the killed worker's message comes back quickly
    server.client("sqs").set_queue_attributes(
        QueueUrl=server.queue_url(server.config.thaw.queue), Attributes={"VisibilityTimeout": "4"}
    )
    # When thaw is killed (SIGKILL: no chance to clean up) while it copies the ranges
    first = UtilityProcess("thaw", tmp_path / "thaw-1.log", **FAST_THAW)
    s3 = server.client("s3")
    bucket = server.config.gas.results_bucket
    wait_for(
        lambda: any(
            s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
            for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        ),
        timeout=60,
        what="the first part copied to S3",
    )
    os.kill(first.process.pid, signal.SIGKILL)
    first.wait()
    assert ARCHIVE_ID in job(server, job_id), "killed before committing anything"
    # And it is started again
    second = UtilityProcess("thaw", tmp_path / "thaw-2.log", **FAST_THAW)
    wait_for(lambda: all_thawed(server, [job_id]), timeout=90, what="the result thawed")
    assert second.stop() == 0, second.log
    # Then the file arrived exactly once, verified, and the archive is gone
    assert result_bytes(server, job_id) == data
    assert second.log.count("reason='thawed'") == 1
    assert vault_archive_count(server) == 0


@pytest.mark.parametrize(
    "stack_settings",
    [
        {"GAS_GAS_ARCHIVE_BACKEND": backend, "GAS_LOCAL_INDEX_LAG_SECONDS": "5"}
        for backend in ("vault", "s3")
    ],
    ids=["vault", "s3"],
)
def test_an_upgrade_the_moment_results_are_archived_brings_every_one_back(
    server: Server, tmp_path: Path
) -> None:
    # Given the running restore and thaw workers, and a user_id_index that shows the table as
    # it was 5 s ago (DynamoDB's index reads are eventually consistent)
    restore = UtilityProcess("restore", tmp_path / "restore.log")
    thaw = UtilityProcess("thaw", tmp_path / "thaw.log", **FAST_THAW)
    originals = put_results(server, {"small": 10, "medium": 3 * MIB + 7})
    # When the user upgrades the moment the results are archived
    archive(server, tmp_path, originals)
    set_role(server, "u-alice", "premium_user")
    send(server, server.config.restore.queue, {"user_id": "u-alice"})
    # Then the workers alone, without the sweep, bring every result back within a minute
    wait_for(lambda: all_thawed(server, originals), timeout=60, what="every result thawed")
    assert restore.stop() == 0 and thaw.stop() == 0, restore.log
    for job_id, data in originals.items():
        assert result_bytes(server, job_id) == data, job_id
    assert "looking again once the index shows every archive" in restore.log
