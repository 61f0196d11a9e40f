"""A DynamoDB outage during which the archive worker is SIGKILLed holding the message, again
and again: the message rides it out, as real processes through the faults proxy."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localaws import faults
from tests.conftest import Server, UtilityProcess, job, put_job, result_exists, wait_for
from util.schema import ARCHIVE_ID

CRASHES = 3
# A handler's DynamoDB request waits this long in the proxy, unanswered: the worker is killed
# meanwhile. (The proxy forwards it afterwards, a read, and drops the answer.)
HANG_MS = 60_000
SETTINGS = {
    "worker_retry_base_seconds": "1",
    "worker_retry_max_seconds": "2",
    "worker_aws_max_attempts": "1",  # a DynamoDB error fails the handler at once
}


def dynamodb_requests(proxy: str) -> int:
    """DynamoDB requests the proxy has seen, faulted or not."""
    operations = faults.counts(proxy)["counts"].get("dynamodb", {})
    return sum(n for by_fault in operations.values() for n in by_fault.values())


def dead_lettered(server: Server) -> int:
    attributes = server.client("sqs").get_queue_attributes(
        QueueUrl=server.queue_url(f"{server.config.archive.queue}-dlq"),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(n) for n in attributes.values())


def grown(count: Callable[[], int], beyond: int) -> Callable[[], bool]:
    """A condition: `count` has grown beyond what it was."""
    return lambda: count() > beyond


def until(server: Server, condition: Callable[[], Any], what: str) -> None:
    """Wait for `condition`; fail at once if the message reached the dead-letter queue."""

    def settled() -> Any:
        assert dead_lettered(server) == 0, f"the message was dead-lettered, waiting for {what}"
        return condition()

    wait_for(settled, timeout=60, what=what)


def test_a_message_rides_out_an_outage_with_crashes_and_never_reaches_the_dead_letter_queue(
    server: Server, tmp_path: Path
) -> None:
    # Given a free user's result, its archive message, a queue whose messages come back 2 s
    # after a crash, and DynamoDB down (every request answered with an error)
    put_job(server)
    sqs = server.client("sqs")
    url = server.queue_url(server.config.archive.queue)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "2"})
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"job_id": "j1", "user_id": "u-alice"}))
    process, proxy = faults.launch(
        server.env["AWS_ENDPOINT_URL"], services=["dynamodb"], errors=1.0
    )
    log = tmp_path / "archive.log"

    def start() -> UtilityProcess:
        return UtilityProcess("archive", log, env={"AWS_ENDPOINT_URL": proxy}, **SETTINGS)

    def retries() -> int:
        return log.read_text().count("outcome=retry")

    def requests() -> int:
        return dynamodb_requests(proxy)

    worker = start()
    try:
        # When, three times over, the handler asks for a retry, and then the worker is killed
        # while the handler waits on DynamoDB, and restarted
        retried = 0
        for crash in range(CRASHES):
            until(server, grown(retries, retried), f"a retry after {crash} crashes")
            retried = retries()
            faults.configure(proxy, errors=0, lost=1.0, latency_ms=HANG_MS)
            until(server, grown(requests, requests()), "the handler waiting on DynamoDB")
            worker.process.kill()
            worker.wait()
            faults.configure(proxy, errors=1.0, lost=0, latency_ms=0)
            worker = start()
        until(server, grown(retries, retried), f"a retry after {CRASHES} crashes")
        # and DynamoDB comes back
        faults.configure(proxy, errors=0)
        until(server, lambda: ARCHIVE_ID in job(server), "the archive")
    finally:
        worker.stop()
        process.terminate()
        process.wait(timeout=10)
    # Then the result is archived, the message never reached the dead-letter queue, and the
    # worker counted every retry the handler asked for, across the copies and the crashes
    assert not result_exists(server)
    assert dead_lettered(server) == 0
    done = re.search(r"job=j1 receives=\d+ outcome=done retries=(\d+)", worker.log)
    assert done and int(done[1]) >= CRASHES + 1, worker.log
