"""ann_load: load-test the annotator fleet by submitting jobs exactly as the web app does.

    python util/ann_load.py --rate R (--duration S | --jobs N) [--ramp S] [--drain S]
                            [--input FILE] [--user ID]... [--out DIR] [--late-ms MS]
                            [--max-lag S] [--senders N] [--shared-input] [--batch-ms MS]
                            [--sample-every S] [--cleanup] [--config FILE]...
    python util/ann_load.py --cleanup [--config FILE]...   # remove every synthetic job
    python -m util.ann_load ...                            # the same

Open workload model: before the run, job k is given the time it is due (from the target rate
and ramp); at that time it is handed to a pool of sender threads, whatever became of earlier
sends, together with every other job due by then (up to ten: one BatchWriteItem of their
items, one PublishBatch of their requests). ``--batch-ms MS`` holds a job up to MS for later
ones to join it: fewer calls and less of ann_load's own CPU per job, each job's wait counted
in its send lag. Each job records when it was due and when it was actually sent, so a slow endpoint
shows as late sends and a lower achieved rate instead of silently stretching the schedule
(no coordinated omission). With ``--max-lag S`` a job that could not be sent within S seconds
of its time is dropped, and counted, so that a run against a target that cannot keep up still
ends on time.

A job: its input is uploaded to the inputs bucket as ``<prefix>/<user_id>/<job_id>~<name>``,
its PENDING item put (marked ``synthetic = true``), its job request published on the
job-requests topic. With ``--shared-input`` the input is uploaded once per user for the run
(``<prefix>/<user_id>/load-<run id>-shared~<name>``) and every job of that user names it,
which takes a third of the AWS calls, and so about a third of ann_load's own CPU, off each
job. Completions are seen on the job-results topic through a temporary queue subscribed for
the run and removed at its end, received by 20 s long polls and deleted ten at a time; the
job-requests backlog is sampled every ``--sample-every`` seconds (5): a run that sends
nothing costs a few calls a minute. ``--out DIR`` gets jobs.jsonl, summary.json (with
ann_load's own CPU and AWS requests per submitted job, ``cpu_ms_per_job`` and
``aws_requests``) and report.html.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/ann_load.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from util.ann_load_schedule import (
    BATCH_MAX,
    SAMPLE_EVERY_SECONDS,
    SYNTHETIC_JOB_PREFIX,
    JobRecord,
    OpenLoop,
    intended_times,
    plan,
    schedule_span,
    summarize,
    write_outputs,
)
from util.archives import backend_for
from util.helpers import (
    ARCHIVE_ID,
    INPUT_FILE_NAME,
    INPUT_KEY,
    INPUTS_BUCKET,
    JOB_ID,
    JOB_STATUS,
    LOG_KEY,
    PENDING,
    RESULT_KEY,
    RESULTS_BUCKET,
    SUBMIT_TIME,
    SYNTHETIC,
    USER_ID,
    Annotations,
    Aws,
    InvalidMessage,
    Users,
    job_request,
)
from util.messages import Message, decode_body
from util.parsers import argument, non_negative_float, positive_float, positive_int
from util.resources import queue_policy
from util.sqs import SQS_BATCH, Queue, receive_backoff
from util.util_config import UTILITY_DIR, Config, ConfigError, add_config_option, load

TEMP_QUEUE_PREFIX = "ann-load-"  # the run's temporary job-results queue: ann-load-<run id>
CONFIG_FILE = UTILITY_DIR / "ann_load_config.ini"
SAMPLE_INPUT = UTILITY_DIR / "ann_load_data" / "sample.vcf"
# Senders per job/s of target rate: enough threads for submissions taking up to 500 ms.
SEND_HEADROOM_SECONDS = 0.5
MIN_SENDERS = 8
RESULTS_PER_RECEIVER = 100  # job results per second one receiving thread keeps up with
# SQS's longest poll: an idle queue costs one receive per 20 s, and a result ends the wait at
# once. Stopping does not wait for a poll under way (ResultsQueue.__exit__).
RESULTS_WAIT_SECONDS = 20
# SQS's longest visibility timeout: a result received is not delivered again for 12 h, so
# deletes wait to fill a DeleteMessageBatch; the few left at the end go with the queue.
RESULTS_VISIBILITY_SECONDS = 12 * 3600
# An input up to this size is read once and sent from memory; a larger one is streamed from
# its file for each job.
INPUT_HELD_MAX_BYTES = 1024 * 1024
CLEANUP_THREADS = 16
# Two things botocore does for every request that cost a load generator CPU for nothing
# (docs/runtime.md): it checks the parameters against the service model (ann_load sends a
# few shapes of its own making, thousands of times, and AWS checks every request anyway),
# and it builds its User-Agent string, twice. A fixed one instead (botocore adds its
# version) also tells ann_load's requests apart in CloudTrail.
LEAN_CLIENTS = BotoConfig(parameter_validation=False, user_agent="gas-ann_load")
EXIT_INCOMPLETE = 3  # the run ended, but some jobs were not sent, failed or never completed
EXIT_INTERRUPTED = 130


class CleanupError(Exception):
    """S3 refused to delete an object; the message names it."""


# -- AWS: submitting, watching, cleaning up ---------------------------------------------------


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
            if len(received) >= SQS_BATCH:  # a message seen twice counts once anyway
                self.queue.delete(received)
                received = []


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


def _page_of_items(aws: Aws, table: str, job_prefix: str) -> Iterator[list[dict[str, str]]]:
    """Pages of the synthetic items whose job id starts with `job_prefix` (string attributes)."""
    names = {
        "#id": JOB_ID,
        "#syn": SYNTHETIC,
        "#ib": INPUTS_BUCKET,
        "#ik": INPUT_KEY,
        "#rb": RESULTS_BUCKET,
        "#rk": RESULT_KEY,
        "#lk": LOG_KEY,
        "#ar": ARCHIVE_ID,
    }
    pages = (
        aws.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=table,
            ConsistentRead=True,
            FilterExpression="#syn = :yes AND begins_with(#id, :prefix)",
            ProjectionExpression=", ".join(n for n in names if n != "#syn"),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":yes": {"BOOL": True}, ":prefix": {"S": job_prefix}},
        )
    )
    for page in pages:
        yield [{k: v["S"] for k, v in item.items() if "S" in v} for item in page["Items"]]


def cleanup(config: Config, aws: Aws, job_prefix: str) -> dict[str, int]:
    """Remove the synthetic jobs whose id starts with `job_prefix`: their S3 objects (input,
    result, log), archive (if the archive utility got to it) and item, in that order, so an
    interrupted cleanup can be run again. Then objects of such jobs left under the prefix
    without an item."""
    gas = config.gas
    s3, dynamodb = aws.client("s3"), aws.client("dynamodb")
    archives_backend = backend_for(config, aws)
    counts = {"jobs": 0, "objects": 0, "archives": 0}
    with ThreadPoolExecutor(CLEANUP_THREADS, thread_name_prefix="cleanup") as pool:
        for items in _page_of_items(aws, gas.annotations_table, job_prefix):
            keys: dict[str, list[str]] = {gas.inputs_bucket: [], gas.results_bucket: []}
            for item in items:
                for bucket, key in (
                    (INPUTS_BUCKET, INPUT_KEY),
                    (RESULTS_BUCKET, RESULT_KEY),
                    (RESULTS_BUCKET, LOG_KEY),
                ):
                    # Never outside the configured buckets, whatever an item says.
                    if item.get(bucket) in keys and item.get(key):
                        keys[item[bucket]].append(item[key])
            for bucket, bucket_keys in keys.items():
                # A shared input is named by many items: once per request.
                counts["objects"] += _delete_objects(s3, bucket, list(dict.fromkeys(bucket_keys)))
            archives = [item[ARCHIVE_ID] for item in items if ARCHIVE_ID in item]
            list(pool.map(archives_backend.delete, archives))
            counts["archives"] += len(archives)
            list(
                pool.map(
                    lambda i: dynamodb.delete_item(
                        TableName=gas.annotations_table, Key={JOB_ID: {"S": i[JOB_ID]}}
                    ),
                    items,
                )
            )
            counts["jobs"] += len(items)
    for bucket in (gas.inputs_bucket, gas.results_bucket):
        orphans = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{config.ann_load.prefix}/"
            )
            for obj in page.get("Contents", [])
            if obj["Key"].rpartition("/")[2].startswith(job_prefix)
        ]
        counts["objects"] += _delete_objects(s3, bucket, orphans)
    return counts


def _delete_objects(s3: Any, bucket: str, keys: list[str]) -> int:
    for start in range(0, len(keys), 1000):
        response = s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True},
        )
        if response.get("Errors"):
            error = response["Errors"][0]
            raise CleanupError(f"cannot delete s3://{bucket}/{error['Key']}: {error['Message']}")
    return len(keys)


def remove_leftover_queues(aws: Aws, results_topic_arn: str) -> int:
    """Temporary queues (and their subscriptions) of runs killed before they could remove them."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    urls = [
        url
        for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=TEMP_QUEUE_PREFIX)
        for url in page.get("QueueUrls", [])
    ]
    if not urls:
        return 0
    arns = {
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]: url
        for url in urls
    }
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(
        TopicArn=results_topic_arn
    ):
        for subscription in page["Subscriptions"]:
            if subscription["Endpoint"] in arns:
                sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    for url in urls:
        sqs.delete_queue(QueueUrl=url)
    return len(urls)


# -- the command ------------------------------------------------------------------------------


def _stop_on_signals(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: stop sending, skip the drain, report. Second: leave at once
    (the temporary queue is still removed on the way out)."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            f"\nann_load: {signal.Signals(signum).name}: stopping (again to leave at once)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def load_test(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    """One run: print what is about to be loaded, send, drain, report, optionally clean up."""
    requests = Requests(aws)  # before the first client is made
    users = args.user or list(config.ann_load.users)
    known = Users(aws, config.gas.users_table)
    unknown = [user for user in users if known.get(user) is None]
    if unknown:
        print(
            f"ann_load: unknown user(s) {', '.join(unknown)} in table {config.gas.users_table}",
            file=sys.stderr,
        )
        return 2
    times = intended_times(args.rate, args.ramp, args.duration, args.jobs)
    span = schedule_span(times, args.rate, args.duration)
    late_ms = config.ann_load.late_ms if args.late_ms is None else args.late_ms
    drain = config.ann_load.drain_seconds if args.drain is None else args.drain
    run_id = new_run_id()
    out = args.out or Path("ann_load-out") / run_id
    records = plan(times, users, run_id)
    submitter = Submitter(
        config,
        aws,
        args.input,
        config.ann_load.prefix,
        run_id if args.shared_input else None,
        users,
    )
    requests_queue = aws.queue_url(config.gas.job_requests_queue)
    results_topic = aws.topic_arn(config.gas.job_results_topic)
    endpoint = aws.client("sns").meta.endpoint_url
    print(
        f"ann_load: loading account {aws.account_id()} at {endpoint}\n"
        f"  job requests to {submitter.topic_arn}, backlog of {requests_queue}\n"
        f"  target {args.rate:g} jobs/s, ramp {args.ramp:g} s: {len(records)} jobs over "
        f"{span:g} s, for {', '.join(users)}, input {args.input} "
        f"({args.input.stat().st_size} bytes)\n"
        f"  run {run_id}, report in {out}",
        flush=True,
    )

    loop = OpenLoop(
        records,
        submitter,
        args.senders or _senders(args.rate),
        args.max_lag,
        batch_seconds=args.batch_ms / 1000,
        late_ms=late_ms,
    )
    _stop_on_signals(loop.stop)
    receivers = min(8, math.ceil(args.rate / RESULTS_PER_RECEIVER))
    show = sys.stderr.isatty()
    with ResultsQueue(
        aws, results_topic, f"{TEMP_QUEUE_PREFIX}{run_id}", receivers, loop.on_result, loop.clock
    ):
        loop.begin()
        cpu_started, requests_before = time.process_time(), requests.so_far()
        with Sampler(loop, aws, requests_queue, show, args.sample_every) as sampler:
            loop.send_all()
            loop.wait_drained(drain)
        cpu = time.process_time() - cpu_started
        made = requests.so_far() - requests_before
    summary = {
        "run_id": run_id,
        "started_at": datetime.fromtimestamp(loop.started_at, timezone.utc).isoformat(
            timespec="seconds"
        ),
        "account": aws.account_id(),
        "endpoint": endpoint,
        "interrupted": loop.stop.is_set(),
        "shared_input": args.shared_input,
        **summarize(
            records,
            sampler.timeline,
            args.rate,
            args.ramp,
            span,
            late_ms,
            drain,
            args.sample_every,
        ),
    }
    # ann_load's own cost, sending, receiving results and sampling, from the schedule's start:
    # its CPU, and the AWS requests that most of it goes to.
    per_job = max(summary["jobs"]["submitted"], 1)
    summary["cpu_ms_per_job"] = round(1000 * cpu / per_job, 3)
    summary["aws_requests"] = {
        "per_job": round(made.total() / per_job, 3),
        "by_operation": dict(sorted(made.items())),
    }
    write_outputs(out, records, summary, sampler.timeline)
    print_summary(summary, out)
    if args.cleanup:
        print(f"ann_load: cleanup: {cleanup(config, aws, f'{SYNTHETIC_JOB_PREFIX}{run_id}-')}")
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_INCOMPLETE if summary["jobs"]["completed"] < len(records) else 0


def process_aws(config: Config, threads: int) -> Aws:
    """The process's clients: a connection for each thread, and then some, and LEAN_CLIENTS."""
    return Aws(config, connections=threads + 16, botocore_config=LEAN_CLIENTS)


def _senders(rate: float) -> int:
    return max(MIN_SENDERS, math.ceil(rate * SEND_HEADROOM_SECONDS))


def print_summary(summary: dict[str, Any], out: Path) -> None:
    jobs = summary["jobs"]

    def figures(key: str, scale: float = 1, unit: str = "ms") -> str:
        d = summary[key]
        return (
            "  ".join(
                f"{k} {'-' if d[k] is None else f'{d[k] / scale:.3g}'}"
                for k in ("p50", "p90", "p99", "max")
            )
            + f" ({unit})"
        )

    print(
        f"sent {jobs['submitted']}/{jobs['scheduled']} ({jobs['send_errors']} errors, "
        f"{jobs['not_sent']} not sent, {jobs['dropped']} of them dropped), "
        f"{summary['late_sends']} late "
        f"(> {summary['late_threshold_ms']:g} ms)\n"
        f"rate achieved {summary['achieved_rate']:g} jobs/s, target "
        f"{summary['target_rate']:g} jobs/s\n"
        f"send lag       {figures('send_lag_ms')}\n"
        f"submit latency {figures('submit_latency_ms')}\n"
        f"end to end     {figures('end_to_end_ms', 1000, 's')}\n"
        f"completed {jobs['completed']}, failed {jobs['failed']}, never completed "
        f"{jobs['never_completed']} (drain {summary['drain_s']:g} s); job-requests backlog "
        f"max {summary['backlog']['max']}, at the end {summary['backlog']['final']}\n"
        f"ann_load's own CPU {summary['cpu_ms_per_job']:g} ms per job, "
        f"{summary['aws_requests']['per_job']:g} AWS requests per job\n"
        f"report: {out / 'report.html'}",
        flush=True,
    )


def clean_only(config: Config, aws: Aws) -> int:
    """``--cleanup`` alone: every synthetic job of any run, and leftover temporary queues."""
    endpoint = aws.client("sns").meta.endpoint_url
    print(
        f"ann_load: removing every synthetic job from account {aws.account_id()} at {endpoint}",
        flush=True,
    )
    counts = cleanup(config, aws, SYNTHETIC_JOB_PREFIX)
    counts["queues"] = remove_leftover_queues(aws, aws.topic_arn(config.gas.job_results_topic))
    backlog = aws.client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_url(config.gas.job_requests_queue),
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]["ApproximateNumberOfMessages"]
    print(f"ann_load: cleanup: {counts}")
    if int(backlog):
        print(
            f"ann_load: {backlog} job request(s) still queued: their jobs are gone, so the "
            "annotator will refuse them",
            file=sys.stderr,
        )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ann_load",
        description="Load-test the annotator fleet: submit jobs as the web "
        "app does at a target rate, report achieved rate and end-to-end latency.",
    )
    parser.add_argument(
        "--rate",
        type=argument(positive_float),
        metavar="R",
        help="target jobs per second (after the ramp)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--duration", type=argument(positive_float), metavar="S", help="send for S seconds"
    )
    length.add_argument("--jobs", type=argument(positive_int), metavar="N", help="send N jobs")
    parser.add_argument(
        "--ramp",
        type=argument(non_negative_float),
        default=0.0,
        metavar="S",
        help="climb linearly from 0 to R jobs/s over the first S seconds",
    )
    parser.add_argument(
        "--drain",
        type=argument(non_negative_float),
        metavar="S",
        help="after the last send, wait up to S s for completions "
        "(default: [ann_load] drain_seconds)",
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=SAMPLE_INPUT,
        metavar="FILE",
        help="input file of every job (default: a small bundled VCF)",
    )
    parser.add_argument(
        "--user",
        action="append",
        metavar="ID",
        help="submit for this user (repeatable; default: [ann_load] users)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the records and report go (default: ann_load-out/<run>)",
    )
    parser.add_argument(
        "--late-ms",
        type=argument(non_negative_float),
        metavar="MS",
        help="a send later than this counts as late (default: [ann_load] late_ms)",
    )
    parser.add_argument(
        "--max-lag",
        type=argument(non_negative_float),
        metavar="S",
        help="drop (and count) a job not sent within S s of its time "
        "(default: send every job, however late)",
    )
    parser.add_argument(
        "--senders",
        type=argument(positive_int),
        metavar="N",
        help=f"sending threads (default: rate x {SEND_HEADROOM_SECONDS} s, at least {MIN_SENDERS})",
    )
    parser.add_argument(
        "--shared-input",
        action="store_true",
        help="upload the input once per user for the run, not once per job",
    )
    parser.add_argument(
        "--batch-ms",
        type=argument(non_negative_float),
        default=0.0,
        metavar="MS",
        help="hold a due job up to MS for later ones to be sent with it "
        f"(up to {BATCH_MAX}; default 0: only jobs already due)",
    )
    parser.add_argument(
        "--sample-every",
        type=argument(positive_int),
        default=SAMPLE_EVERY_SECONDS,
        metavar="S",
        help="sample the job-requests backlog every S seconds, one call each "
        f"(default {SAMPLE_EVERY_SECONDS})",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="after the run, remove its jobs; alone, remove every synthetic job",
    )
    add_config_option(parser)
    args = parser.parse_args(argv)
    if args.rate is None and (args.duration or args.jobs or not args.cleanup):
        parser.error("--rate is required, with --duration or --jobs (or --cleanup alone)")
    if args.rate is not None and args.duration is None and args.jobs is None:
        parser.error("--duration or --jobs is required with --rate")
    if args.rate is not None and not args.input.is_file():
        parser.error(f"--input {args.input}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load(None, [CONFIG_FILE, *args.config])
    except ConfigError as exc:
        print(f"ann_load: config error: {exc}", file=sys.stderr)
        return 2
    threads = args.senders or (_senders(args.rate) if args.rate else CLEANUP_THREADS)
    aws = process_aws(config, threads)
    try:
        if args.rate is None:
            return clean_only(config, aws)
        return load_test(args, config, aws)
    except (BotoCoreError, ClientError, CleanupError) as exc:
        print(f"ann_load: AWS error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
