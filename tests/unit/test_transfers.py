"""Parallel vault transfers: parts `threads` at a time, memory bounded, nothing committed on a
failure, for archive's upload and thaw's copy back alike; progress lines."""

from __future__ import annotations

import itertools
import logging
import os
import threading

import pytest

from tests.conftest import Stack, archived_bytes, vault_archive_count, wait_for
from util.archives import Completion, Progress, Status
from util.archives.layout import MIB
from util.archives.vault import VaultBackend
from util.archives.vault.glacier import Part, Vault

THREADS = 4


class Concurrency:
    """How many calls of one kind are under way at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def vault(stack: Stack) -> Vault:
    return Vault(stack.client("glacier"), stack.config.gas.vault, THREADS, 30)


def reader(data: bytes, in_memory: Concurrency, fail_at: int | None = None):
    """Reads ranges of `data`, counting parts read and not yet uploaded."""

    def read_range(first: int, last: int) -> bytes:
        if first == fail_at:
            raise OSError("the source went away")
        in_memory.enter()
        return data[first : last + 1]

    return read_range


def test_parts_go_up_threads_at_a_time_with_that_many_in_memory(stack: Stack) -> None:
    # Given a vault moving 4 parts at once, and an 8-part result
    store = vault(stack)
    data = os.urandom(8 * MIB)
    uploading, in_memory = Concurrency(), Concurrency()
    # Each part waits until 4 are on the wire: only 4 parallel uploads get past it.
    together = threading.Barrier(THREADS, timeout=10)

    def before(**_) -> None:
        uploading.enter()
        together.wait()

    def after(**_) -> None:
        uploading.leave()
        in_memory.leave()

    events = store.glacier.meta.events
    events.register("before-call.glacier.UploadMultipartPart", before)
    events.register("after-call.glacier.UploadMultipartPart", after)
    # When it is uploaded in 1 MiB parts and completed
    pending = store.upload_parts(reader(data, in_memory), len(data), "d", MIB)
    archive_id = store.complete(pending)
    # Then 4 parts went up at once, never more were held, and the archive is the same bytes
    assert uploading.most == THREADS and in_memory.most == THREADS
    assert archived_bytes(stack, archive_id) == data


@pytest.mark.parametrize("failure", ["read", "upload"])
def test_a_failed_part_commits_nothing(stack: Stack, failure: str) -> None:
    # Given an 8-part upload whose sixth part fails (its source, or Glacier refusing it)
    store = vault(stack)
    data = os.urandom(8 * MIB)
    calls: list[str] = []
    in_memory = Concurrency()

    def before_part(params, **_) -> None:
        calls.append("part")
        if failure == "upload" and params["range"].startswith(f"bytes {5 * MIB}-"):
            raise ConnectionError("connection reset")

    events = store.glacier.meta.events
    events.register("provide-client-params.glacier.UploadMultipartPart", before_part)
    events.register("after-call.glacier.UploadMultipartPart", lambda **_: calls.append("done"))
    events.register("before-call.glacier.AbortMultipartUpload", lambda **_: calls.append("abort"))
    fail_at = 5 * MIB if failure == "read" else None
    # When it is uploaded
    with pytest.raises((IOError, ConnectionError)):
        store.upload_parts(reader(data, in_memory, fail_at), len(data), "d", MIB)
    # Then the upload was aborted after every part under way had ended, and no archive exists
    assert calls[-1] == "abort" and calls.count("abort") == 1
    glacier = stack.client("glacier")
    assert glacier.list_multipart_uploads(vaultName=stack.config.gas.vault)["UploadsList"] == []
    assert vault_archive_count(stack) == 0


def finished_retrieval(stack: Stack, store: Vault, data: bytes) -> dict:
    archive_id = store.complete(
        store.upload_parts(lambda a, b: data[a : b + 1], len(data), "d", MIB)
    )
    job_id = store.glacier.initiate_job(
        vaultName=store.name,
        jobParameters={"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited"},
    )["jobId"]
    return wait_for(
        lambda: (lambda j: j if j["Completed"] else None)(
            store.glacier.describe_job(vaultName=store.name, jobId=job_id)
        ),
        timeout=30,
        what="the retrieval",
    )


def retrieved(stack: Stack, size: int) -> tuple[VaultBackend, Completion, bytes]:
    """A thaw back end moving THREADS parts at once in 8 MiB parts, and a finished retrieval
    of `size` random bytes."""
    from localaws import settings as local_settings

    local_settings.configure(expedited_seconds=0)
    stack.config.gas.transfer_threads = THREADS
    stack.config.thaw.part_size_mib = 8
    backend = VaultBackend(stack.config, stack.aws)
    data = os.urandom(size)
    job = finished_retrieval(stack, backend.vault, data)
    completion = Completion(
        job["JobId"],
        "j1",
        job["ArchiveId"],
        Status.SUCCEEDED,
        "",
        int(job["ArchiveSizeInBytes"]),
        job,
    )
    return backend, completion, data


def copy_back(stack: Stack, backend: VaultBackend, completion: Completion) -> None:
    backend.copy_back(completion, stack.config.gas.results_bucket, "back", None, threading.Event())


def uploads_left(stack: Stack) -> list:
    s3 = stack.client("s3")
    return s3.list_multipart_uploads(Bucket=stack.config.gas.results_bucket).get("Uploads", [])


def test_thaw_moves_threads_parts_at_once_each_fetched_only_when_its_thread_is_free(
    stack: Stack,
) -> None:
    # Given a retrieval of five 8 MiB parts and a back end moving 4 at once
    backend, completion, data = retrieved(stack, 5 * 8 * MIB)
    fetched, uploading, in_memory = Concurrency(), Concurrency(), Concurrency()
    # The first 4 uploads wait until all 4 are on the wire: only parallel ones get past.
    together, arrivals = threading.Barrier(THREADS, timeout=10), itertools.count()

    def before_upload(**_) -> None:
        uploading.enter()
        if next(arrivals) < THREADS:
            together.wait()

    def uploaded(**_) -> None:
        uploading.leave()
        in_memory.leave()

    backend.vault.glacier.meta.events.register(
        "after-call.glacier.GetJobOutput", lambda **_: (fetched.enter(), in_memory.enter())
    )
    backend.s3.meta.events.register("before-call.s3.UploadPart", before_upload)
    backend.s3.meta.events.register("after-call.s3.UploadPart", uploaded)
    # When it is copied back
    copy_back(stack, backend, completion)
    # Then 4 parts went up at once, never more than 4 were held between their fetch and the
    # end of their upload, every range was fetched once, and the bytes are back
    assert uploading.most == THREADS and in_memory.most == THREADS
    assert fetched.now == 5
    back = stack.client("s3").get_object(Bucket=stack.config.gas.results_bucket, Key="back")
    assert back["Body"].read() == data and back["ETag"].endswith('-5"')


@pytest.mark.parametrize("failure", ["fetch", "upload"])
def test_a_failed_thaw_part_commits_nothing(stack: Stack, failure: str) -> None:
    # Given a five-part copy back whose last part fails (Glacier's range, or S3 refusing it)
    backend, completion, _ = retrieved(stack, 5 * 8 * MIB)
    calls: list[str] = []

    def fetch(params, **_) -> None:
        if failure == "fetch" and params["range"].startswith(f"bytes={4 * 8 * MIB}-"):
            raise ConnectionError("connection reset")

    def upload(params, **_) -> None:
        calls.append("part")
        if failure == "upload" and params["PartNumber"] == 5:
            raise ConnectionError("connection reset")

    backend.vault.glacier.meta.events.register("provide-client-params.glacier.GetJobOutput", fetch)
    events = backend.s3.meta.events
    events.register("provide-client-params.s3.UploadPart", upload)
    events.register("after-call.s3.UploadPart", lambda **_: calls.append("done"))
    events.register("before-call.s3.AbortMultipartUpload", lambda **_: calls.append("abort"))
    # When it is copied back
    with pytest.raises(ConnectionError):
        copy_back(stack, backend, completion)
    # Then the upload was aborted after every part under way had ended, and nothing is there
    assert calls[-1] == "abort" and calls.count("abort") == 1
    assert uploads_left(stack) == []
    listing = stack.client("s3").list_objects_v2(Bucket=stack.config.gas.results_bucket)
    assert listing.get("KeyCount", 0) == 0


class Stream:
    """A response body that records how much each read asked for."""

    def __init__(self, data: bytes):
        self.data, self.asked = data, []

    def read(self, amount: int) -> bytes:
        self.asked.append(amount)
        chunk, self.data = self.data[:amount], self.data[amount:]
        return chunk


def test_a_part_is_filled_in_small_reads_and_read_back_as_views_of_its_mapping() -> None:
    # Given a 3 MiB range arriving from Glacier
    data = os.urandom(3 * MIB)
    stream = Stream(data)
    # When a part of that size is filled from it, then read as botocore and urllib3 read it
    with Part(len(data)) as part:
        got = part.fill(stream)
        chunks = [part.read(MIB) for _ in range(4)]
        part.seek(0)
        again = part.read()
        # Then no read asked for more than a small chunk (no buffer of the part's size is
        # made), every read back is a view of the part's own memory, and the bytes are whole
        assert got == len(data) == len(part)
        assert max(stream.asked) <= Part.CHUNK
        assert all(isinstance(chunk, memoryview) for chunk in [*chunks, again])
        assert b"".join(chunks) == bytes(again) == data and len(chunks[-1]) == 0
    # A body longer than the range is told apart from a whole one
    with Part(MIB) as part:
        assert part.fill(Stream(os.urandom(MIB + 5))) == MIB + 1


def test_a_long_transfer_logs_its_progress(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = Progress("upload x", 100 * MIB, every=30, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="gas"):
        progress.add(10 * MIB)  # under 30 s: nothing
        now[0] = 40.0
        progress.add(30 * MIB)
        now[0] = 50.0
        progress.add(10 * MIB)  # under 30 s since the last line: nothing
    [line] = [r.getMessage() for r in caplog.records]
    assert line == "upload x: 40.0 of 100.0 MiB (40%), 1.0 MiB/s, about 60s left"
