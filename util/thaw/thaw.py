"""Thaw: put a result retrieved from the archive back in S3, verified, exactly once
(docs/utilities.md#thaw).

For each completion notice: the notice only names a retrieval; the job and the back end say
the rest. A retrieval that failed, or that the back end has forgotten, is started again; one of
another archive than the job names is stale. The archive is copied back to the job's result
key, verified, with an ETag other than the original's; the archive id is cleared from the job
only while the job still names that archive, and the archive is then deleted. Any succeeded
retrieval of the archive the job names will do.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/thaw/thaw.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from util import process
from util.archives import (
    STANDARD,
    ChecksumMismatch,
    Completion,
    Status,
    UploadCancelled,
    backend_for,
)
from util.aws import Aws
from util.helpers import Annotations, InvalidMessage
from util.messages import Message, Outcome, defer, done, retry
from util.retrieval import Retrievals
from util.schema import (
    ARCHIVE_ID,
    JOB_ID,
    RESTORE_JOB_ID,
    RESULT_ETAG,
    RESULT_KEY,
    RESULTS_BUCKET,
    THAW_JOB_ID,
)
from util.util_config import Config


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
        archive_id = job.get(ARCHIVE_ID)
        if job.get(THAW_JOB_ID) == notice.retrieval_id and (
            notice.archive_id is None or notice.archive_id != archive_id
        ):
            return self.delete_archive(notice.archive_id, "already thawed")
        if notice.status is Status.GONE:
            if notice.archive_id is not None and notice.archive_id == archive_id:
                raise InvalidMessage(
                    f"job {job_id}: its archive {archive_id} is gone ({notice.detail})"
                )
            if archive_id is not None and job.get(RESTORE_JOB_ID) == notice.retrieval_id:
                # The retrieval the item records, forgotten by the back end: its output
                # lapsed (Glacier keeps a job 24 hours) before this notice was handled.
                return self.restart(
                    job, notice, message, f"retrieval {notice.retrieval_id} is gone"
                )
            if notice.archive_id is None:
                raise InvalidMessage(f"{notice.detail}: {notice.retrieval_id}")
        if archive_id is None or notice.archive_id != archive_id:
            return done(
                f"stale notice: job {job_id} is not archived as retrieval "
                f"{notice.retrieval_id} says"
            )
        if notice.status is Status.FAILED:
            return self.restart(job, notice, message, "retrieval failed", (STANDARD,))
        if notice.status is not Status.SUCCEEDED:
            return retry(f"retrieval is {notice.status.value}")

        if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):
            raise InvalidMessage(
                f"job {job_id} result s3://{job.get(RESULTS_BUCKET)}/"
                f"{job.get(RESULT_KEY)} is not in the results bucket "
                f"{self.results_bucket}"
            )
        try:
            self.backend.copy_back(
                notice,
                job[RESULTS_BUCKET],
                job[RESULT_KEY],
                job.get(RESULT_ETAG),
                message.cancelled,
            )
        except UploadCancelled:
            return retry("worker stopping: copy abandoned")
        except ChecksumMismatch as exc:
            return retry(f"nothing committed: {exc}")
        message.metrics["BytesThawed"] = notice.size
        finished = self.retrievals.finish(job_id, archive_id, notice.retrieval_id)
        if finished.holds(THAW_JOB_ID, notice.retrieval_id):
            return self.delete_archive(archive_id, "thawed")
        if finished.item.get(ARCHIVE_ID) is None:
            # Another retrieval of the same archive got there first: same bytes, same archive.
            return self.delete_archive(archive_id, "thawed by another retrieval")
        return done(f"superseded: job {job_id} now names another archive")

    def restart(
        self,
        job: dict[str, Any],
        notice: Completion,
        message: Message,
        why: str,
        tiers: tuple[str, ...] | None = None,
    ) -> Outcome:
        """Forget a retrieval that failed (or lapsed) and start it again (`tiers`: the back
        end's, by default), unless another one is recorded (started, or being started, by
        another worker)."""
        reason = f"{why} ({notice.detail})"
        recorded = job.get(RESTORE_JOB_ID)
        if recorded not in (notice.retrieval_id, None):
            return done(f"{reason}; retrieval {recorded} is the one under way")
        self.retrievals.clear(job[JOB_ID], notice.retrieval_id)
        start = self.retrievals.start(job, tiers=tiers)
        if start.status == "started":
            message.metrics[f"Retrievals{start.tier}"] = 1
        if start.status == "claimed elsewhere":
            return defer(start.retry_at - self.clock() + 1, f"{reason}; restart claimed elsewhere")
        return done(f"{reason}; {start.status} {start.tier}".strip())

    def delete_archive(self, archive_id: str | None, reason: str) -> Outcome:
        """Delete the archive the retrieval brought back (safe to repeat)."""
        if archive_id is not None:  # None: Glacier forgot the job, long after the thaw
            self.backend.delete(archive_id)
        return done(reason)


def main(argv: list[str] | None = None) -> int:
    return process.main("thaw", Thawer, argv)


if __name__ == "__main__":
    sys.exit(main())
