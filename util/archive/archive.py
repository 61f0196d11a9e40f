"""Archive: move a free user's result file from S3 to the archive (Glacier vault or class).

For each message ``{"job_id", "user_id"}``:

1. load the job: it alone says where the result lives, and it must be the sender's,
   COMPLETED, with its result in the configured results bucket;
2. a premium user keeps the file in S3: nothing to do;
3. inside the grace period after completion: come back when it is over;
4. copy the result into the archive (util/backends.py: streamed into the Glacier vault, or
   copied server-side into an S3 Glacier storage class);
5. record the archive id on the job, only if none is recorded yet (a racing copy that got
   there first wins, and ours is deleted as an orphan);
6. delete the S3 result;
7. if the user became premium meanwhile, ask the restore utility to bring it back.

A redelivered message for a job already archived resumes at step 6.
"""

from __future__ import annotations

import json
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/archive/archive.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from botocore.exceptions import ClientError

from util import worker
from util.backends import backend_for
from util.glacier import UploadCancelled
from util.helpers import (ARCHIVE_ID, COMPLETE_TIME, COMPLETED, JOB_STATUS, RESULT_KEY,
                          RESULTS_BUCKET, USER_ID, Annotations, Aws, InvalidMessage, Users,
                          require_str)
from util.util_config import Config
from util.worker import Message, Outcome, defer, done, retry


class Archiver:
    """The archive handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, clock=time.time):
        self.aws = aws
        self.clock = clock
        self.grace_seconds = config.archive.grace_seconds
        self.results_bucket = config.gas.results_bucket
        self.restore_queue = config.restore.queue
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.users = Users(aws, config.gas.users_table)
        self.s3 = aws.client("s3")
        self.backend = backend_for(config, aws)

    def __call__(self, message: Message) -> Outcome:
        job_id, user_id = require_str(message.data, "job_id", "user_id")
        job = self.load_job(job_id, user_id)
        if ARCHIVE_ID in job:
            return self.finish(job, "already archived")

        user = self.users.get(user_id)
        if user is None:
            raise InvalidMessage(f"unknown user {user_id}")
        if user.is_premium:
            return done("premium user: result stays in S3")

        wait = job[COMPLETE_TIME] + self.grace_seconds - self.clock()
        if wait > 0:
            return defer(wait, "grace period")

        try:
            archive_id = self.backend.archive(job, message.cancelled)
        except UploadCancelled:
            return retry("worker stopping: upload abandoned")
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchKey"):
                raise
            return self.result_missing(job_id)

        if not self.jobs.set_if_absent(job_id, ARCHIVE_ID, archive_id):
            self.backend.delete(archive_id)
            return self.finish(self.load_job(job_id, user_id), "archived by another worker")
        return self.finish(job, "archived")

    def load_job(self, job_id: str, user_id: str) -> dict[str, Any]:
        """The job the message names, or InvalidMessage saying why it cannot be archived."""
        job = self.jobs.get_owned(job_id, user_id)
        if job.get(JOB_STATUS) != COMPLETED:
            raise InvalidMessage(f"job {job_id} is {job.get(JOB_STATUS)}, not {COMPLETED}")
        if job.get(RESULTS_BUCKET) != self.results_bucket or not job.get(RESULT_KEY):
            raise InvalidMessage(
                f"job {job_id} result s3://{job.get(RESULTS_BUCKET)}/{job.get(RESULT_KEY)} "
                f"is not in the results bucket {self.results_bucket}"
            )
        if not isinstance(job.get(COMPLETE_TIME), (int, float)):
            raise InvalidMessage(f"job {job_id} has no complete_time")
        return job

    def result_missing(self, job_id: str) -> Outcome:
        """The S3 result is gone: fine if a racing copy archived it, invalid otherwise."""
        job = self.jobs.get(job_id) or {}
        if ARCHIVE_ID in job:
            return self.finish(job, "archived by another worker")
        raise InvalidMessage(f"result of job {job_id} is not in S3 and was never archived")

    def finish(self, job: dict[str, Any], reason: str) -> Outcome:
        """Steps 6 and 7: both safe to repeat."""
        self.s3.delete_object(Bucket=job[RESULTS_BUCKET], Key=job[RESULT_KEY])
        user = self.users.get(job[USER_ID])
        if user is not None and user.is_premium:
            self.aws.client("sqs").send_message(
                QueueUrl=self.restore_queue_url, MessageBody=json.dumps({"user_id": user.user_id})
            )
            reason += "; user is premium now, restore requested"
        return done(reason)

    @cached_property
    def restore_queue_url(self) -> str:
        return self.aws.queue_url(self.restore_queue)


def main(argv: list[str] | None = None) -> int:
    return worker.main("archive", Archiver, argv)


if __name__ == "__main__":
    sys.exit(main())
