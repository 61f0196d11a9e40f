"""Thaw: put a result retrieved from the archive back in S3, verified, exactly once.

For each completion notice (in its SNS envelope: Glacier's job notice, or the archive
bucket's ObjectRestore:Completed event — util/backends.py):

1. the notice only names a retrieval, and through it the annotation job; the item and the
   back end itself (Glacier's DescribeJob) say everything else. The item must still name the
   archive, and the retrieval it records must be this one; a stale or unknown notice is
   invalid;
2. a retrieval reported as Failed is forgotten and started again (Standard), so a failed
   job never strands a file;
3. the archive is copied back to the item's original result key: Glacier job output streamed
   in tree-hash-aligned ranges into an S3 multipart upload, every range and the whole archive
   checked against Glacier's SHA-256 tree hash; or a server-side copy of the restored object
   into STANDARD, its ETag checked. On a mismatch nothing is committed and the message is
   retried;
4. the archive id and the retrieval are cleared from the item, only if it still names both;
5. the archive is deleted; then the message.

A notice delivered again after success finds its retrieval recorded as the one that thawed
the result, and only makes sure step 5 happened.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/thaw/thaw.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from util import worker
from util.backends import FAILED, STANDARD, SUCCEEDED, Completion, backend_for
from util.glacier import ChecksumMismatch, UploadCancelled
from util.helpers import (ARCHIVE_ID, JOB_ID, RESTORE_EXPIRES, RESTORE_JOB_ID, RESULT_KEY,
                          RESULTS_BUCKET, THAW_JOB_ID, Annotations, Aws, InvalidMessage)
from util.retrieval import Retrievals, is_claim
from util.util_config import Config
from util.worker import Message, Outcome, defer, done, retry

# How long to wait for restore to record a job it is starting (one InitiateJob call).
CLAIM_RECHECK_SECONDS = 10


class Thawer:
    """The thaw handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, clock=time.time):
        self.clock = clock
        self.results_bucket = config.gas.results_bucket
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.backend = backend_for(config, aws)
        self.retrievals = Retrievals(config, aws, self.backend, clock)

    def __call__(self, message: Message) -> Outcome:
        notice = self.backend.completion(message.data)
        if notice is None:
            return done("not a completion: nothing to do")
        job_id = message.job_id = notice.job_id
        job = self.jobs.get(job_id)
        if job is None:
            raise InvalidMessage(f"unknown job {job_id}")
        if job.get(THAW_JOB_ID) == notice.retrieval_id:
            return self.delete_archive(notice.archive_id, "already thawed")
        recorded = job.get(RESTORE_JOB_ID)
        if is_claim(recorded):
            wait = min(CLAIM_RECHECK_SECONDS, job[RESTORE_EXPIRES] - self.clock())
            return defer(wait, "restore is still recording this retrieval")

        archive_id = job.get(ARCHIVE_ID)
        if notice.archive_id is None or notice.archive_id != archive_id:
            raise InvalidMessage(f"stale notice: job {job_id} is not archived as retrieval "
                                 f"{notice.retrieval_id} says")
        if notice.status == FAILED and recorded in (notice.retrieval_id, None):
            return self.restart(job, notice)
        if recorded != notice.retrieval_id:
            raise InvalidMessage(f"stale notice: job {job_id} is being restored by retrieval "
                                 f"{recorded}, not {notice.retrieval_id}")
        if notice.status != SUCCEEDED:
            return retry(f"retrieval is {notice.status}")

        if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):
            raise InvalidMessage(f"job {job_id} result s3://{job.get(RESULTS_BUCKET)}/"
                                 f"{job.get(RESULT_KEY)} is not in the results bucket "
                                 f"{self.results_bucket}")
        try:
            self.backend.copy_back(notice, job[RESULTS_BUCKET], job[RESULT_KEY],
                                   message.cancelled)
        except UploadCancelled:
            return retry("worker stopping: copy abandoned")
        except ChecksumMismatch as exc:
            return retry(f"nothing committed: {exc}")
        if not self.retrievals.finish(job_id, archive_id, notice.retrieval_id):
            current = self.jobs.get(job_id) or {}
            if current.get(THAW_JOB_ID) != notice.retrieval_id:
                # A newer retrieval took over; the S3 copy we wrote is the same bytes.
                return done("superseded by another retrieval")
        return self.delete_archive(archive_id, "thawed")

    def restart(self, job: dict[str, Any], notice: Completion) -> Outcome:
        """Forget the failed retrieval and start it again, Standard."""
        reason = f"retrieval failed ({notice.detail})"
        self.retrievals.clear(job[JOB_ID], notice.retrieval_id)
        start = self.retrievals.start(job, tiers=(STANDARD,))
        if start.status == "claimed elsewhere":
            return defer(start.retry_at - self.clock() + 1, f"{reason}; restart claimed elsewhere")
        return done(f"{reason}; {start.status} {start.tier}".strip())

    def delete_archive(self, archive_id: str | None, reason: str) -> Outcome:
        """Delete the archive the retrieval brought back (safe to repeat)."""
        if archive_id is not None:  # None: Glacier forgot the job, long after the thaw
            self.backend.delete(archive_id)
        return done(reason)


def main(argv: list[str] | None = None) -> int:
    return worker.main("thaw", Thawer, argv)


if __name__ == "__main__":
    sys.exit(main())
