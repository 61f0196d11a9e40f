"""The vault back end: archives in a Glacier vault (its API: util/archives/vault/glacier.py).

An archive is a multipart upload of the result streamed in ranged GETs pinned to its ETag,
tree-hash checked part by part and whole, completed only once recorded on the job
(`Upload.record`); a retrieval is an archive-retrieval job announcing its end on the thaw
topic; the copy back streams the job's verified output into an S3 upload; the sweep's listing
is the newest finished inventory.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from s3transfer.utils import ChunksizeAdjuster

from util.archives import (
    EXPEDITED,
    STANDARD,
    Completion,
    Listing,
    Progress,
    Source,
    Status,
    Upload,
    head_source,
)
from util.archives.layout import MIB, distinct_layout
from util.archives.vault.glacier import PendingArchive, Vault
from util.aws import S3_NOT_FOUND, Aws
from util.helpers import InvalidMessage
from util.messages import require_str
from util.util_config import Config


def _epoch(stamp: str) -> float:
    """An ISO 8601 stamp of Glacier's (``2012-05-15T17:19:46.700Z``) as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class VaultBackend:
    """Archives in a Glacier vault."""

    PUBLISHER = "glacier.amazonaws.com"
    IN_BUCKET = False

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

    def upload(
        self, job_id: str, user_id: str, source: Source, cancelled: threading.Event
    ) -> Upload:
        """Stream the result into a multipart upload, one ranged GET per part, pinned to its
        ETag; its record completes it (`commit`), once saved."""

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

        description = json.dumps({"job_id": job_id, "user_id": user_id})
        pending = self.vault.upload_parts(
            read_range, source.size, description, self.archive_part_size, cancelled
        )
        return Upload(record=asdict(pending))

    def commit(self, upload: Upload) -> str | None:
        """CompleteMultipartUpload, which answers the same archive id when repeated."""
        assert upload.record is not None, "a vault upload is committed from its record"
        return self.vault.complete(PendingArchive(**upload.record))

    def abandon(self, upload: Upload) -> None:
        if upload.record is not None:
            self.vault.abort(upload.record["upload_id"])

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
            return Completion(glacier_job_id, job_id, None, Status.GONE, "Glacier has no such job")
        return Completion(
            glacier_job_id,
            job_id,
            described["ArchiveId"],
            Status(described["StatusCode"]),
            described.get("StatusMessage") or "",
            int(described.get("ArchiveSizeInBytes") or 0),
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
        size = completion.size
        output = self.vault.job_output(completion.described, cancelled)
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

    def listing(self, now: float) -> Listing:
        """The newest finished inventory (a snapshot as of its InventoryDate), read as it
        streams in; archives whose description names no job are not this pipeline's."""
        finished = [j for j in self.vault.inventory_jobs() if j["StatusCode"] == "Succeeded"]
        if not finished:
            return Listing(
                None,
                0.0,
                "no finished vault inventory yet: orphans and lost archives not looked for",
            )
        inventory = self.vault.inventory(finished[-1]["JobId"])
        archives = {}
        for entry in inventory.archives():
            try:
                job_id = json.loads(entry["ArchiveDescription"])["job_id"]
            except (ValueError, TypeError, KeyError):
                continue  # not an archive of this pipeline's: never touched
            archives[entry["ArchiveId"]] = (job_id, _epoch(entry["CreationDate"]))
        # No InventoryDate: taken as covering nothing, so nothing is suspected from it.
        taken = _epoch(inventory.date) if inventory.date else 0.0
        return Listing(archives, taken, f"vault inventory of {inventory.date}")

    def prepare_listing(self) -> str:
        """A new inventory for a later pass, unless one is under way."""
        if any(j["StatusCode"] == "InProgress" for j in self.vault.inventory_jobs()):
            return ""
        if self.vault.start_inventory() is None:
            return (
                "the vault has no inventory yet (Glacier prepares its first within a day of "
                "its creation): none could be started"
            )
        return ""

    def exists(self, archive_id: str) -> tuple[bool, float] | None:
        return None  # a vault is known only through its inventories

    def of_content(self, archive_id: str, etag: str) -> bool:
        return False  # archive ids are Glacier's, unrelated to the content

    def check_store(self) -> tuple[bool, str, str]:
        """The vault exists (CloudFormation has no vault type: it is made by hand)."""
        name = self.vault.name
        if self.vault.exists():
            return True, f"vault {name}: exists", ""
        return (
            False,
            f"vault {name}: missing",
            f"aws glacier create-vault --account-id - --vault-name {name}",
        )
