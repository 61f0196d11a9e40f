"""Thaw: put a result retrieved from Glacier back in S3, verified, exactly once.

For each Glacier job-completion notice (in its SNS envelope):

1. the notice only names a Glacier job: its description gives the annotation job id, and the
   item and Glacier itself (DescribeJob) say everything else. The item must still name the
   archive, and the retrieval it records must be this job; a stale or unknown notice is
   invalid;
2. a job Glacier reports as Failed is forgotten and started again (Standard), so a failed
   job never strands a file;
3. the job output is streamed in tree-hash-aligned ranges into an S3 multipart upload at
   the item's original result key; every range and the whole archive are checked against
   Glacier's SHA-256 tree hash, and on a mismatch the upload is aborted: nothing committed,
   the message retried;
4. the archive id and the retrieval are cleared from the item, only if it still names both;
5. the Glacier archive is deleted; then the message.

A notice delivered again after success finds its job recorded as the one that thawed the
result, and only makes sure step 5 happened.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/thaw/thaw.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from s3transfer.manager import TransferConfig, TransferManager

from util import worker
from util.glacier import MIB, ChecksumMismatch, UploadCancelled
from util.helpers import (ARCHIVE_ID, RESTORE_EXPIRES, RESTORE_JOB_ID, RESULT_KEY,
                          RESULTS_BUCKET, THAW_JOB_ID, Annotations, Aws, InvalidMessage,
                          require_str)
from util.retrieval import STANDARD, Retrievals, is_claim
from util.util_config import Config
from util.worker import Message, Outcome, defer, done, retry

# How long to wait for restore to record a job it is starting (one InitiateJob call).
CLAIM_RECHECK_SECONDS = 10


class Thawer:
    """The thaw handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, clock=time.time):
        self.clock = clock
        self.results_bucket = config.gas.results_bucket
        self.part_size = config.thaw.part_size_mib * MIB
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.retrievals = Retrievals(config, aws, clock)
        self.vault = self.retrievals.vault
        # Parts are read from Glacier in order; two in memory bound the worker's memory
        # whatever the file's size, shared by all the messages it handles at once.
        part = self.part_size
        self.transfer = TransferManager(aws.client("s3"), TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_request_concurrency=2,
            max_in_memory_upload_chunks=2))

    def __call__(self, message: Message) -> Outcome:
        glacier_job_id, job_id = self.read_notice(message.data)
        message.job_id = job_id
        job = self.jobs.get(job_id)
        if job is None:
            raise InvalidMessage(f"unknown job {job_id}")
        if job.get(THAW_JOB_ID) == glacier_job_id:
            return self.delete_archive_of(glacier_job_id, "already thawed")
        recorded = job.get(RESTORE_JOB_ID)
        if is_claim(recorded):
            wait = min(CLAIM_RECHECK_SECONDS, job[RESTORE_EXPIRES] - self.clock())
            return defer(wait, "restore is still recording this retrieval")

        glacier_job = self.vault.describe_job(glacier_job_id)
        archive_id = job.get(ARCHIVE_ID)
        if glacier_job is None or archive_id is None or glacier_job["ArchiveId"] != archive_id:
            raise InvalidMessage(f"stale notice: job {job_id} is not archived as Glacier job "
                                 f"{glacier_job_id} says")
        if glacier_job["StatusCode"] == "Failed" and recorded in (glacier_job_id, None):
            return self.restart(job, glacier_job)
        if recorded != glacier_job_id:
            raise InvalidMessage(f"stale notice: job {job_id} is being restored by Glacier job "
                                 f"{recorded}, not {glacier_job_id}")
        if glacier_job["StatusCode"] != "Succeeded":
            return retry(f"Glacier job is {glacier_job['StatusCode']}")

        if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):
            raise InvalidMessage(f"job {job_id} result s3://{job.get(RESULTS_BUCKET)}/"
                                 f"{job.get(RESULT_KEY)} is not in the results bucket "
                                 f"{self.results_bucket}")
        try:
            self.copy_back(job, glacier_job, message)
        except UploadCancelled:
            return retry("worker stopping: copy abandoned")
        except ChecksumMismatch as exc:
            return retry(f"nothing committed: {exc}")
        if not self.retrievals.finish(job_id, archive_id, glacier_job_id):
            current = self.jobs.get(job_id) or {}
            if current.get(THAW_JOB_ID) != glacier_job_id:
                # A newer retrieval took over; the S3 copy we wrote is the same bytes.
                return done("superseded by another retrieval")
        return self.delete_archive_of(glacier_job_id, "thawed", archive_id)

    @staticmethod
    def read_notice(notice: dict[str, Any]) -> tuple[str, str]:
        """(Glacier job id, annotation job id) from a completion notice."""
        glacier_job_id, description = require_str(notice, "JobId", "JobDescription")
        try:
            job_id = json.loads(description)["job_id"]
        except (ValueError, TypeError, KeyError):
            job_id = None
        if not isinstance(job_id, str) or not job_id:
            raise InvalidMessage(f"JobDescription {description[:100]!r} names no job")
        return glacier_job_id, job_id

    def restart(self, job: dict[str, Any], glacier_job: dict[str, Any]) -> Outcome:
        """Forget the failed retrieval and start it again, Standard."""
        reason = f"Glacier job failed ({glacier_job.get('StatusMessage')})"
        self.retrievals.clear(job["job_id"], glacier_job["JobId"])
        start = self.retrievals.start(job, tiers=(STANDARD,))
        if start.status == "claimed elsewhere":
            return defer(start.retry_at - self.clock() + 1, f"{reason}; restart claimed elsewhere")
        return done(f"{reason}; {start.status} {start.tier}".strip())

    def copy_back(self, job: dict[str, Any], glacier_job: dict[str, Any],
                  message: Message) -> None:
        output = self.vault.job_output(glacier_job, self.part_size, message.cancelled)
        self.transfer.upload(output, job[RESULTS_BUCKET], job[RESULT_KEY]).result()

    def delete_archive_of(self, glacier_job_id: str, reason: str,
                          archive_id: str | None = None) -> Outcome:
        """Delete the archive the job retrieved (safe to repeat)."""
        if archive_id is None:
            glacier_job = self.vault.describe_job(glacier_job_id)
            if glacier_job is None:  # Glacier forgot the job long after the thaw
                return done(reason)
            archive_id = glacier_job["ArchiveId"]
        self.vault.delete(archive_id)
        return done(reason)


def main(argv: list[str] | None = None) -> int:
    return worker.main("thaw", Thawer, argv)


if __name__ == "__main__":
    sys.exit(main())
