"""`util/archive/archive.py` as a real process against the local stack server."""

from __future__ import annotations

import json
import time
from pathlib import Path

from localaws import faults
from tests.conftest import (
    Server,
    UtilityProcess,
    archived_bytes,
    dead_letter_reasons,
    job,
    put_job,
    result_exists,
    vault_archive_count,
    wait_for,
)
from util.archives.layout import MIB
from util.schema import ARCHIVE_ID


class ArchiveProcess(UtilityProcess):
    """The archive worker, with 1 MiB parts so that small files are multipart uploads."""

    def __init__(self, server: Server, log: Path, *args: str, **settings: str):
        super().__init__("archive", log, *args, **{"archive_part_size_mib": "1", **settings})


def run_once(server: Server, tmp_path: Path, **settings: str) -> ArchiveProcess:
    worker = ArchiveProcess(server, tmp_path / "archive.log", "--once", **settings)
    assert worker.wait() == 0, worker.log
    return worker


def send(server: Server, *bodies: str | dict) -> None:
    url = server.queue_url(server.config.archive.queue)
    for body in bodies:
        text = body if isinstance(body, str) else json.dumps(body)
        server.client("sqs").send_message(QueueUrl=url, MessageBody=text)


def multipart_uploads(server: Server) -> list[dict]:
    return server.client("glacier").list_multipart_uploads(vaultName=server.config.gas.vault)[
        "UploadsList"
    ]


def test_multipart_result_is_archived_byte_identical(server: Server, tmp_path: Path) -> None:
    # Given a free user's 3.5 MiB result (four 1 MiB parts)
    data = put_job(server, size=3 * MIB + MIB // 2)
    send(server, {"job_id": "j1", "user_id": "u-alice"})
    # When the archive utility drains its queue
    worker = run_once(server, tmp_path)
    # Then the vault holds the same bytes, the job says so, and S3 no longer has the result
    assert archived_bytes(server, job(server)[ARCHIVE_ID]) == data
    assert not result_exists(server)
    assert "job=j1 receives=1 outcome=done" in worker.log
    assert multipart_uploads(server) == []


def test_duplicate_delivery_makes_one_archive(server: Server, tmp_path: Path) -> None:
    put_job(server, size=2 * MIB + 1)
    send(server, {"job_id": "j1", "user_id": "u-alice"}, {"job_id": "j1", "user_id": "u-alice"})
    run_once(server, tmp_path)
    assert vault_archive_count(server) == 1
    assert ARCHIVE_ID in job(server) and not result_exists(server)


def test_premium_users_result_is_untouched(server: Server, tmp_path: Path) -> None:
    put_job(server, job_id="jb", user_id="u-bob")
    send(server, {"job_id": "jb", "user_id": "u-bob"})
    worker = run_once(server, tmp_path)
    assert result_exists(server, "jb") and ARCHIVE_ID not in job(server, "jb")
    assert vault_archive_count(server) == 0
    assert "premium user" in worker.log


def test_early_message_is_deferred_then_archived(server: Server, tmp_path: Path) -> None:
    # The worker consumes before the job completes: its start-up (seconds on a busy machine)
    # must not outlast the grace period.
    worker = ArchiveProcess(server, tmp_path / "archive.log", archive_grace_seconds="3")
    wait_for(lambda: "consuming" in worker.log, timeout=60, what="the worker consuming")
    put_job(server, complete_time=time.time())
    send(server, {"job_id": "j1", "user_id": "u-alice"})
    wait_for(lambda: ARCHIVE_ID in job(server), timeout=60, what="the archive after the grace")
    assert worker.stop() == 0
    log = worker.log
    # the deferred message came back as a fresh copy: received once, no retry counted
    assert log.index("outcome=defer") < log.index("receives=1 outcome=done retries=0"), log
    assert vault_archive_count(server) == 1 and not result_exists(server)


def test_poison_messages_go_to_the_dead_letter_queue_and_the_worker_goes_on(
    server: Server, tmp_path: Path
) -> None:
    put_job(server)
    worker = ArchiveProcess(server, tmp_path / "archive.log")
    send(
        server,
        "{not json",
        {"job_id": "nope", "user_id": "u-alice"},
        {"job_id": "j1", "user_id": "u-mallory"},
        {"job_id": "j1", "user_id": "u-alice"},
    )
    wait_for(lambda: ARCHIVE_ID in job(server), timeout=60, what="the valid job archived")
    reasons = dead_letter_reasons(server, server.config.archive.queue, 3)
    assert reasons[0].startswith("body is not JSON")
    assert reasons[1] == "unknown job nope"
    assert reasons[2] == "user u-mallory does not own job j1"
    assert worker.process.poll() is None, "the worker must survive poison messages"
    assert worker.stop() == 0


def sigterm_mid_upload(
    server: Server, tmp_path: Path, drain_seconds: str, **settings: str
) -> tuple[bytes, ArchiveProcess]:
    """A 48 MiB result, and the archive worker systemd stopped while its multipart upload was
    under way; the worker must have exited 0 within its grace."""
    data = put_job(server, size=48 * MIB)
    send(server, {"job_id": "j1", "user_id": "u-alice"})
    worker = ArchiveProcess(
        server, tmp_path / "first.log", worker_drain_seconds=drain_seconds, **settings
    )
    vault = server.config.gas.vault
    glacier = server.client("glacier")
    wait_for(
        lambda: (
            multipart_uploads(server)
            and glacier.list_parts(
                vaultName=vault, uploadId=multipart_uploads(server)[0]["MultipartUploadId"]
            )["Parts"]
        ),
        timeout=60,
        what="the first uploaded part",
    )
    # stop() fails if the process outlives its grace by more than 10 s
    assert worker.stop(timeout=int(drain_seconds) + 10) == 0, worker.log
    return data, worker


def test_sigterm_during_a_multipart_upload_finishes_it_within_the_grace(
    server: Server, tmp_path: Path
) -> None:
    # Given a worker stopped mid-upload with a grace long enough to finish
    data, first = sigterm_mid_upload(server, tmp_path, "60")
    # Then that worker itself archived the result before it exited
    log = first.log
    assert "job=j1 receives=1 outcome=done" in log and "reason='archived'" in log, log
    assert vault_archive_count(server) == 1 and not result_exists(server)
    assert multipart_uploads(server) == []
    # And a restarted worker finds nothing left to do
    restarted = run_once(server, tmp_path)
    assert "outcome=" not in restarted.log
    assert archived_bytes(server, job(server)[ARCHIVE_ID]) == data


def test_sigterm_during_a_multipart_upload_abandons_it_when_the_grace_is_short(
    server: Server, tmp_path: Path
) -> None:
    # Given a worker stopped mid-upload with a 5 s grace, far too short for 48 parts sent one
    # at a time, each 200 ms late (a proxy between the worker and Glacier), yet long enough
    # for the part under way and the abort after the cancel (the grace's last second)
    proxy, endpoint = faults.launch(
        server.env["AWS_ENDPOINT_URL"], latency_ms=200, services=["glacier"]
    )
    try:
        data, first = sigterm_mid_upload(
            server, tmp_path, "5", gas_transfer_threads="1", env={"AWS_ENDPOINT_URL": endpoint}
        )
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    # Then it gave the upload up: aborted, nothing archived, the message handed back at once
    assert "reason='worker stopping: upload abandoned'" in first.log, first.log
    assert "outcome=done" not in first.log
    assert ARCHIVE_ID not in job(server) and result_exists(server)
    assert vault_archive_count(server) == 0 and multipart_uploads(server) == []
    # And a restarted worker archives the result, once
    run_once(server, tmp_path)
    assert vault_archive_count(server) == 1 and not result_exists(server)
    assert archived_bytes(server, job(server)[ARCHIVE_ID]) == data
    assert multipart_uploads(server) == []
