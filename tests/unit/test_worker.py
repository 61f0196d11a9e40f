"""The worker runtime against an in-process SQS: each outcome, failures, concurrency, stopping."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from tests.conftest import Stack, wait_for
from util.helpers import InvalidMessage
from util.util_config import ConfigError
from util.worker import JsonFormatter, Message, Outcome, Worker, defer, done, invalid, retry

QUEUE = "gas-archive"


def make_worker(stack: Stack, handler, **worker_settings) -> Worker:
    stack.config.worker.wait_seconds = 0
    for name, value in worker_settings.items():
        setattr(stack.config.worker, name, value)
    return Worker("test", handler, stack.config, stack.aws, QUEUE)


def send(stack: Stack, *bodies: str) -> None:
    for body in bodies:
        stack.client("sqs").send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=body)


def receive_all(stack: Stack, queue: str = QUEUE) -> list[dict]:
    return stack.client("sqs").receive_message(
        QueueUrl=stack.queue_url(queue), MaxNumberOfMessages=10, WaitTimeSeconds=0,
        MessageAttributeNames=["All"],
    ).get("Messages", [])


def counts(stack: Stack, queue: str = QUEUE) -> tuple[int, int]:
    """(visible, in flight) message counts of a queue."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


def test_done_deletes_the_message(stack: Stack) -> None:
    # Given two messages and a handler that finishes them
    send(stack, '{"job_id": "j1"}', '{"job_id": "j2"}')
    seen = []
    worker = make_worker(stack, lambda m: seen.append(m.job_id) or done())
    # When the worker drains the queue
    worker.work(once=True)
    # Then both were handled and neither is left anywhere
    assert sorted(seen) == ["j1", "j2"]
    assert counts(stack) == (0, 0)
    assert counts(stack, f"{QUEUE}-dlq") == (0, 0)


def test_sns_envelope_is_unwrapped(stack: Stack) -> None:
    envelope = {"Type": "Notification", "MessageId": "m", "Message": json.dumps({"job_id": "j9"})}
    send(stack, json.dumps(envelope))
    seen = []
    make_worker(stack, lambda m: seen.append(m.data) or done()).work(once=True)
    assert seen == [{"job_id": "j9"}]


def test_retry_leaves_the_message_for_redelivery(stack: Stack) -> None:
    send(stack, '{"job_id": "j1"}')
    make_worker(stack, lambda m: retry("not now")).work(once=True)
    assert counts(stack) == (0, 1)  # in flight until its visibility timeout ends


def test_defer_makes_the_message_visible_after_the_delay(stack: Stack) -> None:
    send(stack, '{"job_id": "j1"}')
    make_worker(stack, lambda m: defer(1)).work(once=True)
    assert counts(stack) == (0, 1)
    # The queue's own timeout is 60 s: seeing it back within seconds proves the deferral.
    wait_for(lambda: receive_all(stack), timeout=10, what="the deferred message")


def hidden_for(stack: Stack, queue: str = QUEUE) -> list[float]:
    """How long each message of a queue stays hidden from now, as SQS (moto) holds it."""
    backend = sqs_backends[DEFAULT_ACCOUNT_ID][stack.client("sqs").meta.region_name]
    now_ms = time.time() * 1000
    return [(m.visible_at - now_ms) / 1000 for m in backend.queues[queue]._messages]


def test_a_defer_past_twelve_hours_hides_the_message_as_long_as_sqs_allows(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    # Given a handler that wants its message back in 13 h, past SQS's 12 h limit
    send(stack, '{"job_id": "j1"}')
    # When the worker defers it
    with caplog.at_level(logging.WARNING, logger="gas"):
        make_worker(stack, lambda m: defer(13 * 3600)).work(once=True)
    # Then SQS took the longest visibility it allows, not nothing (the queue's 60 s)
    [hidden] = hidden_for(stack)
    assert 11 * 3600 < hidden <= 12 * 3600
    assert "visibility change" not in caplog.text


class RecordedPauses(threading.Event):
    """The worker's stop event, recording each pause instead of waiting it out."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout)
        return self.is_set()


def test_a_receive_that_keeps_failing_pauses_before_each_new_attempt(stack: Stack) -> None:
    # Given an SQS that refuses every receive (after botocore's own retries)
    worker = make_worker(stack, lambda m: done())
    attempts = []

    def refused(**kwargs):
        attempts.append(kwargs)
        if len(attempts) == 3:
            worker.request_stop(signal.SIGTERM)
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}},
                          "ReceiveMessage")

    worker.sqs.receive_message = refused
    worker.stopped = RecordedPauses()
    # When the worker runs until stopped
    worker.work()
    # Then it paused 5 s after each failure rather than looping at once (a busy loop in an
    # outage), each pause ended by a stop
    assert len(attempts) == 3
    assert worker.stopped.pauses == [5, 5, 5]


@pytest.mark.parametrize("body, handler, reason", [
    ("not json", lambda m: done(), "body is not JSON"),
    ("[1, 2]", lambda m: done(), "body is not a JSON object"),
    ('{"job_id": "j1"}', lambda m: invalid("forged"), "forged"),
    ('{"job_id": "j1"}', lambda m: (_ for _ in ()).throw(InvalidMessage("bad field")), "bad field"),
])
def test_invalid_goes_to_the_dead_letter_queue_with_its_reason(stack: Stack, body, handler,
                                                               reason) -> None:
    send(stack, body)
    make_worker(stack, handler).work(once=True)
    assert counts(stack) == (0, 0)
    [dead] = receive_all(stack, f"{QUEUE}-dlq")
    assert dead["Body"] == body
    assert reason in dead["MessageAttributes"]["gas_reason"]["StringValue"]
    assert dead["MessageAttributes"]["gas_utility"]["StringValue"] == "test"


def test_handler_exception_is_logged_retried_and_the_worker_goes_on(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    send(stack, '{"job_id": "boom"}', '{"job_id": "fine"}')

    def handler(message: Message) -> Outcome:
        if message.job_id == "boom":
            raise RuntimeError("handler bug")
        return done()

    with caplog.at_level(logging.INFO, logger="gas"):
        make_worker(stack, handler).work(once=True)
    assert counts(stack) == (0, 1)  # only "boom" is left, for redelivery
    assert "Traceback" in caplog.text and "RuntimeError: handler bug" in caplog.text
    assert "job=fine receives=1 outcome=done" in caplog.text


def test_messages_of_one_receive_run_concurrently(stack: Stack) -> None:
    send(stack, *(json.dumps({"job_id": f"j{i}"}) for i in range(3)))
    # Each handler waits for the other two: only concurrent handling can get past it.
    barrier = threading.Barrier(3, timeout=10)
    worker = make_worker(stack, lambda m: barrier.wait() is not None and done(), concurrency=3)
    worker.work(once=True)
    assert not barrier.broken
    assert counts(stack) == (0, 0)


def test_visibility_is_extended_while_a_long_handler_runs(stack: Stack) -> None:
    sqs = stack.client("sqs")
    sqs.set_queue_attributes(QueueUrl=stack.queue_url(QUEUE),
                             Attributes={"VisibilityTimeout": "2"})
    send(stack, '{"job_id": "slow"}')
    seen_by_others = []

    def slow_handler(message: Message) -> Outcome:
        # Outlive the 2 s timeout, then look as another consumer would.
        threading.Event().wait(3)
        seen_by_others.extend(receive_all(stack))
        return done()

    make_worker(stack, slow_handler).work(once=True)
    assert seen_by_others == []
    assert counts(stack) == (0, 0)


def test_stop_hands_back_unstarted_messages_and_finishes_the_running_one(stack: Stack) -> None:
    send(stack, *(json.dumps({"job_id": f"j{i}"}) for i in range(3)))
    handled = []

    def handler(message: Message) -> Outcome:
        if not handled:
            worker.request_stop(signal.SIGTERM)  # as if systemd stopped us mid-batch
        handled.append(message.job_id)
        return done()

    worker = make_worker(stack, handler, concurrency=1)
    worker.work()  # returns because of the stop, not because the queue is empty
    assert len(handled) == 1
    # The two that never started are visible again at once, not after 60 s.
    assert len(receive_all(stack)) == 2


def test_per_message_log_line_as_json(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    send(stack, '{"job_id": "j7"}')
    with caplog.at_level(logging.INFO, logger="gas"):
        make_worker(stack, lambda m: defer(30, "grace period")).work(once=True)
    [record] = [r for r in caplog.records if getattr(r, "fields", None)]
    line = json.loads(JsonFormatter().format(record))
    assert line["utility"] == "test" and line["job_id"] == "j7"
    assert line["outcome"] == "defer" and line["delay"] == 30
    assert line["receive_count"] == 1 and line["reason"] == "grace period"
    assert isinstance(line["duration_s"], float)


def test_a_queue_without_dead_letter_queue_is_refused(stack: Stack) -> None:
    stack.client("sqs").create_queue(QueueName="no-dlq")
    with pytest.raises(ConfigError, match="no RedrivePolicy"):
        Worker("test", lambda m: done(), stack.config, stack.aws, "no-dlq")


class ProcessExit(Exception):
    """os._exit, called in a test: raised instead of ending the test run (with status 0)."""


@pytest.fixture
def no_process_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_called(status: int) -> None:
        raise ProcessExit(f"the worker ended the process (status {status})")

    monkeypatch.setattr(os, "_exit", exit_called)


def test_work_abandoned_at_the_end_of_the_drain_grace_is_handed_back(
        stack: Stack, no_process_exit: None) -> None:
    # Given a handler still running when the drain grace nears its end
    send(stack, '{"job_id": "long"}')

    def handler(message: Message) -> Outcome:
        worker.request_stop(signal.SIGTERM)
        assert message.cancelled.wait(10), "the runtime never asked the handler to give up"
        return retry("abandoned")

    worker = make_worker(stack, handler, drain_seconds=1)
    # When it gives up as asked
    worker.work()
    # Then its message is visible again at once, not after the 60 s visibility timeout
    assert [m["Body"] for m in receive_all(stack)] == ['{"job_id": "long"}']
