"""The simulated annotator's handler (moto in process): the annotator's side of the contract."""

from __future__ import annotations

import io
import json

import pytest

from localaws.annotator import Annotator, annotate, output_keys
from tests.conftest import Stack, job, message
from util.ann_load import SAMPLE_INPUT
from util.ann_load_aws import Submitter
from util.ann_load_schedule import plan
from util.helpers import InvalidMessage
from util.schema import (
    COMPLETED,
    FAILED,
    INPUT_KEY,
    JOB_STATUS,
    LOG_KEY,
    RESULT_KEY,
    RESULTS_BUCKET,
    RUNNING,
)


def submit(stack: Stack, user_id: str = "u-alice") -> str:
    """A PENDING job with its input in S3 and its request published, as the web app leaves it."""
    [record] = plan([0.0], [user_id], user_id)
    Submitter(stack.config, stack.aws, SAMPLE_INPUT, "in")([record])
    return record.job_id


def received(stack: Stack, queue: str) -> list[dict]:
    """The bodies waiting on a queue, SNS envelopes opened."""
    messages = (
        stack.client("sqs")
        .receive_message(QueueUrl=stack.queue_url(queue), MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    bodies = [json.loads(m["Body"]) for m in messages]
    return [json.loads(b["Message"]) if b.get("Type") == "Notification" else b for b in bodies]


def run(stack: Stack, job_id: str, user_id: str = "u-alice"):
    return Annotator(stack.config, stack.aws, seconds=0, clock=lambda: 1_700_000_000)(
        message(job_id=job_id, user_id=user_id)
    )


def test_output_keys_sit_beside_the_input() -> None:
    assert output_keys("p/u/j~a.vcf", "a.vcf", "j") == (
        "p/u/j~a.annot.vcf",
        "p/u/j~a.vcf.count.log",
    )
    assert output_keys("j~a.txt", "a.txt", "j") == ("j~a.txt.annot.vcf", "j~a.txt.vcf.count.log")


def test_annotate_flags_every_variant() -> None:
    # Given a VCF of two header lines and two variants, one without INFO
    vcf = [
        b"##fileformat=VCFv4.2\n",
        b"#CHROM\tPOS\n",
        b"1\t2\t.\tA\tG\t9\tPASS\tDP=3\n",
        b"1\t5\t.\tC\tT\t9\tPASS\t.\n",
    ]
    # When it is annotated
    result = io.BytesIO()
    lines, variants = annotate(iter(vcf), result)
    # Then the flag is declared in the header and added to each variant's INFO
    assert (lines, variants) == (4, 2)
    out = result.getvalue().decode().splitlines()
    assert out[1].startswith("##INFO=<ID=GAS_SIM") and out[2] == "#CHROM\tPOS"
    assert out[3].endswith("DP=3;GAS_SIM") and out[4].endswith("\tGAS_SIM")


def test_a_free_users_job_is_completed_announced_and_sent_to_archive(stack: Stack) -> None:
    config = stack.config
    # Given a job request of a free user
    job_id = submit(stack)
    # When the annotator handles it
    outcome = run(stack, job_id)
    # Then the job is COMPLETED with its result and log beside the input
    assert (outcome.action, outcome.reason) == ("done", "completed")
    item = job(stack, job_id)
    assert item[JOB_STATUS] == COMPLETED and item["complete_time"] == 1_700_000_000
    assert item[RESULTS_BUCKET] == config.gas.results_bucket
    assert item[RESULT_KEY] == item[INPUT_KEY].replace("~sample.vcf", "~sample.annot.vcf")
    s3 = stack.client("s3")
    result = s3.get_object(Bucket=item[RESULTS_BUCKET], Key=item[RESULT_KEY])["Body"].read()
    assert result.count(b";GAS_SIM") == SAMPLE_INPUT.read_bytes().count(b"\nchr")
    log = s3.get_object(Bucket=item[RESULTS_BUCKET], Key=item[LOG_KEY])["Body"].read()
    assert b"variants 66" in log
    # And its result is published on the job-results topic, and the archive is asked
    [published] = received(stack, config.notify.queue)
    assert published == {
        "job_id": job_id,
        "user_id": "u-alice",
        "job_status": COMPLETED,
        "complete_time": 1_700_000_000,
        "s3_results_bucket": item[RESULTS_BUCKET],
        "s3_key_result_file": item[RESULT_KEY],
        "s3_key_log_file": item[LOG_KEY],
    }
    assert received(stack, config.archive.queue) == [{"job_id": job_id, "user_id": "u-alice"}]


def test_a_premium_users_job_is_not_sent_to_archive(stack: Stack) -> None:
    # Given a premium user's job request, when the annotator handles it
    job_id = submit(stack, "u-bob")
    assert run(stack, job_id, "u-bob").action == "done"
    # Then its result is announced, and the archive is not asked
    assert [m["job_id"] for m in received(stack, stack.config.notify.queue)] == [job_id]
    assert received(stack, stack.config.archive.queue) == []


def test_a_redelivered_request_announces_the_finished_job_again(stack: Stack) -> None:
    # Given a job completed, whose announcement may have been lost in a crash
    job_id = submit(stack, "u-bob")
    run(stack, job_id, "u-bob")
    received(stack, stack.config.notify.queue)
    # When its request comes again
    outcome = run(stack, job_id, "u-bob")
    # Then it is announced again, not run again
    assert (outcome.action, outcome.reason) == ("done", "already COMPLETED: announced again")
    assert [m["job_status"] for m in received(stack, stack.config.notify.queue)] == [COMPLETED]


def test_a_job_left_running_by_a_crashed_annotator_is_finished(stack: Stack) -> None:
    # Given a job an annotator marked RUNNING before it crashed
    job_id = submit(stack, "u-bob")
    assert Annotator(stack.config, stack.aws, 0).set_status(job_id, RUNNING, "PENDING")
    # When its request is delivered again, then it is run to completion
    assert run(stack, job_id, "u-bob").reason == "completed"
    assert job(stack, job_id)[JOB_STATUS] == COMPLETED


def test_a_missing_input_fails_the_job(stack: Stack) -> None:
    # Given a job whose input is not in S3
    job_id = submit(stack)
    stack.client("s3").delete_object(
        Bucket=stack.config.gas.inputs_bucket, Key=job(stack, job_id)[INPUT_KEY]
    )
    # When the annotator handles it, then the job FAILED and that is announced (no archive)
    assert run(stack, job_id).reason == "input file missing: job failed"
    assert job(stack, job_id)[JOB_STATUS] == FAILED
    assert [m["job_status"] for m in received(stack, stack.config.notify.queue)] == [FAILED]
    assert received(stack, stack.config.archive.queue) == []


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"job_id": "nope", "user_id": "u-alice"}, "unknown job nope"),
        ({"job_id": "JOB", "user_id": "u-mallory"}, "user u-mallory does not own job JOB"),
    ],
)
def test_a_request_for_a_job_not_the_senders_is_invalid(
    stack: Stack, body: dict, reason: str
) -> None:
    # Given a pending job, when a request names another job or another user
    job_id = submit(stack)
    body = {k: v.replace("JOB", job_id) for k, v in body.items()}
    # Then the request is invalid (to the dead-letter queue) and the job is untouched
    with pytest.raises(InvalidMessage, match=reason.replace("JOB", job_id)):
        Annotator(stack.config, stack.aws, 0)(message(**body))
    assert job(stack, job_id)[JOB_STATUS] == "PENDING"
