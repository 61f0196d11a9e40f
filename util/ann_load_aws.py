"""The AWS side of an ann_load run (docs/ann_load.md): `Submitter` submits jobs as the web app
does, `ResultsQueue` receives their results through a temporary queue subscribed to the
job-results topic, `Sampler` samples the job-requests backlog, `Requests` counts the requests
made, `process_aws` makes the process's clients (LEAN_CLIENTS).

Every job submitted has its item marked ``synthetic = true`` and an id starting with
``load-<run id>-``, as has its input's key, so that cleanup (util/ann_load_cleanup.py) finds
all of it. The temporary queue is removed at the run's end, interrupted or not.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from util.ann_load_schedule import (
    SAMPLE_EVERY_SECONDS,
    SYNTHETIC_JOB_PREFIX,
    JobRecord,
    OpenLoop,
)
from util.aws import Aws
from util.helpers import Annotations, InvalidMessage
from util.messages import Message, decode_body
from util.resources import queue_policy
from util.schema import (
    INPUT_FILE_NAME,
    INPUT_KEY,
    INPUTS_BUCKET,
    JOB_ID,
    JOB_STATUS,
    PENDING,
    SUBMIT_TIME,
    SYNTHETIC,
    USER_ID,
    job_request,
)
from util.sqs import SQS_BATCH, Queue, receive_backoff
from util.util_config import Config

TEMP_QUEUE_PREFIX = "ann-load-"  # the run's temporary job-results queue: ann-load-<run id>
# SQS's longest poll: an idle queue costs one receive per 20 s, and a result ends the wait at
# once. Stopping does not wait for a poll under way (ResultsQueue.__exit__).
RESULTS_WAIT_SECONDS = 20
# SQS's longest visibility timeout: a result received is not delivered again for 12 h, so
# deletes wait to fill a DeleteMessageBatch; the few left at the end go with the queue.
RESULTS_VISIBILITY_SECONDS = 12 * 3600
# An input up to this size is read once and sent from memory; a larger one is streamed from
# its file for each job.
INPUT_HELD_MAX_BYTES = 1024 * 1024
# Two things botocore does for every request that cost a load generator CPU for nothing
# (docs/runtime.md): it checks the parameters against the service model (ann_load sends a
# few shapes of its own making, thousands of times, and AWS checks every request anyway),
# and it builds its User-Agent string, twice. A fixed one instead (botocore adds its
# version) also tells ann_load's requests apart in CloudTrail.
LEAN_CLIENTS = BotoConfig(parameter_validation=False, user_agent="gas-ann_load")


class Submitter:
    """Submits jobs as the web app does: input to S3, PENDING item, job request on SNS; the
    items of several jobs in one BatchWriteItem, their requests in one PublishBatch.

    `shared_run_id`: the input goes up once per user of `users`, now (before the schedule
    starts, so that no job waits for it), for every job of the run. An input of up to
    INPUT_HELD_MAX_BYTES is read once and sent from memory: no file to open and read again,
    and no `Expect: 100-continue` exchange, for each job.
    """

    def __init__(
        self,
        config: Config,
        aws: Aws,
        input_path: Path,
        prefix: str,
        shared_run_id: str | None = None,
        users: Sequence[str] = (),
    ):
        self.input_path = input_path
        self.prefix = prefix
        self.bucket = config.gas.inputs_bucket
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.s3 = aws.client("s3")
        self.body = (
            input_path.read_bytes()
            if input_path.stat().st_size <= INPUT_HELD_MAX_BYTES
            else None  # streamed from the file for each job
        )
        self.sns = aws.client("sns")
        self.topic_arn = aws.topic_arn(config.gas.job_requests_topic)
        # user id -> the run's input of that user, named like the run's jobs so that cleanup
        # finds it (one of its orphans)
        self.shared_keys = (
            {}
            if shared_run_id is None
            else {
                user: self.upload(
                    f"{prefix}/{user}/{SYNTHETIC_JOB_PREFIX}{shared_run_id}-shared~"
                    f"{input_path.name}"
                )
                for user in users
            }
        )

    def upload(self, key: str) -> str:
        if self.body is not None:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=self.body)
        else:
            with open(self.input_path, "rb") as body:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key

    def input_key(self, record: JobRecord) -> str:
        """Where the job's input is, uploaded: its user's for the run, or its own."""
        if self.shared_keys:
            return self.shared_keys[record.user_id]
        return self.upload(f"{self.prefix}/{record.user_id}/{record.job_id}~{self.input_path.name}")

    def __call__(self, records: list[JobRecord]) -> dict[str, str]:
        """Submit up to BATCH_MAX jobs; {job id: error} of those whose request SNS refused."""
        items = [
            {
                JOB_ID: record.job_id,
                USER_ID: record.user_id,
                INPUT_FILE_NAME: self.input_path.name,
                INPUTS_BUCKET: self.bucket,
                INPUT_KEY: self.input_key(record),
                SUBMIT_TIME: int(time.time()),
                JOB_STATUS: PENDING,
                SYNTHETIC: True,
            }
            for record in records
        ]
        if len(items) == 1:
            self.jobs.put(items[0])
        else:
            self.jobs.put_all(items)
        answer = self.sns.publish_batch(
            TopicArn=self.topic_arn,
            PublishBatchRequestEntries=[
                {"Id": str(i), "Message": json.dumps(job_request(item))}
                for i, item in enumerate(items)
            ],
        )
        return {
            items[int(f["Id"])][JOB_ID]: f"{f.get('Code')}: {f.get('Message')}"
            for f in answer.get("Failed", [])
        }


class ResultsQueue:
    """A temporary queue subscribed to the job-results topic for one run; removed on exit,
    interrupted or not. Receiving threads pass each message and its arrival time on.

    Each receive is a 20 s long poll, which returns as soon as a result is there: arrival
    times are those of a short poll, without a receive a second while nothing arrives. No
    message is passed on once the context has exited (the run's figures are final then); the
    receive under way is not waited for, its thread ends when it returns.
    """

    def __init__(
        self,
        aws: Aws,
        topic_arn: str,
        name: str,
        receivers: int,
        on_message: Callable[[dict[str, Any], float], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sqs, self.sns = aws.client("sqs"), aws.client("sns")
        self.topic_arn, self.name = topic_arn, name
        self.on_message, self.clock = on_message, clock
        self.closing = threading.Event()
        self._passing_on = threading.Lock()  # held while messages are passed on
        self.threads = [
            threading.Thread(target=self._receive, name=f"results-{i}", daemon=True)
            for i in range(receivers)
        ]
        self.aws = aws
        self.url: str | None = None
        self.queue: Queue | None = None
        self.subscription: str | None = None

    def __enter__(self) -> ResultsQueue:
        self.url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        try:
            arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            self.sqs.set_queue_attributes(
                QueueUrl=self.url,
                Attributes={
                    "Policy": json.dumps(queue_policy(arn, self.topic_arn)),
                    "VisibilityTimeout": str(RESULTS_VISIBILITY_SECONDS),
                },
            )
            # Received and deleted as the workers' queues are (it has no dead-letter queue).
            self.queue = Queue(self.aws, self.url, "ann_load", dead_letter=False)
            self.subscription = self.sns.subscribe(
                TopicArn=self.topic_arn,
                Protocol="sqs",
                Endpoint=arn,
                Attributes={"RawMessageDelivery": "true"},
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
        except BaseException:
            self.remove()
            raise
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        with self._passing_on:
            self.closing.set()
        self.remove()

    def remove(self) -> None:
        if self.subscription:
            self.sns.unsubscribe(SubscriptionArn=self.subscription)
        if self.url:
            self.sqs.delete_queue(QueueUrl=self.url)

    def _receive(self) -> None:
        assert self.queue is not None
        received: list[Message] = []  # passed on, their delete waiting for a batch
        rng, failures = random.Random(), 0
        while not self.closing.is_set():
            try:
                messages = self.queue.receive(SQS_BATCH, RESULTS_WAIT_SECONDS)
            except (BotoCoreError, ClientError) as exc:
                if self.closing.is_set():
                    return  # the queue is gone
                failures += 1
                print(f"\nann_load: receiving job results failed: {exc}", file=sys.stderr)
                self.closing.wait(receive_backoff(failures, rng))
                continue
            failures = 0
            arrived = self.clock()
            with self._passing_on:
                if self.closing.is_set():
                    return
                for message in messages:
                    try:
                        self.on_message(decode_body(message.body), arrived)
                    except InvalidMessage:
                        pass  # not a job-results message: nothing of ours
            received += messages
            while len(received) >= SQS_BATCH:  # full batches; the rest go with the queue
                self.queue.delete(received[:SQS_BATCH])
                received = received[SQS_BATCH:]


class Requests:
    """The requests this process sends to AWS, by operation, retries included: botocore's
    `before-send` event of every client made after this counter."""

    def __init__(self, aws: Aws):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        aws.session.events.register("before-send", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        # Returns None: a before-send handler's answer would stand in for the request's.
        with self._lock:
            self._counts[event_name.rpartition(".")[2]] += 1

    def so_far(self) -> Counter[str]:
        with self._lock:
            return self._counts.copy()


class Sampler:
    """The job-requests queue's backlog into the timeline every `every` seconds (a call each),
    and, if `show`, the progress line every second (no call: the last backlog sampled)."""

    def __init__(
        self,
        loop: OpenLoop,
        aws: Aws,
        queue_url: str,
        show: bool,
        every: int = SAMPLE_EVERY_SECONDS,
    ):
        self.loop, self.queue_url, self.show, self.every = loop, queue_url, show, every
        self.sqs = aws.client("sqs")
        self.timeline: list[dict[str, Any]] = []
        self.backlog: int | None = None  # the last sampled
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.done.set()
        self.thread.join(timeout=30)
        self.sample(round(self.loop.now(), 3))  # the backlog as the run ends, not a second before
        if self.show:
            print(file=sys.stderr)

    def _run(self) -> None:
        for tick, sample in wake_ups(self.every, self.show):
            if self.done.wait(max(0.0, tick - self.loop.now())):
                return
            if sample:
                self.sample(float(tick))
            else:
                self.print_progress()

    def sample(self, tick: float) -> None:
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            backlog: int | None = int(attributes["ApproximateNumberOfMessages"])
            in_flight: int | None = int(attributes["ApproximateNumberOfMessagesNotVisible"])
        except (BotoCoreError, ClientError):
            backlog = in_flight = None  # a gap in the chart, not the end of the run
        self.backlog = backlog
        self.timeline.append(
            {
                "t": tick,
                "backlog": backlog,
                "in_flight": in_flight,
                "sent": self.loop.sent,
                "completed": self.loop.finished,
            }
        )
        self.print_progress()

    def print_progress(self) -> None:
        if self.show:
            print(f"\r{self.progress()}\x1b[K", end="", file=sys.stderr, flush=True)

    def progress(self) -> str:
        loop = self.loop
        p50, p99 = loop.end_to_end_so_far(50), loop.end_to_end_so_far(99)
        latency = "-" if p50 is None else f"{p50:.2f}s p99 {p99:.2f}s"
        return (
            f"{loop.now():6.0f}s  sent {loop.sent}/{len(loop.records)}  "
            f"completed {loop.finished}  backlog {'-' if self.backlog is None else self.backlog}  "
            f"e2e p50 {latency}  late {loop.late_sends}"
        )


def wake_ups(every: int, show: bool) -> Iterator[tuple[int, bool]]:
    """The sampler's wake-ups: (seconds after the start, whether to sample the backlog then).
    A sample every `every` seconds from 0; shown, a progress line in every second between."""
    for tick in itertools.count(0, 1 if show else every):
        yield tick, tick % every == 0


def process_aws(config: Config, threads: int) -> Aws:
    """The process's clients: a connection for each thread, and then some, and LEAN_CLIENTS."""
    return Aws(config, connections=threads + 16, botocore_config=LEAN_CLIENTS)
