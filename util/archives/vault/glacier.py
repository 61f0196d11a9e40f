"""The Glacier vault API as the vault back end uses it: streamed, tree-hash-checked uploads,
retrievals and their verified output, inventories, deletes.

Transfers move `threads` parts at once on one thread pool per vault (per back end), each part
read only when its thread starts on it and let go when that thread is done with it
(`in_parts`): however many transfers share the vault, at most `threads` parts are in memory.
A long transfer logs its progress (`Progress`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import mmap
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import ijson
from botocore.awsrequest import AWSResponse
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import calculate_tree_hash

from util.archives import ChecksumMismatch, ExpeditedUnavailable, Progress, UploadCancelled
from util.archives.layout import MIB
from util.aws import final_answers

NO_CAPACITY = "InsufficientCapacityException"  # InitiateJob's "no Expedited capacity now"
MAX_PARTS = 10_000  # Glacier's limit on parts per multipart upload
MAX_PART_SIZE = 4096 * MIB

ReadRange = Callable[[int, int], bytes]  # (first byte, last byte) inclusive -> those bytes
T = TypeVar("T")

log = logging.getLogger("gas")


def tree_hash_leaves(body: bytes | memoryview) -> list[bytes]:
    """The SHA-256 of each 1 MiB of `body` (binary): the leaves of its tree hash, which
    combine with their neighbours' into a larger range's (botocore gives only the root)."""
    view = memoryview(body)
    return [hashlib.sha256(view[i : i + MIB]).digest() for i in range(0, len(body), MIB)]


def combine_tree_hashes(digests: list[bytes]) -> str:
    """The whole archive's tree hash from its parts' tree hashes (binary), as hex.

    Parts of a power-of-two number of MiB are whole subtrees of the archive's tree, so the
    parts' hashes combine pairwise exactly as 1 MiB leaves do. botocore only hashes a body
    (`calculate_tree_hash`), so this one step is written here.
    """
    level = digests or [hashlib.sha256(b"").digest()]
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
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

    def __init__(
        self, glacier: BaseClient, name: str, threads: int = 1, progress_seconds: float = 30
    ):
        self.glacier = glacier
        self.name = name
        self.threads = threads
        self.progress_seconds = progress_seconds
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="vault-transfer")
        self._sent: set[str] = set()  # descriptions of InitiateJob calls under way, sent once
        # First, before any other handler of the event could answer the request.
        glacier.meta.events.register_first("before-send.glacier.InitiateJob", self._started_already)
        final_answers(glacier, "InitiateJob", NO_CAPACITY)

    def upload_parts(
        self,
        read_range: ReadRange,
        size: int,
        description: str,
        part_size: int,
        cancelled: threading.Event | None = None,
    ) -> PendingArchive:
        """Upload `size` bytes (at least one) read part by part, without completing the upload.

        `threads` parts go up at once, each read when its thread starts on it. Anything
        failing (a part, or `cancelled`) stops the others and aborts the upload once none is
        under way, so nothing of it can be completed.
        """
        if size <= 0:
            raise ValueError("Glacier takes no empty archive")
        part_size = part_size_for(size, part_size)
        upload_id = self.glacier.initiate_multipart_upload(
            vaultName=self.name, archiveDescription=description, partSize=str(part_size)
        )["uploadId"]
        progress = Progress(f"vault upload {upload_id[:12]}", size, self.progress_seconds)

        def send(start: int) -> bytes:
            if cancelled is not None and cancelled.is_set():
                raise UploadCancelled(f"cancelled at byte {start} of {size}")
            end = min(start + part_size, size) - 1
            body = read_range(start, end)
            if len(body) != end - start + 1:
                raise OSError(f"source returned {len(body)} bytes for {start}-{end}")
            checksum = calculate_tree_hash(io.BytesIO(body))
            self.glacier.upload_multipart_part(
                vaultName=self.name,
                uploadId=upload_id,
                range=f"bytes {start}-{end}/*",
                checksum=checksum,
                body=body,
            )
            progress.add(len(body))
            return bytes.fromhex(checksum)

        starts = range(0, size, part_size)
        try:
            digests = self.in_parts(starts, send)
        except BaseException:
            self.abort(upload_id)  # no part is under way any more (in_parts)
            raise
        return PendingArchive(
            upload_id, size, combine_tree_hashes([digests[start] for start in starts])
        )

    def in_parts(self, starts: Iterable[int], move: Callable[[int], T]) -> dict[int, T]:
        """`move(start)` of every start on the pool, `threads` at a time; their results.

        A part is submitted only when one of this transfer's `threads` is free, and the pool
        has `threads` threads for all transfers: `move` reads its part when it starts, so at
        most `threads` parts are in memory. The first failure (or an interrupt) cancels the
        parts not started and is raised once those under way have ended: nothing of them can
        land after the caller aborts.
        """
        sent: dict[Future[T], int] = {}
        done: dict[int, T] = {}

        def collect() -> None:
            running = [f for f, start in sent.items() if start not in done]
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done[sent[future]] = future.result()

        try:
            for start in starts:
                while len(sent) - len(done) >= self.threads:
                    collect()
                sent[self.pool.submit(move, start)] = start
            while len(done) < len(sent):
                collect()
        except BaseException:
            for future in sent:
                future.cancel()
            wait(sent)
            raise
        return done

    def complete(self, pending: PendingArchive) -> str | None:
        """The archive id of a completed upload (safe to repeat); None if Glacier no longer
        knows the upload (aborted, or completed too long ago to answer again)."""
        try:
            return self.glacier.complete_multipart_upload(
                vaultName=self.name,
                uploadId=pending.upload_id,
                archiveSize=str(pending.size),
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

    def start_retrieval(self, archive_id: str, description: str, topic_arn: str, tier: str) -> str:
        """Start an archive-retrieval job that announces its completion on `topic_arn`.

        `description` must be unique to this call: it tells whether a send whose answer never
        came started the job anyway. Raises ExpeditedUnavailable when there is no capacity.
        """
        try:
            return self.glacier.initiate_job(
                vaultName=self.name,
                jobParameters={
                    "Type": "archive-retrieval",
                    "ArchiveId": archive_id,
                    "Tier": tier,
                    "Description": description,
                    "SNSTopic": topic_arn,
                },
            )["jobId"]
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and exc.response["Error"]["Code"] == NO_CAPACITY:
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

    def exists(self) -> bool:
        """Whether the vault exists."""
        try:
            self.glacier.describe_vault(vaultName=self.name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return False
            raise
        return True

    def describe_job(self, job_id: str) -> dict | None:
        """The job as Glacier describes it, or None if this vault has no such job."""
        try:
            return self.glacier.describe_job(vaultName=self.name, jobId=job_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise

    def start_inventory(self) -> str | None:
        """Start an inventory-retrieval job (JSON, no completion notice: nobody consumes one);
        None if the vault has no inventory yet.

        Glacier prepares a vault's first inventory within a day of its creation, and refuses
        an inventory retrieval until then (its developer guide: "if an inventory has not been
        completed for the vault an error is returned"). The code it gives is not documented;
        ResourceNotFoundException, as for a vault that does not exist, is taken to mean that
        only from a vault this process has just listed jobs of.
        """
        try:
            return self.glacier.initiate_job(
                vaultName=self.name,
                jobParameters={"Type": "inventory-retrieval", "Format": "JSON"},
            )["jobId"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise

    def inventory_jobs(self) -> list[dict]:
        """This vault's inventory-retrieval jobs Glacier still knows, oldest first."""
        pages = self.glacier.get_paginator("list_jobs").paginate(vaultName=self.name)
        jobs = [
            job
            for page in pages
            for job in page["JobList"]
            if job.get("Action") == "InventoryRetrieval"
        ]
        return sorted(jobs, key=lambda job: job["CreationDate"])

    def inventory(self, job_id: str) -> Inventory:
        """A finished inventory job's output, read as it streams in."""
        return Inventory(self.glacier.get_job_output(vaultName=self.name, jobId=job_id)["body"])

    def job_output(self, job: dict, cancelled: threading.Event | None = None) -> JobOutput:
        """A finished retrieval's output, read range by range, verified."""
        return JobOutput(self, job, cancelled)

    def delete(self, archive_id: str) -> None:
        """Delete an archive; one that is already gone counts as deleted."""
        try:
            self.glacier.delete_archive(vaultName=self.name, archiveId=archive_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise


class Inventory:
    """A vault inventory (JSON) read as a stream: an inventory of millions of archives is
    never whole in memory. `date` (``InventoryDate``) is known once `archives` has run."""

    def __init__(self, body: Any):
        self.body = body
        self.date: str | None = None

    def archives(self) -> Iterator[dict[str, Any]]:
        """Each ``ArchiveList`` entry: ArchiveId, ArchiveDescription, CreationDate, Size,
        SHA256TreeHash."""
        entry: dict[str, Any] = {}
        for prefix, event, value in ijson.parse(self.body):
            if prefix == "InventoryDate":
                self.date = value
            elif prefix == "ArchiveList.item" and event == "end_map":
                yield entry
                entry = {}
            elif prefix.startswith("ArchiveList.item.") and event not in ("start_map", "map_key"):
                entry[prefix.rpartition(".")[2]] = value


class Part(io.RawIOBase):
    """A part's bytes in an anonymous mapping of their own, read as views of it.

    Neither filling nor reading it allocates a buffer of the part's size: glibc keeps large
    buffers freed by each thread in that thread's arena, which grew a worker moving 8 parts of
    16 MiB at once by about 15 MiB beyond the parts. Closing it gives its memory back.
    """

    CHUNK = 64 * 1024  # read this much at a time: below malloc's threshold for large buffers

    def __init__(self, size: int):
        self.map = mmap.mmap(-1, max(size, 1))
        self.size, self.position = size, 0
        self.view = memoryview(self.map)[:size]

    def fill(self, stream: Any) -> int:
        """Read `stream` into the part; how many bytes it had (more than fit: one more)."""
        filled = 0
        while filled < self.size and (chunk := stream.read(min(self.CHUNK, self.size - filled))):
            self.view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled + len(stream.read(1))

    def __len__(self) -> int:
        return self.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = min(max(0, base + offset), self.size)
        return self.position

    def read(self, amount: int | None = -1) -> memoryview:
        """The next `amount` bytes (all that is left if negative), a view: no copy."""
        end = self.size if amount is None or amount < 0 else min(self.position + amount, self.size)
        chunk, self.position = self.view[self.position : end], end
        return chunk

    def close(self) -> None:
        if not self.closed:
            self.view.release()
            try:
                self.map.close()
            except BufferError:
                pass  # a view of it still held: it goes when the last one does
        super().close()


class JobOutput:
    """A retrieval job's output, read range by range from any thread, each range checked.

    A range must arrive whole, and match the tree hash Glacier sends for it (for a range that
    is tree-hash aligned: a power-of-two number of MiB, or up to the end). Ranges start at
    whole MiB, so their 1 MiB leaves are the archive's own: `verify`, once every range is
    read, combines them into the archive's tree hash. A consumer that commits only after
    `verify` (an S3 multipart upload) never commits unverified bytes.
    """

    def __init__(self, vault: Vault, job: dict, cancelled: threading.Event | None = None):
        self.vault = vault
        self.job_id = job["JobId"]
        self.size = int(job["ArchiveSizeInBytes"])
        self.tree_hash = job.get("SHA256TreeHash") or job["ArchiveSHA256TreeHash"]
        self.cancelled = cancelled
        self.leaves: dict[int, list[bytes]] = {}  # first byte of each range read -> its leaves
        self.lock = threading.Lock()

    def read(self, first: int, last: int) -> Part:
        """Bytes `first`..`last` (inclusive; `first` a multiple of 1 MiB), checked, in a part
        of their own for the caller to close."""
        if first % MIB:
            raise ValueError(f"range {first}-{last} does not start at a whole MiB")
        if self.cancelled is not None and self.cancelled.is_set():
            raise UploadCancelled(f"cancelled at byte {first} of {self.size}")
        response = self.vault.glacier.get_job_output(
            vaultName=self.vault.name, jobId=self.job_id, range=f"bytes={first}-{last}"
        )
        body = Part(last - first + 1)
        try:
            got = body.fill(response["body"])
            if got != len(body):
                raise ChecksumMismatch(f"range {first}-{last}: got {got} bytes")
            leaves = tree_hash_leaves(body.view)
            tree_hash = combine_tree_hashes(leaves)
            sent = response.get("checksum")
            if sent is not None and sent != tree_hash:
                raise ChecksumMismatch(
                    f"range {first}-{last}: tree hash {tree_hash}, Glacier sent {sent}"
                )
        except BaseException:
            body.close()
            raise
        with self.lock:
            self.leaves[first] = leaves
        return body

    def verify(self) -> None:
        """Raise ChecksumMismatch unless the ranges read make the archive Glacier names."""
        leaves = [leaf for first in sorted(self.leaves) for leaf in self.leaves[first]]
        whole = combine_tree_hashes(leaves)
        if whole != self.tree_hash:
            raise ChecksumMismatch(f"archive tree hash {whole}, Glacier says {self.tree_hash}")
