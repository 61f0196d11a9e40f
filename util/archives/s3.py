"""The S3 back end: archives as objects in an S3 Glacier storage class, restored in place.

An archive is a server-side copy of the result into ``archive_bucket`` at
``<archive_prefix><job_id>/<ETag>`` (the job's and the content's key: a copy made again lands
on itself), asking S3 for its CRC64NVME checksum; a retrieval is a RestoreObject, announced by
the bucket's ``s3:ObjectRestore:Completed`` event on the thaw topic; the copy back is checked
by the checksum S3 computes of it, never by ETags (under SSE-KMS an ETag is no MD5).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from s3transfer.exceptions import S3CopyFailedError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from util.archives import (
    EXPEDITED,
    STANDARD,
    ChecksumMismatch,
    Completion,
    ExpeditedUnavailable,
    Listing,
    Progress,
    Source,
    SourceChanged,
    Status,
    Upload,
    UploadCancelled,
    head_source,
)
from util.archives.layout import (
    MAX_SINGLE_COPY,
    MIB,
    distinct_layout,
    etag_parts,
    one_part_etag,
)
from util.aws import S3_PRECONDITION_FAILED, Aws, final_answers, head_object
from util.helpers import InvalidMessage
from util.resources import RESTORE_COMPLETED
from util.util_config import Config

# The checksum S3 computes of every copy: full-object whatever the part layout, and, unlike an
# ETag, of the bytes under every kind of encryption.
CHECKSUM = "CRC64NVME"
# Archives made before they carried CHECKSUM keep the part layout of their copy here (0: one
# request), for their copy back to be compared by ETag (`S3Backend.copy_back_by_etag`).
PART_SIZE_METADATA = "gas-copy-part-size"
CANCEL_POLL_SECONDS = 0.2
RESTORED_ALREADY = "gas.restore"  # eventSource of restore's own ObjectRestore:Completed
NO_CAPACITY = "GlacierExpeditedRetrievalNotAvailable"  # RestoreObject's "no Expedited now"
# How a copy back is checked: the reason it is not kept (None: kept), its part size, and what
# the copy asks of S3.
Verify = tuple[Callable[[dict[str, Any]], str | None], int, dict[str, Any]]


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


class S3Backend:
    """Archives as S3 objects in a Glacier storage class, restored in place."""

    PUBLISHER = "s3.amazonaws.com"
    IN_BUCKET = True

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

    def upload(
        self, job_id: str, user_id: str, source: Source, cancelled: threading.Event
    ) -> Upload:
        """A server-side copy into the archive class: no byte passes through the worker.

        The key is the job's and the content's: a copy made again after a crash, or by a
        racing worker, lands on the same object, so none is left orphaned. None replaces one
        there (which would delete that archive early): a copy in one request is made only onto
        a free key, and a copy in parts (above 5 GiB) looks first.
        """
        key = self.key(job_id, source.etag)
        if source.size <= MAX_SINGLE_COPY:
            return Upload(archive_id=self.copy_once(source, key))
        if self.head(key) is not None:  # made before, in full (copies are atomic)
            return Upload(archive_id=key)
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
        return Upload(archive_id=key)

    def key(self, job_id: str, etag: str) -> str:
        return f"{self.prefix}{job_id}/{etag.strip(chr(34))}"

    def commit(self, upload: Upload) -> str | None:
        return upload.archive_id  # the copy is the archive

    def abandon(self, upload: Upload) -> None:
        pass  # a copy made whole stays: the message delivered again finds it (`of_content`)

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

    def head(self, key: str) -> dict[str, Any] | None:
        """The archive object's HeadObject (with its checksum), or None if there is none."""
        return head_object(self.s3, self.bucket, key, ChecksumMode="ENABLED")

    def listing(self, now: float) -> Listing:
        """The archive prefix's objects, listed at `now`."""
        archives = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for entry in page.get("Contents", []):
                job_id, slash, _ = entry["Key"][len(self.prefix) :].rpartition("/")
                if slash and job_id:
                    archives[entry["Key"]] = (job_id, entry["LastModified"].timestamp())
        return Listing(archives, now)

    def prepare_listing(self) -> str:
        return ""  # listed afresh at each pass

    def exists(self, archive_id: str) -> tuple[bool, float] | None:
        head = self.head(archive_id)
        return (False, 0.0) if head is None else (True, head["LastModified"].timestamp())

    def of_content(self, archive_id: str, etag: str) -> bool:
        """Its key is the one `upload` gives a copy of the result with this ETag."""
        job_id = archive_id[len(self.prefix) :].rpartition("/")[0]
        return archive_id.startswith(self.prefix) and archive_id == self.key(job_id, etag)

    def check_store(self) -> tuple[bool, str, str]:
        """The archive bucket announces completed restores on the thaw topic (its event
        notification: what thaw waits for)."""
        bucket, topic = self.bucket, self.aws.topic_arn(self.thaw_topic)
        try:
            configuration = self.s3.get_bucket_notification_configuration(Bucket=bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
                raise
            return False, f"bucket {bucket}: missing", "create it (deploy/cloudformation/gas.yaml)"
        announced = [
            c["TopicArn"]
            for c in configuration.get("TopicConfigurations", [])
            if RESTORE_COMPLETED in c["Events"]
        ]
        if topic in announced:
            return True, f"bucket {bucket}: announces restores on {self.thaw_topic}", ""
        return (
            False,
            f"bucket {bucket}: does not announce restores on {self.thaw_topic}",
            f"add a notification of {RESTORE_COMPLETED} to the topic "
            "(deploy/cloudformation/gas.yaml)",
        )

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
            return Completion(key, job_id, key, Status.GONE, "the archive object is gone")
        restore, size = head.get("Restore", ""), head["ContentLength"]
        if 'ongoing-request="true"' in restore:
            status, detail = Status.IN_PROGRESS, "restore in progress"
        elif 'ongoing-request="false"' not in restore:
            status, detail = Status.FAILED, "not restored (or its copy expired)"
        else:
            status, detail = Status.SUCCEEDED, ""
        return Completion(key, job_id, key, status, detail, size, head)

    def copy_back(
        self,
        completion: Completion,
        bucket: str,
        key: str,
        avoid_etag: str | None,
        cancelled: threading.Event,
    ) -> None:
        """Copy the restored object back into STANDARD, in another part layout than the
        original's, then check it: the checksum S3 computed of the copy must be the archive's
        (`verified_by_checksum`; `verified_by_etag` for an archive made without one). A copy
        that is not kept, or that has the original's ETag all the same, is deleted, and only
        it, before raising ChecksumMismatch."""
        archived = completion.described
        if archived.get(f"Checksum{CHECKSUM}") is None:
            verify, part_size, extra = self.verified_by_etag(archived, avoid_etag)
        else:
            verify, part_size, extra = self.verified_by_checksum(archived, avoid_etag)
        self.copy(
            {"Bucket": self.bucket, "Key": completion.retrieval_id},
            bucket,
            key,
            cancelled,
            {"StorageClass": "STANDARD", "CopySourceIfMatch": archived["ETag"], **extra},
            part_size,
            archived["ContentLength"],
            archived["ETag"],
        )
        copied = head_object(self.s3, bucket, key, ChecksumMode="ENABLED") or {}
        wrong = verify(copied)
        if wrong is None and copied.get("ETag") == avoid_etag:  # a late archive message
            wrong = f"the copy has the original's ETag {avoid_etag}"  # could delete it
        if wrong is not None:
            self.discard(bucket, key, copied)
            raise ChecksumMismatch(wrong)

    def verified_by_checksum(self, archived: dict[str, Any], avoid_etag: str | None) -> Verify:
        """A copy asking S3 for its CRC64NVME, in the fewest requests whose ETag cannot be
        `avoid_etag` (unknown counts as one made in one request): up to 5 GiB one CopyObject,
        or one part after an original made in one request; above, `distinct_layout`."""
        expected, size = archived[f"Checksum{CHECKSUM}"], archived["ContentLength"]

        def verify(copied: dict[str, Any]) -> str | None:
            if copied.get(f"Checksum{CHECKSUM}") != expected:
                return f"copy's {CHECKSUM} {copied.get(f'Checksum{CHECKSUM}')} is not {expected}"
            return None

        if size > MAX_SINGLE_COPY:
            part_size = distinct_layout(size, avoid_etag, self.part_size)
        else:
            in_one_request = avoid_etag is None or etag_parts(avoid_etag) == 0
            part_size = MAX_SINGLE_COPY if in_one_request else 0
        return verify, part_size, {"ChecksumAlgorithm": CHECKSUM}

    def verified_by_etag(self, archived: dict[str, Any], avoid_etag: str | None) -> Verify:
        """For an archive made before archives carried CHECKSUM (in a bucket without SSE-KMS,
        or it never came back): copied with the archive copy's part layout, the two ETags
        (MD5s, of the whole or of the parts) are equal exactly when the bytes are. One copied
        in one request with the original's ETag (`avoid_etag`; unknown counts as that) is
        copied back as one part, whose ETag follows from the archive's."""
        part_size = int(archived.get("Metadata", {}).get(PART_SIZE_METADATA, self.part_size))
        expected = archived["ETag"]
        if part_size == 0 and avoid_etag in (None, expected):
            part_size, expected = MAX_SINGLE_COPY, one_part_etag(expected)

        def verify(copied: dict[str, Any]) -> str | None:
            if copied.get("ETag") != expected:
                return f"copy's ETag {copied.get('ETag')} is not {expected}"
            return None

        return verify, part_size, {"MetadataDirective": "REPLACE"}

    def discard(self, bucket: str, key: str, copied: dict[str, Any]) -> None:
        """Delete a copy back that is not kept, only if it is still that copy."""
        if "ETag" not in copied:  # gone already
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
