"""Where archived results live: a Glacier vault, or S3's Glacier storage classes.

The vault API takes no new AWS accounts since 2025-12-15, so ``[gas] archive_backend``
chooses between the vault the original GAS used and S3 storage classes. Archive, restore and
thaw speak only to the `Backend` interface; everything that differs is here:

- archive: the vault streams the result into a multipart upload, tree-hash checked; s3 makes
  a server-side copy into the archive bucket, storage class GLACIER or DEEP_ARCHIVE;
- archive id: Glacier's archive id; the archive object's key;
- retrieval: InitiateJob (archive-retrieval); RestoreObject;
- retrieval id: the Glacier job id; the archive object's key (S3 restores have no id);
- completion notice, on the thaw topic: Glacier's job notice; the archive bucket's
  ``s3:ObjectRestore:Completed`` event;
- copy back: ranged job output, tree-hash checked, into an S3 multipart upload; a server-side
  copy into STANDARD, ETag checked.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError
from s3transfer.manager import TransferConfig, TransferManager

from util.glacier import MIB, ChecksumMismatch, ExpeditedUnavailable, UploadCancelled, Vault
from util.helpers import RESULT_KEY, RESULTS_BUCKET, USER_ID, Aws, InvalidMessage, require_str
from util.util_config import Config

EXPEDITED, STANDARD = "Expedited", "Standard"
SUCCEEDED, FAILED, IN_PROGRESS = "Succeeded", "Failed", "InProgress"
# The copy back must use the archive copy's part size for the two ETags to be comparable, so
# the archive object keeps it in its metadata.
PART_SIZE_METADATA = "gas-copy-part-size"
CANCEL_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Completion:
    """What a completion notice says, as far as the back end can vouch for it."""

    retrieval_id: str
    job_id: str
    archive_id: str | None  # None: the back end knows no such retrieval
    status: str  # Succeeded | Failed | InProgress
    detail: str = ""
    source: Any = None  # the back end's own description of the retrieval


class Backend(Protocol):
    """What archive, restore and thaw need from where archives live."""

    def archive(self, job: dict[str, Any], cancelled: threading.Event) -> str:
        """Copy the job's result into an archive; its id. Nothing is deleted."""

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

    def copy_back(self, completion: Completion, bucket: str, key: str,
                  cancelled: threading.Event) -> None:
        """Put the retrieved archive at bucket/key, verified; raises ChecksumMismatch or
        UploadCancelled having committed nothing."""


def backend_for(config: Config, aws: Aws) -> Backend:
    if config.gas.archive_backend == "s3":
        return S3Backend(config, aws)
    return VaultBackend(config, aws)


class VaultBackend:
    """Archives in a Glacier vault (util/glacier.py)."""

    def __init__(self, config: Config, aws: Aws):
        self.vault = Vault(aws.client("glacier"), config.gas.vault)
        # Glacier answers "no Expedited capacity" with a 503, which botocore's retry mode
        # would retry with back-off before we could fall back; one attempt is enough to ask.
        self.expedited_glacier = aws.client("glacier", attempts=1)
        self.thaw_topic = config.gas.thaw_topic
        self.aws = aws
        self.s3 = aws.client("s3")
        self.archive_part_size = config.archive.part_size_mib * MIB
        self.thaw_part_size = config.thaw.part_size_mib * MIB

    @cached_property
    def thaw_topic_arn(self) -> str:
        return self.aws.topic_arn(self.thaw_topic)

    @cached_property
    def transfer(self) -> TransferManager:
        """Thaw's uploads. Parts are read from Glacier in order; two in memory bound the
        worker's memory whatever the file's size, shared by all the messages it handles."""
        part = self.thaw_part_size
        return TransferManager(self.s3, TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_request_concurrency=2,
            max_in_memory_upload_chunks=2))

    def archive(self, job: dict[str, Any], cancelled: threading.Event) -> str:
        """Stream the result into the vault, one ranged GET per part, pinned to one version."""
        bucket, key = job[RESULTS_BUCKET], job[RESULT_KEY]
        head = self.s3.head_object(Bucket=bucket, Key=key)

        def read_range(first: int, last: int) -> bytes:
            return self.s3.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={first}-{last}", IfMatch=head["ETag"]
            )["Body"].read()

        description = json.dumps({"job_id": job["job_id"], "user_id": job[USER_ID]})
        return self.vault.upload(read_range, head["ContentLength"], description,
                                 self.archive_part_size, cancelled)

    def delete(self, archive_id: str) -> None:
        self.vault.delete(archive_id)

    def tiers(self, archive_id: str) -> Sequence[str]:
        return (EXPEDITED, STANDARD)

    def start_retrieval(self, archive_id: str, job_id: str, tier: str) -> str:
        glacier = self.expedited_glacier if tier == EXPEDITED else None
        return self.vault.start_retrieval(archive_id, json.dumps({"job_id": job_id}),
                                          self.thaw_topic_arn, tier, glacier)

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
            return Completion(glacier_job_id, job_id, None, FAILED, "Glacier has no such job")
        return Completion(glacier_job_id, job_id, described["ArchiveId"],
                          described["StatusCode"], described.get("StatusMessage") or "",
                          described)

    def copy_back(self, completion: Completion, bucket: str, key: str,
                  cancelled: threading.Event) -> None:
        output = self.vault.job_output(completion.source, self.thaw_part_size, cancelled)
        self.transfer.upload(output, bucket, key).result()


class S3Backend:
    """Archives as S3 objects in a Glacier storage class, restored in place."""

    def __init__(self, config: Config, aws: Aws):
        self.s3 = aws.client("s3")
        # S3 answers "no Expedited capacity" with a 503 too (see VaultBackend).
        self.expedited_s3 = aws.client("s3", attempts=1)
        self.bucket = config.gas.archive_bucket
        self.prefix = config.gas.archive_prefix
        self.storage_class = config.gas.archive_storage_class
        self.restore_days = config.restore.restore_days
        self.part_size = config.gas.copy_part_size_mib * MIB

    def archive(self, job: dict[str, Any], cancelled: threading.Event) -> str:
        """A server-side copy into the archive class: no byte passes through the worker.

        Each attempt copies to a key of its own, so that a copy racing this one can delete
        its orphan without touching ours.
        """
        key = f"{self.prefix}{job['job_id']}/{uuid.uuid4().hex}"
        source = {"Bucket": job[RESULTS_BUCKET], "Key": job[RESULT_KEY]}
        self.copy(source, self.bucket, key, cancelled, {
            "StorageClass": self.storage_class, "MetadataDirective": "REPLACE",
            "Metadata": {PART_SIZE_METADATA: str(self.part_size)}}, self.part_size)
        return key

    def delete(self, archive_id: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=archive_id)

    def tiers(self, archive_id: str) -> Sequence[str]:
        # S3 offers no Expedited retrieval for DEEP_ARCHIVE.
        head = self.s3.head_object(Bucket=self.bucket, Key=archive_id)
        if head.get("StorageClass") == "DEEP_ARCHIVE":
            return (STANDARD,)
        return (EXPEDITED, STANDARD)

    def start_retrieval(self, archive_id: str, job_id: str, tier: str) -> str:
        s3 = self.expedited_s3 if tier == EXPEDITED else self.s3
        try:
            s3.restore_object(Bucket=self.bucket, Key=archive_id, RestoreRequest={
                "Days": self.restore_days, "GlacierJobParameters": {"Tier": tier}})
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "GlacierExpeditedRetrievalNotAvailable":
                raise ExpeditedUnavailable(str(exc)) from None
            if code != "RestoreAlreadyInProgress":  # an earlier attempt started it: fine
                raise
        return archive_id

    def completion(self, notice: dict[str, Any]) -> Completion | None:
        """The archive bucket's ObjectRestore:Completed event for an archive object."""
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
            raise InvalidMessage(f"s3://{bucket}/{key} is not in the archive "
                                 f"s3://{self.bucket}/{self.prefix}")
        job_id = key[len(self.prefix):].rsplit("/", 1)[0]
        return Completion(key, job_id, key, SUCCEEDED)

    def copy_back(self, completion: Completion, bucket: str, key: str,
                  cancelled: threading.Event) -> None:
        """Copy the restored object back into STANDARD, then compare ETags.

        Copied with the part size of the archive copy, the two objects' ETags (MD5s, of the
        whole or of the parts) are equal exactly when the bytes are; a mismatch deletes the
        copy before raising.
        """
        archived = self.s3.head_object(Bucket=self.bucket, Key=completion.archive_id)
        part_size = int(archived.get("Metadata", {}).get(PART_SIZE_METADATA, self.part_size))
        source = {"Bucket": self.bucket, "Key": completion.archive_id}
        self.copy(source, bucket, key, cancelled, {
            "StorageClass": "STANDARD", "MetadataDirective": "REPLACE",
            "CopySourceIfMatch": archived["ETag"]}, part_size)
        copied = self.s3.head_object(Bucket=bucket, Key=key)
        if copied["ETag"] != archived["ETag"]:
            self.s3.delete_object(Bucket=bucket, Key=key)
            raise ChecksumMismatch(f"copy's ETag {copied['ETag']} is not the archive's "
                                   f"{archived['ETag']}")

    def copy(self, source: dict[str, str], bucket: str, key: str, cancelled: threading.Event,
             extra: dict[str, Any], part_size: int) -> None:
        """s3transfer's copy (multipart above one part), abandoned if `cancelled` is set."""
        config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
        with TransferManager(self.s3, config) as transfer:
            future = transfer.copy(source, bucket, key, extra_args=extra)
            while not future.done():
                if cancelled.wait(CANCEL_POLL_SECONDS):
                    future.cancel()  # s3transfer aborts the multipart upload
                    break
            try:
                future.result()
            except CancelledError:
                raise UploadCancelled(f"copy to s3://{bucket}/{key} abandoned") from None
