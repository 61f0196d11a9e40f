"""The Glacier vault as the utilities use it: streamed, tree-hash-checked uploads, retrievals
and their verified output, deletes."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import calculate_tree_hash


MIB = 1024 * 1024
MAX_PARTS = 10_000  # Glacier's limit on parts per multipart upload
MAX_PART_SIZE = 4096 * MIB

ReadRange = Callable[[int, int], bytes]  # (first byte, last byte) inclusive -> those bytes


class UploadCancelled(Exception):
    """The transfer was abandoned on request; nothing of it was committed."""


class ExpeditedUnavailable(Exception):
    """Glacier has no Expedited capacity now (InsufficientCapacityException)."""


class ChecksumMismatch(Exception):
    """Retrieved bytes do not match Glacier's SHA-256 tree hash."""


def combine_tree_hashes(digests: list[bytes]) -> str:
    """The whole archive's tree hash from its parts' tree hashes (binary), as hex.

    Parts of a power-of-two number of MiB are whole subtrees of the archive's tree, so the
    parts' hashes combine pairwise exactly as 1 MiB leaves do. botocore only hashes a body
    (`calculate_tree_hash`), so this one step is written here.
    """
    level = digests or [hashlib.sha256(b"").digest()]
    while len(level) > 1:
        pairs = [level[i:i + 2] for i in range(0, len(level), 2)]
        level = [hashlib.sha256(p[0] + p[1]).digest() if len(p) == 2 else p[0] for p in pairs]
    return level[0].hex()


def part_size_for(size: int, configured: int) -> int:
    """The configured part size, doubled as often as needed to stay within 10,000 parts."""
    part = configured
    while part * MAX_PARTS < size and part < MAX_PART_SIZE:
        part *= 2
    return part


def _outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed call may have taken effect: no answer came, or a server error did.

    A client error (4xx) was refused before anything happened; a dropped connection after the
    request landed, or a 5xx, says nothing about whether it did.
    """
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) >= 500
    return isinstance(exc, BotoCoreError)


class _NoBody:
    """The raw body of an answer made here: empty."""

    def stream(self, **_: Any) -> Any:
        return iter(())


@dataclass(frozen=True)
class PendingArchive:
    """A multipart upload whose parts are all in: what completing it, once or again, needs."""

    upload_id: str
    size: int
    tree_hash: str


class Vault:
    """One Glacier vault.

    Every archive goes up as a multipart upload, even a one-part one: UploadArchive is not
    idempotent (a retry after a lost answer makes a second archive), while a part sent again
    replaces itself and CompleteMultipartUpload, repeated, answers the same archive id.
    InitiateJob has no idempotency at all: its description carries a token of the attempt, and
    before botocore sends it again (its answer lost, or a 5xx) the vault's job list is asked
    whether the earlier send started the job (`_started_already`).
    """

    def __init__(self, glacier: BaseClient, name: str):
        self.glacier = glacier
        self.name = name
        self._sent: set[str] = set()  # descriptions of InitiateJob calls under way, sent once
        # First: under moto in process, moto answers every request from its own before-send
        # handler.
        glacier.meta.events.register_first("before-send.glacier.InitiateJob",
                                           self._started_already)

    def upload_parts(self, read_range: ReadRange, size: int, description: str, part_size: int,
                     cancelled: threading.Event | None = None) -> PendingArchive:
        """Upload `size` bytes (at least one) read part by part, without completing the upload.

        At most one part is in memory at a time. Anything failing aborts the upload.
        """
        if size <= 0:
            raise ValueError("Glacier takes no empty archive")
        part_size = part_size_for(size, part_size)
        upload_id = self.glacier.initiate_multipart_upload(
            vaultName=self.name, archiveDescription=description, partSize=str(part_size)
        )["uploadId"]
        try:
            digests = []
            for start in range(0, size, part_size):
                if cancelled is not None and cancelled.is_set():
                    raise UploadCancelled(f"cancelled after {start} of {size} bytes")
                end = min(start + part_size, size) - 1
                body = read_range(start, end)
                if len(body) != end - start + 1:
                    raise OSError(f"source returned {len(body)} bytes for {start}-{end}")
                checksum = calculate_tree_hash(io.BytesIO(body))
                self.glacier.upload_multipart_part(
                    vaultName=self.name, uploadId=upload_id, range=f"bytes {start}-{end}/*",
                    checksum=checksum, body=body,
                )
                digests.append(bytes.fromhex(checksum))
        except BaseException:
            self.abort(upload_id)
            raise
        return PendingArchive(upload_id, size, combine_tree_hashes(digests))

    def complete(self, pending: PendingArchive) -> str | None:
        """The archive id of a completed upload (safe to repeat); None if Glacier no longer
        knows the upload (aborted, or completed too long ago to answer again)."""
        try:
            return self.glacier.complete_multipart_upload(
                vaultName=self.name, uploadId=pending.upload_id, archiveSize=str(pending.size),
                checksum=pending.tree_hash,
            )["archiveId"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise

    def abort(self, upload_id: str) -> None:
        """Best effort: an upload nobody completes commits nothing."""
        try:
            self.glacier.abort_multipart_upload(vaultName=self.name, uploadId=upload_id)
        except ClientError:
            pass

    def start_retrieval(self, archive_id: str, description: str, topic_arn: str,
                        tier: str) -> str:
        """Start an archive-retrieval job that announces its completion on `topic_arn`.

        `description` must be unique to this call: it tells whether a send whose answer never
        came started the job anyway. Raises ExpeditedUnavailable when there is no capacity.
        """
        try:
            return self.glacier.initiate_job(vaultName=self.name, jobParameters={
                "Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": tier,
                "Description": description, "SNSTopic": topic_arn,
            })["jobId"]
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and \
                    exc.response["Error"]["Code"] == "InsufficientCapacityException":
                raise ExpeditedUnavailable(str(exc)) from None
            found = self.find_job(archive_id, description) if _outcome_unknown(exc) else None
            if found is None:
                raise
            return found
        finally:
            self._sent.discard(description)

    def _started_already(self, request: Any, **_: Any) -> AWSResponse | None:
        """Before an InitiateJob is sent again: the job an earlier send started, as Glacier's
        answer, if there is one (botocore takes a before-send handler's answer, as Stubber's)."""
        parameters = json.loads(request.body or b"{}")
        description = parameters.get("Description")
        if description not in self._sent:
            if description is not None:
                self._sent.add(description)
            return None
        job_id = self.find_job(parameters.get("ArchiveId"), description)
        if job_id is None:
            return None
        return AWSResponse(request.url, 202, {"x-amz-job-id": job_id}, _NoBody())

    def find_job(self, archive_id: str, description: str) -> str | None:
        """The id of this vault's job for `archive_id` with exactly `description`, if any."""
        for page in self.glacier.get_paginator("list_jobs").paginate(vaultName=self.name):
            for job in page["JobList"]:
                if job.get("ArchiveId") == archive_id and job.get("JobDescription") == description:
                    return job["JobId"]
        return None

    def describe_job(self, job_id: str) -> dict | None:
        """The job as Glacier describes it, or None if this vault has no such job."""
        try:
            return self.glacier.describe_job(vaultName=self.name, jobId=job_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise

    def job_output(self, job: dict, part_size: int,
                   cancelled: threading.Event | None = None) -> JobOutput:
        """A finished retrieval's output as a verified, readable stream."""
        return JobOutput(self.glacier, self.name, job, part_size, cancelled)

    def delete(self, archive_id: str) -> None:
        """Delete an archive; one that is already gone counts as deleted."""
        try:
            self.glacier.delete_archive(vaultName=self.name, archiveId=archive_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise


class JobOutput:
    """A retrieval job's output, read range by range and checked against its tree hash.

    Ranges are tree-hash aligned (a power-of-two number of MiB), so Glacier sends each one's
    tree hash and they combine into the archive's. A range that does not match raises
    ChecksumMismatch when it is read; the last read raises it if the whole does not match the
    archive's tree hash, before the reader reports the end: a consumer that commits only
    after reading to the end (an S3 multipart upload) never commits unverified bytes.
    """

    def __init__(self, glacier: BaseClient, vault: str, job: dict, part_size: int,
                 cancelled: threading.Event | None = None):
        self.glacier = glacier
        self.vault = vault
        self.job_id = job["JobId"]
        self.size = int(job["ArchiveSizeInBytes"])
        self.tree_hash = job.get("SHA256TreeHash") or job["ArchiveSHA256TreeHash"]
        self.part_size = part_size_for(self.size, part_size)
        self.cancelled = cancelled
        self.position = 0  # first byte not yet fetched
        self.buffer = memoryview(b"")
        self.digests: list[bytes] = []

    def readable(self) -> bool:
        return True

    def read(self, amount: int = -1) -> bytes:
        """Up to `amount` bytes (all that is left if negative); b"" only at the verified end."""
        left = sys.maxsize if amount < 0 else amount
        chunks = []
        while left > 0:
            if not self.buffer:
                if self.position >= self.size:
                    self.verify_whole()
                    break
                self.buffer = memoryview(self.fetch_next_range())
            chunk, self.buffer = self.buffer[:left], self.buffer[left:]
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def fetch_next_range(self) -> bytes:
        if self.cancelled is not None and self.cancelled.is_set():
            raise UploadCancelled(f"cancelled after {self.position} of {self.size} bytes")
        first, last = self.position, min(self.position + self.part_size, self.size) - 1
        response = self.glacier.get_job_output(vaultName=self.vault, jobId=self.job_id,
                                               range=f"bytes={first}-{last}")
        body = response["body"].read()
        if len(body) != last - first + 1:
            raise ChecksumMismatch(f"range {first}-{last}: got {len(body)} bytes")
        tree_hash = calculate_tree_hash(io.BytesIO(body))
        sent = response.get("checksum")
        if sent is not None and sent != tree_hash:
            raise ChecksumMismatch(f"range {first}-{last}: tree hash {tree_hash}, "
                                   f"Glacier sent {sent}")
        self.digests.append(bytes.fromhex(tree_hash))
        self.position = last + 1
        return body

    def verify_whole(self) -> None:
        whole = combine_tree_hashes(self.digests)
        if whole != self.tree_hash:
            raise ChecksumMismatch(f"archive tree hash {whole}, Glacier says {self.tree_hash}")
