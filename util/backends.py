"""Where archived results live: a Glacier vault, or S3's Glacier storage classes.

The vault API takes no new AWS accounts since 2025-12-15, so ``[gas] archive_backend``
chooses between the vault the original GAS used and S3 storage classes. Archive, restore and
thaw speak only to the `Backend` interface; everything that differs is here:

- archive: the vault streams the result into a multipart upload, tree-hash checked; s3 makes
  a server-side copy into the archive bucket, storage class GLACIER or DEEP_ARCHIVE (one
  CopyObject up to 5 GiB, only onto a free key; multipart above);
- archive id: Glacier's archive id; the archive object's key, ``<prefix><job_id>/<ETag>``
  (one key per job and content, so a copy made again after a crash lands on itself);
- retrieval: InitiateJob (archive-retrieval); RestoreObject;
- retrieval id: the Glacier job id; the archive object's key (S3 restores have no id);
- completion notice, on the thaw topic: Glacier's job notice; the archive bucket's
  ``s3:ObjectRestore:Completed`` event, or restore's own announcement when RestoreObject
  answers 200 (the object is restored already, and S3 sends no second event);
- copy back: ranged job output, tree-hash checked, into an S3 upload; a server-side copy into
  STANDARD, checked by the CRC64NVME checksum S3 computes of the copy against the archive's.

Copies are verified by checksums S3 computes, never by ETags: an object encrypted with SSE-KMS,
DSSE-KMS or SSE-C has an ETag that is no MD5 of its bytes (S3 API reference, ``Object``), and
many organisations encrypt every bucket that way. S3 computes a full-object CRC64NVME of the
bytes whatever the encryption and the part layout (user guide, "Checking object integrity"), so
the archive is copied asking for one, and so is the copy back; the two are equal exactly when
the bytes are.

Copies told apart by their ETags. Archive deletes the S3 result only while it still has the
ETag that was archived (``DeleteObject`` with ``If-Match``), so that a late or duplicate archive
message never deletes a copy thaw has put back. That fence only asks whether two ETags are
equal. Unencrypted (or SSE-S3), equal bytes uploaded with an equal part layout get equal ETags
(an MD5 of the bytes, or of the parts' MD5s with ``-<parts>``), so every copy that may come back
to the result's key is made with another number of parts than the original
(`distinct_layout`), and a copy back that has the original's ETag all the same is not kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import quote_plus, unquote_plus

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from s3transfer.exceptions import S3CopyFailedError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster

from util.glacier import (
    MIB,
    ChecksumMismatch,
    ExpeditedUnavailable,
    PendingArchive,
    Progress,
    SourceChanged,
    UploadCancelled,
    Vault,
)
from util.helpers import (
    S3_NOT_FOUND,
    S3_PRECONDITION_FAILED,
    USER_ID,
    Aws,
    InvalidMessage,
    final_answers,
    head_object,
)
from util.messages import require_str
from util.util_config import Config

EXPEDITED, STANDARD = "Expedited", "Standard"
# GONE: the back end knows no such retrieval (Glacier job) or archive (S3 object).
SUCCEEDED, FAILED, IN_PROGRESS, GONE = "Succeeded", "Failed", "InProgress", "Gone"
# The checksum S3 computes of every copy: full-object whatever the part layout, and, unlike an
# ETag, of the bytes under every kind of encryption.
CHECKSUM = "CRC64NVME"
# Archives made before they carried CHECKSUM keep the part layout of their copy here (0: one
# request), for their copy back to be compared by ETag (`S3Backend.copy_back_by_etag`).
PART_SIZE_METADATA = "gas-copy-part-size"
CANCEL_POLL_SECONDS = 0.2
MIN_PART = 5 * MIB  # S3's smallest part but the last
MAX_SINGLE_COPY = 5 * 1024 * MIB  # S3's largest CopyObject
RESTORED_ALREADY = "gas.restore"  # eventSource of restore's own ObjectRestore:Completed
NO_CAPACITY = "GlacierExpeditedRetrievalNotAvailable"  # RestoreObject's "no Expedited now"


@dataclass
class Source:
    """The S3 result being archived, as the back end's first look saw it (`Backend.source`).

    `first_part`: bytes already read from its start (the vault's look is the first ranged
    GET of the upload), handed over once by `take_first_part`.
    """

    bucket: str
    key: str
    size: int
    etag: str
    first_part: bytes = b""

    def take_first_part(self) -> bytes:
        first, self.first_part = self.first_part, b""
        return first


def head_source(s3: BaseClient, bucket: str, key: str) -> Source | None:
    """The result's size and ETag from a HeadObject; None if there is no such object."""
    head = head_object(s3, bucket, key)
    return None if head is None else Source(bucket, key, head["ContentLength"], head["ETag"])


def etag_parts(etag: str) -> int:
    """How many parts an object with this ETag was uploaded in; 0 for a single request."""
    _, dash, tail = etag.strip('"').rpartition("-")
    return int(tail) if dash and tail.isdigit() else 0


def parts(size: int, part_size: int) -> int:
    """How many parts s3transfer makes of `size` bytes with `part_size` (it may enlarge it)."""
    return max(1, math.ceil(size / ChunksizeAdjuster().adjust_chunksize(part_size, size)))


def one_part_etag(md5_etag: str) -> str:
    """The ETag of a one-part multipart copy of an object whose ETag is the MD5 `md5_etag`
    (an archive made without CHECKSUM, in an unencrypted bucket)."""
    md5 = bytes.fromhex(md5_etag.strip('"'))
    return f'"{hashlib.md5(md5).hexdigest()}-1"'


def distinct_layout(size: int, avoid: str | None, part_size: int) -> int:
    """A part size whose copy of `size` bytes cannot have the ETag `avoid`; 0: one request.

    The configured part size unless that makes as many parts as `avoid` has, then twice it,
    then S3's smallest part; a one-part original of at most 5 MiB is copied in one request.
    """
    taken = None if avoid is None else etag_parts(avoid)
    for candidate in (part_size, 2 * part_size, MIN_PART):
        if parts(size, candidate) != taken:
            return candidate
    return 0


class _Transfer(BaseSubscriber):
    """Tells s3transfer the size (and for a copy, the ETag) it would otherwise look up, logs
    its progress, and says when the transfer is over."""

    def __init__(self, size: int, progress: Progress, etag: str | None = None):
        self.size, self.progress, self.etag = size, progress, etag
        self.over = threading.Event()

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self.progress.add(bytes_transferred)

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        if self.etag is not None:
            future.meta.provide_object_etag(self.etag)

    def on_done(self, future: Any, **kwargs: Any) -> None:
        self.over.set()


class _Managers:
    """A back end's s3transfer managers, one per part size (a copy back uses the archive
    copy's), each made once and shared by every transfer: `threads` requests at once."""

    def __init__(self, s3: BaseClient, threads: int):
        self.s3, self.threads = s3, threads
        self.made: dict[int, TransferManager] = {}
        self.lock = threading.Lock()

    def for_parts(self, part_size: int) -> TransferManager:
        """Copies in parts of `part_size`, always multipart; 0: in one request (up to
        5 GiB)."""
        with self.lock:
            if part_size not in self.made:
                config = (
                    TransferConfig(
                        multipart_threshold=1,
                        multipart_chunksize=part_size,
                        max_request_concurrency=self.threads,
                    )
                    if part_size
                    else TransferConfig(
                        multipart_threshold=MAX_SINGLE_COPY + 1,
                        max_request_concurrency=self.threads,
                    )
                )
                self.made[part_size] = TransferManager(self.s3, config)
            return self.made[part_size]


@dataclass(frozen=True)
class Completion:
    """What a completion notice says, as far as the back end can vouch for it."""

    retrieval_id: str
    job_id: str
    archive_id: str | None  # None: Glacier knows no such job
    status: str  # Succeeded | Failed | InProgress | Gone
    detail: str = ""
    source: Any = None  # the back end's own description: DescribeJob, or HeadObject

    @property
    def size(self) -> int:
        """The retrieved archive's size in bytes (0 if the back end did not say)."""
        source = self.source or {}
        return int(source.get("ArchiveSizeInBytes") or source.get("ContentLength") or 0)


class Backend(Protocol):
    """What archive, restore and thaw need from where archives live."""

    def source(self, bucket: str, key: str) -> Source | None:
        """The S3 result about to be archived, or None if there is no such object."""

    def archive(
        self,
        job: dict[str, Any],
        source: Source,
        cancelled: threading.Event,
        save: Callable[[dict[str, Any]], None],
        again: bool,
    ) -> str:
        """Copy the result into an archive; its id. Nothing is deleted.

        A back end whose archive cannot be made again under the same id calls `save` with
        what `resume` needs to finish it, before it is committed. `again`: an earlier
        delivery of the message may have made it already.
        """

    def resume(self, pending: dict[str, Any]) -> str | None:
        """Finish an archive `save` was given; its id, or None if that can no longer be done."""

    def delete(self, archive_id: str) -> None:
        """Delete an archive; one already gone counts as deleted."""

    def tiers(self, archive_id: str) -> Sequence[str]:
        """The retrieval tiers to try, in order."""

    def start_retrieval(self, archive_id: str, job_id: str, tier: str) -> str:
        """Start bringing an archive back; the retrieval id its completion notice will name.

        Raises ExpeditedUnavailable when there is no Expedited capacity.
        """

    def completion(self, notice: dict[str, Any]) -> Completion | None:
        """Read a completion notice; None if there is nothing to do, InvalidMessage if it is
        not one."""

    def copy_back(
        self,
        completion: Completion,
        bucket: str,
        key: str,
        avoid_etag: str | None,
        cancelled: threading.Event,
    ) -> None:
        """Put the retrieved archive at bucket/key, verified, with an ETag other than
        `avoid_etag`; raises ChecksumMismatch or UploadCancelled having committed nothing."""


def backend_for(config: Config, aws: Aws) -> Backend:
    if config.gas.archive_backend == "s3":
        return S3Backend(config, aws)
    return VaultBackend(config, aws)


class VaultBackend:
    """Archives in a Glacier vault (util/glacier.py)."""

    def __init__(self, config: Config, aws: Aws):
        self.vault = Vault(
            aws.client("glacier"),
            config.gas.vault,
            config.gas.transfer_threads,
            config.gas.progress_seconds,
        )
        self.thaw_topic = config.gas.thaw_topic
        self.aws = aws
        self.s3 = aws.client("s3")
        self.archive_part_size = config.archive.part_size_mib * MIB
        self.thaw_part_size = config.thaw.part_size_mib * MIB

    def source(self, bucket: str, key: str) -> Source | None:
        """The first part's ranged GET: the size (``Content-Range``) and the ETag every other
        part is read pinned to, and the part itself, kept for the upload."""
        try:
            first = self.s3.get_object(
                Bucket=bucket, Key=key, Range=f"bytes=0-{self.archive_part_size - 1}"
            )
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in S3_NOT_FOUND:
                return None
            if code == "InvalidRange":  # no byte 0: an empty object, which has no range
                return head_source(self.s3, bucket, key)
            raise
        size = int(first["ContentRange"].rpartition("/")[2])
        return Source(bucket, key, size, first["ETag"], first["Body"].read())

    def archive(
        self,
        job: dict[str, Any],
        source: Source,
        cancelled: threading.Event,
        save: Callable[[dict[str, Any]], None],
        again: bool,
    ) -> str:
        """Stream the result into the vault, one ranged GET per part, pinned to its ETag."""

        def read_range(first: int, last: int) -> bytes:
            if first == 0:
                part = source.take_first_part()  # read by `source` already
                if last < len(part):
                    return part[: last + 1]
            return self.s3.get_object(
                Bucket=source.bucket,
                Key=source.key,
                Range=f"bytes={first}-{last}",
                IfMatch=source.etag,
            )["Body"].read()

        description = json.dumps({"job_id": job["job_id"], "user_id": job[USER_ID]})
        pending = self.vault.upload_parts(
            read_range, source.size, description, self.archive_part_size, cancelled
        )
        try:
            save(asdict(pending))
        except BaseException:
            self.vault.abort(pending.upload_id)
            raise
        archive_id = self.vault.complete(pending)
        if archive_id is None:
            raise RuntimeError(f"Glacier lost upload {pending.upload_id} before its completion")
        return archive_id

    def resume(self, pending: dict[str, Any]) -> str | None:
        return self.vault.complete(PendingArchive(**pending))

    def delete(self, archive_id: str) -> None:
        self.vault.delete(archive_id)

    def tiers(self, archive_id: str) -> Sequence[str]:
        return (EXPEDITED, STANDARD)

    def start_retrieval(self, archive_id: str, job_id: str, tier: str) -> str:
        # The request token finds the job again if InitiateJob's answer is lost.
        description = json.dumps({"job_id": job_id, "request": uuid.uuid4().hex})
        return self.vault.start_retrieval(
            archive_id, description, self.aws.topic_arn(self.thaw_topic), tier
        )

    def completion(self, notice: dict[str, Any]) -> Completion:
        """The notice names a Glacier job; Glacier (DescribeJob) says the rest."""
        glacier_job_id, description = require_str(notice, "JobId", "JobDescription")
        try:
            job_id = json.loads(description)["job_id"]
        except (ValueError, TypeError, KeyError):
            job_id = None
        if not isinstance(job_id, str) or not job_id:
            raise InvalidMessage(f"JobDescription {description[:100]!r} names no job")
        described = self.vault.describe_job(glacier_job_id)
        if described is None:
            return Completion(glacier_job_id, job_id, None, GONE, "Glacier has no such job")
        return Completion(
            glacier_job_id,
            job_id,
            described["ArchiveId"],
            described["StatusCode"],
            described.get("StatusMessage") or "",
            described,
        )

    def copy_back(
        self,
        completion: Completion,
        bucket: str,
        key: str,
        avoid_etag: str | None,
        cancelled: threading.Event,
    ) -> None:
        """The job output into an S3 multipart upload, completed only once verified whole.

        Each part is one thread's from start to end: its range fetched from Glacier and
        checked, then uploaded, `transfer_threads` parts at once on the vault's pool
        (`Vault.in_parts`), so at most that many are in memory and every thread moves bytes
        all the time. (s3transfer reads a stream in one thread, so fetching in parallel would
        need ranges buffered ahead of it, besides its own parts.) Anything failing aborts
        the upload once no part is under way: nothing is committed.
        """
        size = int(completion.source["ArchiveSizeInBytes"])
        output = self.vault.job_output(completion.source, cancelled)
        part_size = distinct_layout(size, avoid_etag, self.thaw_part_size)
        if part_size == 0:  # at most 5 MiB (distinct_layout): one verified read, one request
            with output.read(0, size - 1) as body:
                output.verify()
                self.s3.put_object(Bucket=bucket, Key=key, Body=body)
            return
        part_size = ChunksizeAdjuster().adjust_chunksize(part_size, size)  # as `parts` counts
        starts = range(0, size, part_size)
        progress = Progress(f"thaw to s3://{bucket}/{key}", size, self.vault.progress_seconds)
        upload_id = self.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        where = {"Bucket": bucket, "Key": key, "UploadId": upload_id}

        def move(first: int) -> str:
            with output.read(first, min(first + part_size, size) - 1) as body:
                etag = self.s3.upload_part(**where, PartNumber=first // part_size + 1, Body=body)
                progress.add(len(body))
            return etag["ETag"]

        try:
            etags = self.vault.in_parts(starts, move)
            output.verify()
            self.s3.complete_multipart_upload(
                **where,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": etags[s]} for n, s in enumerate(starts, 1)]
                },
            )
        except BaseException:
            try:
                self.s3.abort_multipart_upload(**where)
            except ClientError:
                pass  # best effort: an upload nobody completes commits nothing
            raise


class S3Backend:
    """Archives as S3 objects in a Glacier storage class, restored in place."""

    def __init__(self, config: Config, aws: Aws):
        self.aws = aws
        self.s3 = aws.client("s3")
        self.bucket = config.gas.archive_bucket
        self.prefix = config.gas.archive_prefix
        self.storage_class = config.gas.archive_storage_class
        self.restore_days = config.restore.restore_days
        self.part_size = config.gas.copy_part_size_mib * MIB
        self.thaw_topic = config.gas.thaw_topic
        self.progress_seconds = config.gas.progress_seconds
        self.transfers = _Managers(self.s3, config.gas.transfer_threads)
        final_answers(self.s3, "RestoreObject", NO_CAPACITY)

    def source(self, bucket: str, key: str) -> Source | None:
        return head_source(self.s3, bucket, key)

    def archive(
        self,
        job: dict[str, Any],
        source: Source,
        cancelled: threading.Event,
        save: Callable[[dict[str, Any]], None],
        again: bool,
    ) -> str:
        """A server-side copy into the archive class: no byte passes through the worker.

        The key is the job's and the content's: a copy made again after a crash, or by a
        racing worker, lands on the same object, so none is left orphaned. None replaces one
        there (which would delete that archive early): a copy in one request is made only onto
        a free key, and a copy in parts looks first when the message comes again.
        """
        content = source.etag.strip('"')
        key = f"{self.prefix}{job['job_id']}/{content}"
        if source.size <= MAX_SINGLE_COPY:
            return self.copy_once(source, key)
        if again and self.head(key) is not None:  # made before, in full (copies are atomic)
            return key
        self.copy(
            {"Bucket": source.bucket, "Key": source.key},
            self.bucket,
            key,
            cancelled,
            {"StorageClass": self.storage_class, "ChecksumAlgorithm": CHECKSUM},
            self.part_size,
            source.size,
            source.etag,  # s3transfer pins every part to it
        )
        return key

    def copy_once(self, source: Source, key: str) -> str:
        """One CopyObject, pinned to the result's ETag, onto a free key only.

        A refused condition is looked at: an object at the key is this archive (our own
        first attempt, whose answer was lost, or a racing copy's); none means the result
        changed, and the error goes up.
        """
        try:
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": source.bucket, "Key": source.key},
                CopySourceIfMatch=source.etag,
                IfNoneMatch="*",
                StorageClass=self.storage_class,
                ChecksumAlgorithm=CHECKSUM,
            )
        except ClientError as exc:
            refused = exc.response["Error"]["Code"] in S3_PRECONDITION_FAILED
            if not refused or self.head(key) is None:
                raise
        return key

    def resume(self, pending: dict[str, Any]) -> str | None:
        return None  # never saves one: the archive key is made again as it was

    def head(self, key: str) -> dict[str, Any] | None:
        """The archive object's HeadObject (with its checksum), or None if there is none."""
        return head_object(self.s3, self.bucket, key, ChecksumMode="ENABLED")

    def delete(self, archive_id: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=archive_id)

    def tiers(self, archive_id: str) -> Sequence[str]:
        # S3 offers no Expedited retrieval for DEEP_ARCHIVE.
        head = self.s3.head_object(Bucket=self.bucket, Key=archive_id)
        if head.get("StorageClass") == "DEEP_ARCHIVE":
            return (STANDARD,)
        return (EXPEDITED, STANDARD)

    def start_retrieval(self, archive_id: str, job_id: str, tier: str) -> str:
        """RestoreObject, safe to repeat. 202: started; 409: started before (by an attempt
        whose answer was lost, or another worker); 200: restored already, which S3 announces
        no more, so it is announced here."""
        try:
            status = self.s3.restore_object(
                Bucket=self.bucket,
                Key=archive_id,
                RestoreRequest={
                    "Days": self.restore_days,
                    "GlacierJobParameters": {"Tier": tier},
                },
            )["ResponseMetadata"]["HTTPStatusCode"]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == NO_CAPACITY:
                raise ExpeditedUnavailable(str(exc)) from None
            if code != "RestoreAlreadyInProgress":
                raise
            status = 409
        if status == 200:
            self.announce_restored(archive_id)
        return archive_id

    def announce_restored(self, archive_id: str) -> None:
        """Publish the ObjectRestore:Completed event S3 sends only for a restore it started."""
        event = {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": RESTORED_ALREADY,
                    "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "eventName": "ObjectRestore:Completed",
                    "s3": {
                        "bucket": {"name": self.bucket},
                        "object": {"key": quote_plus(archive_id)},
                    },
                }
            ]
        }
        self.aws.client("sns").publish(
            TopicArn=self.aws.topic_arn(self.thaw_topic), Message=json.dumps(event)
        )

    def completion(self, notice: dict[str, Any]) -> Completion | None:
        """An ObjectRestore:Completed event for an archive object; the object itself (its
        HeadObject) says whether it is restored."""
        if notice.get("Event") == "s3:TestEvent":  # S3 sends one when notifications are set
            return None
        records = notice.get("Records")
        if not isinstance(records, list) or len(records) != 1 or not isinstance(records[0], dict):
            raise InvalidMessage("not an S3 event notification with one record")
        record = records[0]
        event = record.get("eventName")
        if event != "ObjectRestore:Completed":
            raise InvalidMessage(f"S3 event {event!r} is not ObjectRestore:Completed")
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        key = unquote_plus((s3.get("object") or {}).get("key") or "")
        if bucket != self.bucket or not key.startswith(self.prefix) or "/" not in key:
            raise InvalidMessage(
                f"s3://{bucket}/{key} is not in the archive s3://{self.bucket}/{self.prefix}"
            )
        job_id = key[len(self.prefix) :].rsplit("/", 1)[0]
        head = self.head(key)
        if head is None:
            return Completion(key, job_id, key, GONE, "the archive object is gone")
        restore = head.get("Restore", "")
        if 'ongoing-request="true"' in restore:
            return Completion(key, job_id, key, IN_PROGRESS, "restore in progress", head)
        if 'ongoing-request="false"' not in restore:
            return Completion(key, job_id, key, FAILED, "not restored (or its copy expired)", head)
        return Completion(key, job_id, key, SUCCEEDED, "", head)

    def copy_back(
        self,
        completion: Completion,
        bucket: str,
        key: str,
        avoid_etag: str | None,
        cancelled: threading.Event,
    ) -> None:
        """Copy the restored object back into STANDARD, in another part layout than the
        original's (`copy_back_layout`), then compare the checksum S3 computed of the copy
        with the archive's. A mismatch, or a copy that has the original's ETag all the same,
        deletes that copy, and only it, before raising."""
        archived = completion.source
        expected = archived.get(f"Checksum{CHECKSUM}")
        if expected is None:
            return self.copy_back_by_etag(completion, bucket, key, avoid_etag, cancelled)
        size = archived["ContentLength"]
        self.copy(
            {"Bucket": self.bucket, "Key": completion.retrieval_id},
            bucket,
            key,
            cancelled,
            {
                "StorageClass": "STANDARD",
                "CopySourceIfMatch": archived["ETag"],
                "ChecksumAlgorithm": CHECKSUM,
            },
            self.copy_back_layout(size, avoid_etag),
            size,
            archived["ETag"],
        )
        copied = head_object(self.s3, bucket, key, ChecksumMode="ENABLED") or {}
        if copied.get(f"Checksum{CHECKSUM}") != expected:
            self.discard(bucket, key, copied)
            raise ChecksumMismatch(
                f"copy's {CHECKSUM} {copied.get(f'Checksum{CHECKSUM}')} is not {expected}"
            )
        if copied["ETag"] == avoid_etag:  # a late archive message could delete it
            self.discard(bucket, key, copied)
            raise ChecksumMismatch(f"the copy has the original's ETag {avoid_etag}")

    def copy_back_layout(self, size: int, avoid_etag: str | None) -> int:
        """The fewest requests whose copy cannot have the ETag `avoid_etag` (unknown counts as
        one made in one request): up to 5 GiB, one CopyObject, or one part after an original
        made in one request; above, `distinct_layout`."""
        if size > MAX_SINGLE_COPY:
            return distinct_layout(size, avoid_etag, self.part_size)
        in_one_request = avoid_etag is None or etag_parts(avoid_etag) == 0
        return MAX_SINGLE_COPY if in_one_request else 0

    def copy_back_by_etag(
        self,
        completion: Completion,
        bucket: str,
        key: str,
        avoid_etag: str | None,
        cancelled: threading.Event,
    ) -> None:
        """`copy_back` of an archive made before archives carried CHECKSUM (in a bucket
        without SSE-KMS, or it never came back): copied with the archive copy's part layout,
        the two ETags (MD5s, of the whole or of the parts) are equal exactly when the bytes
        are. One copied in one request with the original's ETag (`avoid_etag`; unknown counts
        as that) is copied back as one part, whose ETag follows from the archive's."""
        archived = completion.source
        part_size = int(archived.get("Metadata", {}).get(PART_SIZE_METADATA, self.part_size))
        expected = archived["ETag"]
        if part_size == 0 and avoid_etag in (None, expected):
            part_size, expected = MAX_SINGLE_COPY, one_part_etag(expected)
        self.copy(
            {"Bucket": self.bucket, "Key": completion.retrieval_id},
            bucket,
            key,
            cancelled,
            {
                "StorageClass": "STANDARD",
                "MetadataDirective": "REPLACE",
                "CopySourceIfMatch": archived["ETag"],
            },
            part_size,
            archived["ContentLength"],
            archived["ETag"],
        )
        copied = self.s3.head_object(Bucket=bucket, Key=key)
        if copied["ETag"] != expected:
            self.discard(bucket, key, copied)
            raise ChecksumMismatch(f"copy's ETag {copied['ETag']} is not {expected}")

    def discard(self, bucket: str, key: str, copied: dict[str, Any]) -> None:
        """Delete a copy back that is not kept, only if it is still that copy."""
        if "ETag" not in copied:
            return
        try:
            self.s3.delete_object(Bucket=bucket, Key=key, IfMatch=copied["ETag"])
        except ClientError:
            pass  # replaced meanwhile: whatever is there now is not ours to delete

    def copy(
        self,
        source: dict[str, str],
        bucket: str,
        key: str,
        cancelled: threading.Event,
        extra: dict[str, Any],
        part_size: int,
        size: int,
        etag: str,
    ) -> None:
        """s3transfer's copy in parts of `part_size` (0: one CopyObject), abandoned if
        `cancelled` is set; `SourceChanged` if the source no longer has the ETag `etag`."""
        progress = Progress(f"copy to s3://{bucket}/{key}", size, self.progress_seconds)
        transfer_state = _Transfer(size, progress, etag)
        future = self.transfers.for_parts(part_size).copy(
            source, bucket, key, extra_args=extra, subscribers=[transfer_state]
        )
        while not transfer_state.over.wait(CANCEL_POLL_SECONDS):
            if cancelled.is_set():
                future.cancel()  # s3transfer aborts the multipart upload
                break
        try:
            future.result()
        except CancelledError:
            raise UploadCancelled(f"copy to s3://{bucket}/{key} abandoned") from None
        except S3CopyFailedError as exc:  # s3transfer's word for a part's failed pin
            raise SourceChanged(str(exc)) from None
