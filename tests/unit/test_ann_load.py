"""ann_load: the schedule, lateness under a controlled clock, the percentile maths, the report,
and cleanup (moto in process). How the open loop keeps time with real senders: bench/open_loop.py."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ElementTree
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import botocore
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from localaws.annotator import Annotator
from tests.conftest import Stack, job, message, put_job, vault_archive_count, wait_for
from util.ann_load import SAMPLE_INPUT, main, print_summary
from util.ann_load_aws import (
    INPUT_HELD_MAX_BYTES,
    RESULTS_VISIBILITY_SECONDS,
    RESULTS_WAIT_SECONDS,
    Requests,
    ResultsQueue,
    Sampler,
    Submitter,
    process_aws,
    wake_ups,
)
from util.ann_load_cleanup import clean_only, cleanup
from util.ann_load_report import distribution, percentile
from util.ann_load_schedule import (
    JobRecord,
    OpenLoop,
    intended_times,
    plan,
    schedule_span,
    summarize,
    write_outputs,
)
from util.aws import Aws
from util.schema import COMPLETED, FAILED, JOB_STATUS, PENDING, SYNTHETIC, job_request

# -- the schedule ------------------------------------------------------------------------------


def test_jobs_are_due_at_the_target_rate() -> None:
    # Given 5 jobs/s for 3 s, or 4 jobs at 2 jobs/s
    # Then jobs are due every 1/rate seconds from 0, and the last falls inside the duration
    assert intended_times(5, duration=3) == pytest.approx([k / 5 for k in range(15)])
    assert intended_times(2, jobs=4) == pytest.approx([0, 0.5, 1.0, 1.5])
    assert schedule_span(intended_times(2, jobs=4), 2, None) == pytest.approx(2.0)
    assert schedule_span([], 2, 3.0) == 3.0


def test_a_ramp_climbs_linearly_to_the_target_rate() -> None:
    # Given 10 jobs/s after a 2 s ramp, for 4 s
    times = intended_times(10, ramp=2, duration=4)
    # Then 10 * t^2 / 4 jobs are due by t during the ramp (2.5 by 1 s, 10 by 2 s), 10/s after
    per_second = Counter(int(t) for t in times)
    assert [per_second[s] for s in range(4)] == [3, 7, 10, 10]
    assert times[1] == pytest.approx((2 * 1 * 2 / 10) ** 0.5)
    assert times[10] == pytest.approx(2.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(0.1) for g in gaps[10:])
    assert gaps[:10] == sorted(gaps[:10], reverse=True), "gaps shrink as the rate climbs"


class Clock:
    """A controlled clock: it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lateness_is_recorded_and_a_job_too_late_is_dropped_not_sent() -> None:
    # Given three jobs due at 0, 0.1 and 0.2 s, a maximum lag of 150 ms, and a clock we move
    clock = Clock()
    records = plan([0.0, 0.1, 0.2], ["u-alice"], "test")
    submitted: list[str] = []

    def submit(batch: list[JobRecord]) -> dict[str, str]:
        submitted.extend(record.job_id for record in batch)
        return {}

    loop = OpenLoop(records, submit, senders=1, max_lag=0.15, clock=clock, late_ms=100)
    loop.begin()
    # When the senders get to them at 0.05 s, 0.25 s (150 ms late: still within) and 0.36 s
    for record, now in zip(records, (0.05, 0.25, 0.36), strict=True):
        clock.now = now
        loop._send([record])
    # Then each sent job's lateness is what the clock says, and the one 160 ms late is dropped,
    # never sent, and counted
    assert [r.lag for r in records[:2]] == [pytest.approx(0.05), pytest.approx(0.15)]
    assert records[2].dropped and records[2].sent is None
    assert submitted == [records[0].job_id, records[1].job_id]
    figures = summarize(records, [], rate=10, ramp=0, span=0.3, late_ms=100, drain=0)
    assert figures["jobs"]["dropped"] == 1 and figures["jobs"]["submitted"] == 2
    assert figures["late_sends"] == 1  # 150 ms is late, 50 ms is not
    assert loop.late_sends == 1, "the progress line's count, kept as jobs are sent"


def test_the_progress_line_keeps_its_figures_as_results_arrive() -> None:
    # Given four sent jobs, due every second
    clock = Clock()
    records = plan([0.0, 1.0, 2.0, 3.0], ["u-alice"], "test")
    loop = OpenLoop(records, lambda batch: {}, senders=1, clock=clock)
    loop.begin()
    # When their results arrive out of order, one twice, one FAILED, and one not ours
    for seq, status, arrived in ((2, COMPLETED, 2.5), (0, COMPLETED, 3.0), (2, COMPLETED, 9.0)):
        loop.on_result({"job_id": records[seq].job_id, "job_status": status}, arrived)
    loop.on_result({"job_id": records[1].job_id, "job_status": FAILED}, 4.0)
    loop.on_result({"job_id": "load-other-000000", "job_status": COMPLETED}, 4.0)
    # Then the latencies so far are those of the first COMPLETED result of each job
    assert sorted(loop.end_to_end) == loop.end_to_end == [0.5, 3.0]
    assert (loop.end_to_end_so_far(50), loop.end_to_end_so_far(99)) == (0.5, 3.0)
    assert loop.finished == 3


def test_the_backlog_is_sampled_every_few_seconds_and_progress_shown_every_second() -> None:
    # Not shown (stderr not a terminal): a wake-up only to sample, every 5 s
    assert list(itertools.islice(wake_ups(5, show=False), 3)) == [(0, True), (5, True), (10, True)]
    # Shown: a progress line every second, the backlog sampled every 5 s
    shown = list(itertools.islice(wake_ups(5, show=True), 7))
    assert shown == [
        (0, True),
        (1, False),
        (2, False),
        (3, False),
        (4, False),
        (5, True),
        (6, False),
    ]
    assert list(itertools.islice(wake_ups(1, show=True), 2)) == [(0, True), (1, True)]


# -- the figures -------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    ten = [7, 3, 10, 1, 5, 9, 2, 8, 6, 4]  # 1..10, unordered
    assert [percentile(ten, p) for p in (0, 10, 50, 90, 99, 100)] == [1, 1, 5, 9, 10, 10]
    five = [15, 20, 35, 40, 50]
    assert [percentile(five, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert percentile(range(1, 1001), 99.9) == 999  # not 1000 by a floating-point wobble
    assert percentile([], 50) is None
    assert distribution([2.0, 1.0]) == {"count": 2, "p50": 1.0, "p90": 2.0, "p99": 2.0, "max": 2.0}
    assert distribution([]) == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}


def finished_run() -> tuple[list[JobRecord], list[dict]]:
    """Four jobs due every 0.5 s: three completed, one never; one sent 30 ms late."""
    records = plan([0.0, 0.5, 1.0, 1.5], ["u-alice", "u-bob"], "r")
    for record, lag, e2e in zip(
        records, (0.001, 0.002, 0.030, 0.004), (1.0, 2.0, 3.0, None), strict=True
    ):
        record.sent = record.intended + lag
        record.submitted = record.sent + 0.010
        if e2e is not None:
            record.completed, record.status = record.intended + e2e, COMPLETED
    timeline = [
        {"t": t, "backlog": b, "in_flight": 1, "sent": t, "completed": 0}
        for t, b in enumerate([0, 2, 3, 1])
    ]
    return records, timeline


def test_summary_figures() -> None:
    records, timeline = finished_run()
    figures = summarize(
        records, timeline, rate=2, ramp=0, span=2.0, late_ms=10, drain=5, sample_every=1
    )
    assert figures["late_sends"] == 1
    assert figures["jobs"] == {
        "scheduled": 4,
        "sent": 4,
        "submitted": 4,
        "send_errors": 0,
        "not_sent": 0,
        "dropped": 0,
        "completed": 3,
        "failed": 0,
        "never_completed": 1,
    }
    assert figures["target_rate"] == 2.0
    # 4 submitted over the 2 s span stretched by the last send's 4 ms lag
    assert figures["achieved_rate"] == round(4 / 2.004, 3)
    assert figures["end_to_end_ms"] == {
        "count": 3,
        "p50": 2000.0,
        "p90": 3000.0,
        "p99": 3000.0,
        "max": 3000.0,
    }
    assert figures["send_lag_ms"]["p50"] == 2.0 and figures["send_lag_ms"]["max"] == 30.0
    assert figures["submit_latency_ms"]["p50"] == pytest.approx(10.0)
    assert figures["backlog"] == {"max": 3, "final": 1, "every_s": 1}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags[tag] += 1


def test_the_report_is_written_and_well_formed(tmp_path: Path) -> None:
    # Given a finished run
    records, timeline = finished_run()
    summary = {
        "run_id": "r",
        "started_at": "2024-01-01T00:00:00+00:00",
        "account": "1",
        "endpoint": "http://x",
        "interrupted": False,
        **summarize(records, timeline, rate=2, ramp=0, span=2.0, late_ms=10, drain=5),
    }
    # When its outputs are written
    write_outputs(tmp_path, records, summary, timeline)
    # Then one JSON line per job, the summary with its samples, and a page of four charts
    lines = (tmp_path / "jobs.jsonl").read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == [r.job_id for r in records]
    assert json.loads(lines[0])["e2e_ms"] == 1000.0 and json.loads(lines[3])["e2e_ms"] is None
    written = json.loads((tmp_path / "summary.json").read_text())
    assert {
        "run_id",
        "account",
        "endpoint",
        "target",
        "target_rate",
        "achieved_rate",
        "late_sends",
        "jobs",
        "send_lag_ms",
        "submit_latency_ms",
        "end_to_end_ms",
        "backlog",
        "drain_s",
        "percentile_method",
        "samples",
    } <= set(written)
    assert written["samples"] == timeline
    page = (tmp_path / "report.html").read_text()
    parser = _Tags()
    parser.feed(page)
    assert parser.tags["svg"] == 4 and parser.tags["polyline"] >= 3 and parser.tags["rect"] > 0
    root = ElementTree.fromstring(page.split("\n", 1)[1])  # well-formed XML after the doctype
    svg = "{http://www.w3.org/2000/svg}svg"
    assert len(list(root.iter(svg))) == 4
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "").replace(
        "http://x", ""
    ), "self-contained: nothing loaded from elsewhere"


# -- submitting and cleaning up (moto in process) ------------------------------------------------


def objects(stack: Stack, bucket: str) -> list[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


def items(stack: Stack) -> list[dict]:
    return stack.client("dynamodb").scan(TableName=stack.config.gas.annotations_table)["Items"]


def test_a_job_is_submitted_as_the_web_app_does(stack: Stack) -> None:
    # Given a queue on the job-requests topic, as the annotator fleet has
    sqs = stack.client("sqs")
    # When ann_load submits a job
    [record] = plan([0.0], ["u-alice"], "r1")
    Submitter(stack.config, stack.aws, SAMPLE_INPUT, "ann_load")([record])
    # Then the input is at <prefix>/<user_id>/<job_id>~<file name>, the item is PENDING and
    # marked synthetic, and the request carries the item's fields
    key = f"ann_load/u-alice/{record.job_id}~sample.vcf"
    assert objects(stack, stack.config.gas.inputs_bucket) == [key]
    item = job(stack, record.job_id)
    assert item[JOB_STATUS] == PENDING and item[SYNTHETIC] is True
    assert item["s3_key_input_file"] == key and item["input_file_name"] == "sample.vcf"
    url = stack.queue_url(stack.config.gas.job_requests_queue)
    [received] = sqs.receive_message(QueueUrl=url)["Messages"]
    assert json.loads(json.loads(received["Body"])["Message"]) == job_request(item)
    assert set(job_request(item)) == {
        "job_id",
        "user_id",
        "input_file_name",
        "submit_time",
        "s3_inputs_bucket",
        "s3_key_input_file",
        "job_status",
    }


def test_cleanup_removes_synthetic_jobs_and_nothing_else(stack: Stack) -> None:
    config = stack.config
    # Given two synthetic jobs, one of them completed by the annotator, one archived...
    records = plan([0.0, 0.1, 0.2], ["u-alice", "u-bob"], "r1")
    submit = Submitter(config, stack.aws, SAMPLE_INPUT, config.ann_load.prefix)
    for record in records:
        submit([record])
    annotator = Annotator(config, stack.aws, seconds=0)
    assert annotator(message(job_id=records[0].job_id, user_id="u-alice")).action == "done"
    archive_id = stack.client("glacier").upload_archive(vaultName=config.gas.vault, body=b"x")[
        "archiveId"
    ]
    stack.client("dynamodb").update_item(
        TableName=config.gas.annotations_table,
        Key={"job_id": {"S": records[2].job_id}},
        UpdateExpression="SET results_file_archive_id = :a",
        ExpressionAttributeValues={":a": {"S": archive_id}},
    )
    # ...a result left by a job whose item is already gone, and a real user's job
    orphan = f"{config.ann_load.prefix}/u-bob/load-r0-000009~sample.annot.vcf"
    stack.client("s3").put_object(Bucket=config.gas.results_bucket, Key=orphan, Body=b"x")
    put_job(stack, job_id="real")
    assert len(objects(stack, config.gas.results_bucket)) == 4
    # When cleanup runs
    counts = cleanup(config, stack.aws, "load-")
    # Then only the real job and its result are left, and the archive is gone
    assert counts == {"jobs": 3, "objects": 6, "archives": 1}
    assert [i["job_id"]["S"] for i in items(stack)] == ["real"]
    assert objects(stack, config.gas.inputs_bucket) == []
    assert objects(stack, config.gas.results_bucket) == ["gas/u-alice/real~sample.annot.vcf"]
    assert vault_archive_count(stack) == 0


def test_cleanup_alone_also_removes_temporary_queues_left_by_a_killed_run(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the temporary queue of a run killed before it could remove it, still subscribed
    sqs, sns = stack.client("sqs"), stack.client("sns")
    url = sqs.create_queue(QueueName="ann-load-20240101-000000-abcd")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = stack.aws.topic_arn(stack.config.gas.job_results_topic)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    # When cleanup runs alone
    assert clean_only(stack.config, stack.aws) == 0
    # Then the queue and its subscription are gone, the notify queue's subscription is not
    assert sqs.list_queues(QueueNamePrefix="ann-load-").get("QueueUrls", []) == []
    endpoints = [
        s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    ]
    assert endpoints == [arn.replace("ann-load-20240101-000000-abcd", stack.config.notify.queue)]
    assert "ann_load: cleanup: removed 0 jobs, 0 objects, 0 archives, 1 queue" in (
        capsys.readouterr().out.splitlines()
    )


def test_a_shared_input_is_uploaded_once_per_user_and_cleaned_up(stack: Stack) -> None:
    config = stack.config
    # Given four jobs of two users submitted with the run's input shared
    records = plan([0.0, 0.1, 0.2, 0.3], ["u-alice", "u-bob"], "r7")
    submit = Submitter(
        config, stack.aws, SAMPLE_INPUT, config.ann_load.prefix, "r7", ["u-alice", "u-bob"]
    )
    submit(records)
    # Then each user's input went up once, and every job of that user names it
    shared = [f"ann_load/{user}/load-r7-shared~sample.vcf" for user in ("u-alice", "u-bob")]
    assert objects(stack, config.gas.inputs_bucket) == shared
    assert [job(stack, r.job_id)["s3_key_input_file"] for r in records] == shared * 2
    # And cleanup of the run removes the jobs and the shared inputs
    assert cleanup(config, stack.aws, "load-r7-") == {"jobs": 4, "objects": 2, "archives": 0}
    assert objects(stack, config.gas.inputs_bucket) == [] and items(stack) == []


def test_jobs_sent_together_take_one_batch_write_and_one_publish(stack: Stack) -> None:
    config = stack.config
    # Given ten jobs due together
    records = plan([0.0] * 10, ["u-alice", "u-bob"], "r8")
    publishes: list[int] = []
    submit = Submitter(
        config, stack.aws, SAMPLE_INPUT, config.ann_load.prefix, "r8", ["u-alice", "u-bob"]
    )
    submit.sns.meta.events.register(
        "provide-client-params.sns.PublishBatch",
        lambda params, **_: publishes.append(len(params["PublishBatchRequestEntries"])),
    )
    writes: list[int] = []
    stack.client("dynamodb").meta.events.register(
        "provide-client-params.dynamodb.BatchWriteItem",
        lambda params, **_: writes.append(
            len(params["RequestItems"][config.gas.annotations_table])
        ),
    )
    # When they are submitted
    assert submit(records) == {}
    # Then one BatchWriteItem, on the process's client (no client made for the batch), put
    # the ten items, and one PublishBatch carried the ten requests, each as the web app's
    assert writes == [10]
    assert publishes == [10]
    sqs = stack.client("sqs")
    url = stack.queue_url(config.gas.job_requests_queue)
    requests = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        requests += [json.loads(json.loads(m["Body"])["Message"]) for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    assert sorted(r["job_id"] for r in requests) == sorted(r.job_id for r in records)
    assert all(r == job_request(job(stack, r["job_id"])) for r in requests)


def test_a_batch_window_sends_jobs_together_and_counts_their_wait_as_lag() -> None:
    # Given 20 jobs at 50 jobs/s, each held up to 100 ms for later ones
    records = plan(intended_times(50, duration=0.4), ["u-alice"], "test")
    batches: list[int] = []
    loop = OpenLoop(records, lambda batch: batches.append(len(batch)) or {}, 4, batch_seconds=0.1)
    # When they are sent
    loop.begin()
    loop.send_all()
    # Then every job went, in batches of several (never more than ten), each job's wait in
    # its lag
    assert sum(batches) == 20 and max(batches) <= 10 and len(batches) < 20, batches
    assert all(r.submitted is not None and r.lag is not None and r.lag >= 0 for r in records)


def test_a_small_input_is_read_once_a_large_one_streamed_for_each_job(
    stack: Stack, tmp_path: Path
) -> None:
    config = stack.config
    # Given an input just over the size held in memory, and the bundled small one
    large = tmp_path / "large.vcf"
    large.write_bytes(bytes(range(256)) * (INPUT_HELD_MAX_BYTES // 256) + b"x")
    small_job, large_job = plan([0.0, 0.1], ["u-alice"], "r9")
    # When a job of each is submitted
    small = Submitter(config, stack.aws, SAMPLE_INPUT, config.ann_load.prefix)
    small([small_job])
    streamed = Submitter(config, stack.aws, large, config.ann_load.prefix)
    streamed([large_job])
    # Then the small one was read once and is sent from memory, the large one from its file,
    # and each job's input is its file's bytes
    assert small.body == SAMPLE_INPUT.read_bytes() and streamed.body is None
    for record, path in ((small_job, SAMPLE_INPUT), (large_job, large)):
        key = job(stack, record.job_id)["s3_key_input_file"]
        got = stack.client("s3").get_object(Bucket=config.gas.inputs_bucket, Key=key)
        assert got["Body"].read() == path.read_bytes()


# -- watching: the results queue and the backlog (moto in process) -------------------------------


def results_message(job_id: str) -> str:
    return json.dumps({"job_id": job_id, "user_id": "u-alice", "job_status": COMPLETED})


def test_results_arrive_by_long_polls_and_are_deleted_ten_at_a_time(stack: Stack) -> None:
    # Given the run's temporary queue on the job-results topic, and the receiver's calls seen
    topic = stack.aws.topic_arn(stack.config.gas.job_results_topic)
    sqs, sns = stack.client("sqs"), stack.client("sns")
    waits: list[int] = []
    deletes: list[int] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage",
        lambda params, **_: waits.append(params["WaitTimeSeconds"]),
    )
    sqs.meta.events.register(
        "provide-client-params.sqs.DeleteMessageBatch",
        lambda params, **_: deletes.append(len(params["Entries"])),
    )
    seen: list[str] = []
    job_ids = [f"load-test-{n:06d}" for n in range(25)]
    with ResultsQueue(
        stack.aws, topic, "ann-load-test", 1, lambda body, _arrived: seen.append(body["job_id"])
    ) as results:
        # When 25 job results are published
        for job_id in job_ids:
            sns.publish(TopicArn=topic, Message=results_message(job_id))
        # Then each is passed on once, received by the longest polls SQS has
        wait_for(lambda: len(seen) == 25 and len(deletes) == 2, what="25 results, 2 deletes")
        assert sorted(seen) == job_ids
        assert set(waits) == {RESULTS_WAIT_SECONDS} == {20}
        # And deleted ten at a time; the last five stay hidden for the rest of the run
        assert deletes == [10, 10]
        attributes = sqs.get_queue_attributes(
            QueueUrl=results.url,
            AttributeNames=["VisibilityTimeout", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert attributes == {
            "VisibilityTimeout": str(RESULTS_VISIBILITY_SECONDS),
            "ApproximateNumberOfMessagesNotVisible": "5",
        }
    # And at the end the queue is gone without waiting for the poll under way to return
    assert sqs.list_queues(QueueNamePrefix="ann-load-").get("QueueUrls", []) == []
    assert results.threads[0].is_alive(), "the end of the run waited for a 20 s poll"


def test_a_result_received_once_the_run_is_ending_is_not_passed_on(stack: Stack) -> None:
    # Given the run's temporary queue with one result in it, and no receiving thread
    topic = stack.aws.topic_arn(stack.config.gas.job_results_topic)
    seen: list[dict] = []
    results = ResultsQueue(stack.aws, topic, "ann-load-test", 0, lambda body, _: seen.append(body))
    with results:
        stack.client("sns").publish(TopicArn=topic, Message=results_message("load-test-000000"))
        # When the run ends (its figures final) while a receive is under way
        stack.client("sqs").meta.events.register(
            "after-call.sqs.ReceiveMessage", lambda **_: results.closing.set()
        )
        results._receive()
    # Then the result it brings back is not passed on
    assert seen == []


def test_a_sample_records_the_backlog_and_the_progress_line_shows_it(stack: Stack) -> None:
    # Given a job request waiting in the job-requests queue
    url = stack.queue_url(stack.config.gas.job_requests_queue)
    stack.client("sqs").send_message(QueueUrl=url, MessageBody="{}")
    loop = OpenLoop(plan([0.0], ["u-alice"], "test"), lambda batch: {}, senders=1, clock=Clock())
    sampler = Sampler(loop, stack.aws, url, show=False, every=5)
    # When the sampler samples at 5 s
    sampler.sample(5.0)
    # Then the timeline has the backlog, and the progress line shows it until the next sample
    assert sampler.timeline == [{"t": 5.0, "backlog": 1, "in_flight": 0, "sent": 0, "completed": 0}]
    assert "backlog 1 " in sampler.progress() and "late 0" in sampler.progress()


def test_the_requests_made_are_counted_by_operation(stack: Stack) -> None:
    # Given a counter on a process's AWS clients, made before them
    aws = Aws(stack.config)
    requests = Requests(aws)
    url = stack.queue_url(stack.config.gas.job_requests_queue)
    # When two kinds of request are made, one of them twice
    aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    before = requests.so_far()
    aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    aws.client("dynamodb").describe_table(TableName=stack.config.gas.annotations_table)
    # Then each is counted, and the requests of a stretch are the difference
    assert requests.so_far() == {"GetQueueAttributes": 2, "DescribeTable": 1}
    assert requests.so_far() - before == {"GetQueueAttributes": 1, "DescribeTable": 1}


def test_ann_loads_clients_leave_checking_the_parameters_to_aws(stack: Stack) -> None:
    # Given a process's clients as the workers make them, and as ann_load does
    checked, unchecked = Aws(stack.config), process_aws(stack.config, threads=8)
    requests = Requests(unchecked)
    # When a call breaks its operation's constraints (a table name is 1 to 1024 characters)
    # Then botocore refuses it before sending for the workers; for ann_load it is sent, and
    # AWS refuses it
    with pytest.raises(ParamValidationError):
        checked.client("dynamodb").describe_table(TableName="")
    with pytest.raises(ClientError):
        unchecked.client("dynamodb").describe_table(TableName="")
    assert requests.so_far() == {"DescribeTable": 1}


def test_ann_loads_requests_carry_a_user_agent_of_their_own(stack: Stack) -> None:
    # Given ann_load's clients, and the requests they send
    aws = process_aws(stack.config, threads=8)
    agents: list[bytes] = []
    aws.session.events.register(
        "before-send", lambda request, **_: agents.append(request.headers["User-Agent"])
    )
    # When it sends requests of two services
    aws.client("sqs").list_queues()
    aws.client("sns").list_topics()
    # Then each names ann_load, and botocore's version, not botocore's User-Agent rebuilt for
    # every request
    assert agents == [f"gas-ann_load Botocore/{botocore.__version__}".encode()] * 2


# -- the command: its --out, a halted run ----------------------------------------------------


def test_ann_load_finds_an_out_it_cannot_write_before_it_sends_anything(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an --out under a file, where no directory can be made
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    # When ann_load is asked for a run that would write there
    code = main(["--rate", "10", "--jobs", "2", "--drain", "0", "--out", str(out)])
    # Then it stops at once with one line naming --out, having sent nothing
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ann_load: --out {out}: cannot write there: Not a directory"
    ]
    gas = stack.config.gas
    assert stack.client("dynamodb").scan(TableName=gas.annotations_table)["Items"] == []
    assert "Contents" not in stack.client("s3").list_objects_v2(Bucket=gas.inputs_bucket)
    assert "QueueUrls" not in stack.client("sqs").list_queues(QueueNamePrefix="ann-load-")


def halted_run() -> tuple[OpenLoop, dict]:
    """10 jobs/s for 10 s, halted (Ctrl-C) at 3 s with the 30 jobs due by then sent on time."""
    clock = Clock()
    records = plan([k / 10 for k in range(100)], ["u-alice"], "r")
    loop = OpenLoop(records, lambda batch: {}, senders=1, clock=clock)
    loop.begin()
    for record in records[:30]:
        clock.now = record.intended
        loop._send([record])
    clock.now = 3.0
    loop.halt()
    assert loop.wait_drained(5) is False
    figures = summarize(
        records, [], 10, 0, 10.0, late_ms=100, drain=loop.drained, stopped=loop.stopped
    )
    return loop, figures


def test_a_halted_run_rates_what_it_sent_over_the_time_it_ran() -> None:
    loop, figures = halted_run()
    assert loop.stopped == 3.0
    assert figures["jobs"]["submitted"] == 30
    assert figures["achieved_rate"] == 10.0  # 30 jobs in the 3 s it ran, not in the 10 planned


def test_a_halted_run_had_no_drain_and_says_none(capsys: pytest.CaptureFixture[str]) -> None:
    loop, figures = halted_run()
    assert loop.drained is None and figures["drain_s"] is None
    print_summary({**figures, "cpu_ms_per_job": 1.0, "aws_requests": {"per_job": 3.0}}, Path("out"))
    printed = capsys.readouterr().out
    assert "drain" not in printed
    assert "rate achieved 10 jobs/s, target 10 jobs/s" in printed


def test_a_drain_that_ran_says_how_long_it_waited() -> None:
    # Given every submitted job finished already: the drain ends at once
    clock = Clock()
    records = plan([0.0], ["u-alice"], "r")
    loop = OpenLoop(records, lambda batch: {}, senders=1, clock=clock)
    loop.begin()
    loop._send(records)
    loop.on_result({"job_id": records[0].job_id, "job_status": "COMPLETED"}, 0.5)
    assert loop.wait_drained(5) is True
    figures = summarize(records, [], 10, 0, 0.1, late_ms=100, drain=loop.drained)
    assert figures["drain_s"] == 0.0
