"""Archive: move a free user's result file from S3 to the archive, record the archive id on
the job, delete the S3 copy (docs/utilities.md#archive).

For each ``{"job_id", "user_id"}``: the job alone says where the result lives; a premium user
keeps the file; within the grace period the message comes back later. The result is copied
into the archive pinned to its ETag; the archive is recorded only while no archive is, no thaw
happened since the job was read and the user is still free (one transaction); the S3 result
is deleted only while it still has that ETag. A failed record is looked at, not believed: our
own archive id means success, another's means ours is deleted. Why nothing can be lost or
left behind: docs/design.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/archive/archive.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from botocore.exceptions import ClientError

from util import process
from util.archives import Source, SourceChanged, Upload, UploadCancelled, backend_for
from util.aws import S3_NOT_FOUND, S3_PRECONDITION_FAILED, Aws
from util.helpers import Annotations, InvalidMessage, UserNotFree, Users
from util.messages import Message, Outcome, defer, done, require_str, retry
from util.schema import (
    ARCHIVE_ID,
    ARCHIVE_UPLOAD,
    COMPLETE_TIME,
    COMPLETED,
    JOB_ID,
    JOB_STATUS,
    RESULT_ETAG,
    RESULT_KEY,
    RESULTS_BUCKET,
    THAW_JOB_ID,
    USER_ID,
)
from util.util_config import Config

_NAMES = {
    "#archive": ARCHIVE_ID,
    "#etag": RESULT_ETAG,
    "#upload": ARCHIVE_UPLOAD,
    "#thaw": THAW_JOB_ID,
}


class ArchivedMeanwhile(Exception):
    """Another copy of the message recorded its archive while this one was uploading."""

    def __init__(self, item: dict[str, Any]):
        super().__init__("archived by another worker")
        self.item = item


class Archiver:
    """The archive handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, clock=time.time):
        self.aws = aws
        self.clock = clock
        self.grace_seconds = config.archive.grace_seconds
        self.results_bucket = config.gas.results_bucket
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.users = Users(aws, config.gas.users_table)
        self.s3 = aws.client("s3")
        self.backend = backend_for(config, aws)

    def __call__(self, message: Message) -> Outcome:
        job_id, user_id = require_str(message.data, "job_id", "user_id")
        job, user = self.jobs.get_owned_with_user(job_id, user_id, self.users)
        self.check_job(job)
        if ARCHIVE_ID in job:
            return self.finish(job, "already archived")
        if user is None:
            raise InvalidMessage(f"unknown user {user_id}")
        if user.is_premium:
            return done("premium user: result stays in S3")

        wait = job[COMPLETE_TIME] + self.grace_seconds - self.clock()
        if wait > 0:
            return defer(wait, "grace period")

        source = self.backend.source(job[RESULTS_BUCKET], job[RESULT_KEY])
        if source is None:
            return self.result_missing(job_id)
        if source.size == 0:
            return done("empty result: nothing to archive, it stays in S3")
        try:
            archive_id = self.archive(job, source, message)
        except UploadCancelled:
            return retry("worker stopping: upload abandoned")
        except ArchivedMeanwhile as exc:
            return self.finish(exc.item, "archived by another worker")
        except SourceChanged:
            return retry("the S3 result changed while it was archived")
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in S3_NOT_FOUND:
                return self.result_missing(job_id)
            if code in S3_PRECONDITION_FAILED:
                return retry("the S3 result changed while it was archived")
            raise
        message.metrics["BytesArchived"] = source.size
        return self.record(job, source, archive_id)

    def check_job(self, job: dict[str, Any]) -> None:
        """InvalidMessage saying why the job's result cannot be archived, if it cannot."""
        job_id = job[JOB_ID]
        if job.get(JOB_STATUS) != COMPLETED:
            raise InvalidMessage(f"job {job_id} is {job.get(JOB_STATUS)}, not {COMPLETED}")
        if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):
            raise InvalidMessage(
                f"job {job_id} result s3://{job.get(RESULTS_BUCKET)}/{job.get(RESULT_KEY)} "
                f"is not in the results bucket {self.results_bucket}"
            )
        if not isinstance(job.get(COMPLETE_TIME), (int, float)):
            raise InvalidMessage(f"job {job_id} has no complete_time")

    def archive(self, job: dict[str, Any], source: Source, message: Message) -> str:
        """Step 5: commit the upload an earlier copy recorded, or make the archive (an upload
        with a record is recorded on the job before it is committed)."""
        pending = job.get(ARCHIVE_UPLOAD)
        if pending and pending.get("etag") == source.etag:
            archive_id = self.backend.commit(Upload(record=pending["upload"]))
            if archive_id is not None:
                return archive_id
        upload = self.backend.upload(job[JOB_ID], job[USER_ID], source, message.cancelled)
        if upload.record is not None:
            try:
                self.save_upload(job, source, upload.record)
            except BaseException:
                self.backend.abandon(upload)
                raise
        archive_id = self.backend.commit(upload)
        if archive_id is None:
            raise RuntimeError(f"the back end lost upload {upload.record} before its commit")
        return archive_id

    def save_upload(self, job: dict[str, Any], source: Source, upload: dict[str, Any]) -> None:
        """Record an upload about to be completed, unless an archive is recorded already."""
        write = self.jobs.update_if(
            job[JOB_ID],
            "SET #upload = :upload",
            "attribute_not_exists(#archive)",
            _NAMES,
            {":upload": {"etag": source.etag, "upload": upload}},
        )
        if not write.applied:
            if not write.item:
                raise InvalidMessage(f"job {job['job_id']} was deleted while it was archived")
            raise ArchivedMeanwhile(write.item)

    def record(self, job: dict[str, Any], source: Source, archive_id: str) -> Outcome:
        """Step 6; then 7.

        Only if no archive is recorded, no thaw has happened since the job was read (a
        worker that stalled, or read the job before another recorded this same archive, must
        not record an archive a thaw has meanwhile brought back and deleted), and the user is
        still free.
        """
        job_id = job[JOB_ID]
        thawed = job.get(THAW_JOB_ID)
        try:
            write = self.jobs.update_if(
                job_id,
                "SET #archive = :archive, #etag = :etag REMOVE #upload",
                "attribute_not_exists(#archive) AND "
                + ("attribute_not_exists(#thaw)" if thawed is None else "#thaw = :thaw"),
                _NAMES,
                {":archive": archive_id, ":etag": source.etag, ":thaw": thawed},
                while_free=(self.users, job[USER_ID]),
            )
        except UserNotFree:
            return self.keep_in_s3(job_id, archive_id)
        if write.holds(ARCHIVE_ID, archive_id):
            return self.finish(
                {**job, ARCHIVE_ID: archive_id, RESULT_ETAG: source.etag}, "archived"
            )
        self.backend.delete(archive_id)  # an orphan: the job records another archive, or none
        if not write.item:
            raise InvalidMessage(f"job {job_id} was deleted while its result was archived")
        if ARCHIVE_ID not in write.item:
            return done("restored from the archive meanwhile: this archive deleted")
        return self.finish(write.item, "archived by another worker")

    def keep_in_s3(self, job_id: str, archive_id: str) -> Outcome:
        """The user became premium before the record: the result stays in S3, and the
        archive made for it goes. Its recorded upload goes first: left behind, it would let a
        later message complete that upload again and record the archive deleted here."""
        self.jobs.update_if(job_id, "REMOVE #upload", "attribute_exists(#upload)", _NAMES)
        self.backend.delete(archive_id)
        return done("user became premium: result stays in S3, this archive deleted")

    def result_missing(self, job_id: str) -> Outcome:
        """The S3 result is gone: fine if a racing copy archived it, invalid otherwise."""
        job = self.jobs.get(job_id) or {}
        if ARCHIVE_ID in job:
            return self.finish(job, "archived by another worker")
        raise InvalidMessage(f"result of job {job_id} is not in S3 and was never archived")

    def finish(self, job: dict[str, Any], reason: str) -> Outcome:
        """Step 7: safe to repeat."""
        return done(reason + self.delete_result(job))

    def delete_result(self, job: dict[str, Any]) -> str:
        """Delete the S3 result if it is still the one archived; what happened, for the log."""
        etag = job.get(RESULT_ETAG)
        if etag is None:
            return "; no ETag recorded: S3 result left as it is"
        try:
            self.s3.delete_object(Bucket=job[RESULTS_BUCKET], Key=job[RESULT_KEY], IfMatch=etag)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in S3_PRECONDITION_FAILED:
                return "; the S3 result is not the one archived (restored or rewritten): kept"
            if code not in S3_NOT_FOUND:  # gone already: an earlier attempt deleted it
                raise
        return ""


def main(argv: list[str] | None = None) -> int:
    return process.main("archive", Archiver, argv)


if __name__ == "__main__":
    sys.exit(main())
