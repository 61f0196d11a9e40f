"""The simulated annotator: the annotator fleet's side of docs/design.md, not AnnTools.

    python -m util.local annotator [--concurrency N] [--seconds S] [--config FILE]...

It consumes the job-requests queue through the shared worker runtime (util/worker.py). For
each job request ``{"job_id", "user_id", ...}``:

1. the job is loaded by ``job_id``: unknown, not the sender's, or with its input outside the
   inputs bucket is **invalid**; so is an unknown user;
2. PENDING → RUNNING, conditionally (of two copies, one claims it; the other carries on too,
   so a job left RUNNING by a crashed annotator is finished by the redelivery);
3. after ``seconds``, a result and a log file derived from the input (streamed, never whole
   in memory) go to the results bucket beside the input's key:
   ``<prefix>/<user_id>/<job_id>~<name>.annot.vcf`` and ``…~<name>.vcf.count.log``;
4. RUNNING → COMPLETED with ``complete_time`` and the result's bucket and keys, conditionally:
   only the copy that completes it announces it;
5. the job-results message goes to the job-results topic and, for a free user,
   ``{"job_id", "user_id"}`` to the archive queue.

An input missing from S3 ends the job FAILED, announced the same way. A request for a job
already COMPLETED announces it again: a crash between steps 4 and 5 loses no announcement
(notify, archive and ann_load all take a duplicate in their stride).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import IO, Any

from botocore.exceptions import ClientError

from localaws.stack import utility_config_files
from util.aws import S3_NOT_FOUND, Aws
from util.helpers import Annotations, InvalidMessage, User, Users
from util.messages import Message, Outcome, done, require_str, retry
from util.parsers import argument, non_negative_float, positive_int
from util.process import configure_logging, run
from util.schema import (
    COMPLETE_TIME,
    COMPLETED,
    FAILED,
    INPUT_FILE_NAME,
    INPUT_KEY,
    INPUTS_BUCKET,
    JOB_ID,
    JOB_STATUS,
    LOG_KEY,
    PENDING,
    RESULT_KEY,
    RESULTS_BUCKET,
    RUNNING,
    USER_ID,
)
from util.util_config import Config, add_config_option, load
from util.worker import Worker

UTILITY = "annotator"
# The Worker runtime handles one receive (up to 10 messages) at a time; a fleet of N runs
# N / 10 of them side by side.
MESSAGES_PER_RECEIVE = 10  # SQS gives at most ten messages per receive
SPOOL_BYTES = 1024 * 1024  # outputs larger than this spill from memory to a temporary file
INFO_HEADER = (
    "##INFO=<ID=GAS_SIM,Number=0,Type=Flag,"
    'Description="Annotated by the GAS simulated annotator">\n'
)
# The job-results message: what notify and ann_load read (docs/design.md).
RESULT_FIELDS = (JOB_ID, USER_ID, JOB_STATUS, COMPLETE_TIME, RESULTS_BUCKET, RESULT_KEY, LOG_KEY)

log = logging.getLogger("gas")


def output_keys(input_key: str, input_file_name: str, job_id: str) -> tuple[str, str]:
    """(result key, log key) beside the input: ``<dir>/<job_id>~<name>.annot.vcf``, ``.vcf.count.log``."""
    directory = input_key.rpartition("/")[0]
    stem = input_file_name[:-4] if input_file_name.lower().endswith(".vcf") else input_file_name
    base = f"{directory}/{job_id}~{stem}" if directory else f"{job_id}~{stem}"
    return f"{base}.annot.vcf", f"{base}.vcf.count.log"


def annotate(lines: Iterator[bytes], result: IO[bytes]) -> tuple[int, int]:
    """Copy a VCF to `result` with a GAS_SIM flag on every variant; (lines, variants) read."""
    count = variants = 0
    for line in lines:
        count += 1
        text = line.rstrip(b"\r\n")
        if text.startswith(b"#CHROM"):
            result.write(INFO_HEADER.encode())
        elif text and not text.startswith(b"#"):
            fields = text.split(b"\t")
            if len(fields) >= 8:
                fields[7] = b"GAS_SIM" if fields[7] in (b"", b".") else fields[7] + b";GAS_SIM"
                text = b"\t".join(fields)
            variants += 1
        result.write(text + b"\n")
    return count, variants


class Annotator:
    """The job-request handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, seconds: float, clock=time.time):
        self.aws = aws
        self.seconds = seconds
        self.clock = clock
        self.inputs_bucket = config.gas.inputs_bucket
        self.results_bucket = config.gas.results_bucket
        self.results_topic = config.gas.job_results_topic
        self.archive_queue = config.archive.queue
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.users = Users(aws, config.gas.users_table)
        self.s3 = aws.client("s3")

    def __call__(self, message: Message) -> Outcome:
        job_id, user_id = require_str(message.data, JOB_ID, USER_ID)
        job = self.load_job(job_id, user_id)
        user = self.users.get(user_id)
        if user is None:
            raise InvalidMessage(f"unknown user {user_id}")
        if job.get(JOB_STATUS) == PENDING and not self.set_status(job_id, RUNNING, PENDING):
            job = self.load_job(job_id, user_id)  # another copy moved it on meanwhile
        status = job.get(JOB_STATUS)
        if status in (COMPLETED, FAILED):
            self.announce(job, user)
            return done(f"already {status}: announced again")
        if status not in (PENDING, RUNNING):
            raise InvalidMessage(f"job {job_id} is {status}, not {PENDING}")

        if message.cancelled.wait(self.seconds):
            return retry("annotator stopping")
        try:
            result_key, log_key = self.run(job)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in S3_NOT_FOUND:
                raise
            return self.finish(job, user, FAILED, {}, "input file missing: job failed")
        outputs = {RESULTS_BUCKET: self.results_bucket, RESULT_KEY: result_key, LOG_KEY: log_key}
        return self.finish(job, user, COMPLETED, outputs, "completed")

    def load_job(self, job_id: str, user_id: str) -> dict[str, Any]:
        """The job the message names, or InvalidMessage saying why it cannot be run."""
        job = self.jobs.get(job_id)
        if job is None:
            raise InvalidMessage(f"unknown job {job_id}")
        if job.get(USER_ID) != user_id:
            raise InvalidMessage(f"user {user_id} does not own job {job_id}")
        if job.get(INPUTS_BUCKET) != self.inputs_bucket or not job.get(INPUT_KEY):
            raise InvalidMessage(
                f"job {job_id} input s3://{job.get(INPUTS_BUCKET)}/"
                f"{job.get(INPUT_KEY)} is not in the inputs bucket "
                f"{self.inputs_bucket}"
            )
        if not job.get(INPUT_FILE_NAME):
            raise InvalidMessage(f"job {job_id} has no input_file_name")
        return job

    def set_status(
        self, job_id: str, status: str, expected: str, attributes: dict[str, Any] | None = None
    ) -> bool:
        """Move the job from `expected` to `status`, setting `attributes` too; False if the
        job was not in `expected` (or is gone) and is not what this very write made of it."""
        sets = {JOB_STATUS: status, **(attributes or {})}
        names = {f"#a{i}": name for i, name in enumerate(sets)}
        values = {f":a{i}": value for i, value in enumerate(sets.values())}
        update = "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(sets)))
        write = self.jobs.update_if(
            job_id, update, "#a0 = :expected", names, {**values, ":expected": expected}
        )
        return write.applied or all(write.item.get(k) == v for k, v in sets.items())

    def run(self, job: dict[str, Any]) -> tuple[str, str]:
        """Annotate the input into the result and log files; their keys."""
        result_key, log_key = output_keys(job[INPUT_KEY], job[INPUT_FILE_NAME], job[JOB_ID])
        body = self.s3.get_object(Bucket=job[INPUTS_BUCKET], Key=job[INPUT_KEY])["Body"]
        with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as result:
            lines, variants = annotate(body.iter_lines(keepends=True), result)
            result.seek(0)
            self.s3.put_object(Bucket=self.results_bucket, Key=result_key, Body=result)
        log_text = (
            f"job {job[JOB_ID]}: {job[INPUT_FILE_NAME]}\n"
            f"lines {lines}\nvariants {variants}\n"
            f"annotated by the GAS simulated annotator in {self.seconds:g} s\n"
        )
        self.s3.put_object(Bucket=self.results_bucket, Key=log_key, Body=log_text.encode())
        return result_key, log_key

    def finish(
        self, job: dict[str, Any], user: User, status: str, outputs: dict[str, Any], reason: str
    ) -> Outcome:
        """RUNNING → `status`; announce it if this copy was the one that got it there."""
        values = {COMPLETE_TIME: int(self.clock()), **outputs}
        if not self.set_status(job[JOB_ID], status, RUNNING, values):
            current = self.jobs.get(job[JOB_ID])
            if current is None:
                raise InvalidMessage(f"job {job[JOB_ID]} was deleted while it ran")
            return done(f"{current.get(JOB_STATUS)} by another annotator")
        self.announce({**job, JOB_STATUS: status, **values}, user)
        return done(reason)

    def announce(self, job: dict[str, Any], user: User) -> None:
        """The job-results message, and for a free user the archive request."""
        message = {field: job[field] for field in RESULT_FIELDS if field in job}
        self.aws.client("sns").publish(
            TopicArn=self.aws.topic_arn(self.results_topic), Message=json.dumps(message)
        )
        if job[JOB_STATUS] == COMPLETED and not user.is_premium:
            self.aws.client("sqs").send_message(
                QueueUrl=self.aws.queue_url(self.archive_queue),
                MessageBody=json.dumps({JOB_ID: job[JOB_ID], USER_ID: job[USER_ID]}),
            )


def main(concurrency: int | None, seconds: float | None, config_files: list[str]) -> int:
    """Run the fleet until SIGTERM or SIGINT; the process exit code."""

    def start() -> Worker:
        config = load(None, [*utility_config_files(), *config_files])
        configure_logging(config.worker.log_format, config.worker.log_level)
        fleet = concurrency or config.local.annotator_concurrency
        pause = config.local.annotator_seconds if seconds is None else seconds
        # The fleet's jobs run at once in the worker's slots, received ten at a time at most.
        settings = {"concurrency": fleet, "max_messages": min(fleet, MESSAGES_PER_RECEIVE)}
        config = Config(
            **{**vars(config), "worker": SimpleNamespace(**{**vars(config.worker), **settings})}
        )
        aws = Aws(config, connections=fleet * 2 + 10)
        log.info("%s: fleet of %d, %g s per job", UTILITY, fleet, pause)
        return Worker(
            UTILITY, Annotator(config, aws, pause), config, aws, config.gas.job_requests_queue
        )

    return run(UTILITY, start)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of ``python -m util.local annotator``."""
    parser.add_argument(
        "--concurrency",
        type=argument(positive_int),
        metavar="N",
        help="jobs run at once (default: [local] annotator_concurrency)",
    )
    parser.add_argument(
        "--seconds",
        type=argument(non_negative_float),
        metavar="S",
        help="time each job takes (default: [local] annotator_seconds)",
    )
    add_config_option(parser)
