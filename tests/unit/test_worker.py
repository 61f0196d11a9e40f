"""The worker runtime against an in-process SQS: each outcome, failures, concurrency, stopping."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time

import pytest
from botocore.exceptions import EndpointConnectionError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from tests.conftest import Stack, wait_for
from util.helpers import InvalidMessage
from util.messages import Message, Outcome, defer, done, invalid, retry, retry_delay
from util.process import JsonFormatter
from util.sqs import receive_backoff
from util.util_config import ConfigError
from util.worker import Worker

QUEUE = "gas-archive"


def make_worker(stack: Stack, handler, **worker_settings) -> Worker:
    stack.config.worker.wait_seconds = 0
    for name, value in worker_settings.items():
        setattr(stack.config.worker, name, value)
    return Worker("test", handler, stack.config, stack.aws, QUEUE)


def send(stack: Stack, *bodies: str) -> None:
    for body in bodies:
        stack.client("sqs").send_message(QueueUrl=stack.queue_url(QUEUE), MessageBody=body)


def send_with(stack: Stack, body: str, **attributes: str) -> None:
    """One message with String attributes (a number's text, a word: as a sender may forge)."""
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url(QUEUE),
        MessageBody=body,
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    )


def receive_all(stack: Stack, queue: str = QUEUE) -> list[dict]:
    return (
        stack.client("sqs")
        .receive_message(
            QueueUrl=stack.queue_url(queue),
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        )
        .get("Messages", [])
    )


def counts(stack: Stack, queue: str = QUEUE) -> tuple[int, int]:
    """(visible, in flight) message counts of a queue."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


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


def delayed(stack: Stack, queue: str = QUEUE) -> int:
    """Messages of a queue sent with a delay that has not yet passed."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesDelayed"])


def test_retry_leaves_the_message_for_redelivery(stack: Stack) -> None:
    send(stack, '{"job_id": "j1"}')
    make_worker(stack, lambda m: retry("not now")).work(once=True)
    # A delayed copy replaces the message received
    assert counts(stack) == (0, 0) and delayed(stack) == 1


def test_defer_makes_the_message_visible_after_the_delay(stack: Stack) -> None:
    send(stack, '{"job_id": "j1"}')
    make_worker(stack, lambda m: defer(1)).work(once=True)
    assert counts(stack) == (0, 0) and delayed(stack) == 1
    # The queue's own timeout is 60 s: seeing it back within seconds proves the deferral.
    [back] = wait_for(lambda: receive_all(stack), timeout=10, what="the deferred message")
    # A defer is no retry: the copy counts none
    assert back["MessageAttributes"]["gas_retries"]["StringValue"] == "0"


def hidden_for(stack: Stack, queue: str = QUEUE) -> list[float]:
    """How long each message of a queue stays hidden from now, as SQS (moto) holds it."""
    backend = sqs_backends[DEFAULT_ACCOUNT_ID][stack.client("sqs").meta.region_name]
    now_ms = time.time() * 1000
    return [(m.visible_at - now_ms) / 1000 for m in backend.queues[queue]._messages]


def record_sends(worker: Worker) -> list[dict]:
    """The parameters of every SendMessage the worker makes."""
    sent: list[dict] = []
    worker.queue.sqs.meta.events.register(
        "provide-client-params.sqs.SendMessage", lambda params, **_: sent.append(params)
    )
    return sent


def test_a_defer_longer_than_retry_max_seconds_comes_back_after_it(stack: Stack) -> None:
    # Given a handler that wants its message back in 13 h
    send(stack, '{"job_id": "j1"}')
    worker = make_worker(stack, lambda m: defer(13 * 3600), retry_max_seconds=3600)
    sent = record_sends(worker)
    # When the worker defers it
    worker.work(once=True)
    # Then a copy comes back after retry_max_seconds (its handler defers it again then):
    # SQS's longest delay, 15 min, and the rest in gas_not_before
    [copy] = sent
    assert copy["DelaySeconds"] == 900
    not_before = float(copy["MessageAttributes"]["gas_not_before"]["StringValue"])
    assert 3590 < not_before - time.time() <= 3600
    assert copy["MessageAttributes"]["gas_retries"]["StringValue"] == "0"
    assert counts(stack) == (0, 0) and delayed(stack) == 1


@pytest.mark.parametrize(
    "body, handler, reason",
    [
        ("not json", lambda m: done(), "body is not JSON"),
        ("[1, 2]", lambda m: done(), "body is not a JSON object"),
        ('{"job_id": "j1"}', lambda m: invalid("forged"), "forged"),
        (
            '{"job_id": "j1"}',
            lambda m: (_ for _ in ()).throw(InvalidMessage("bad field")),
            "bad field",
        ),
    ],
)
def test_invalid_goes_to_the_dead_letter_queue_with_its_reason(
    stack: Stack, body, handler, reason
) -> None:
    send(stack, body)
    make_worker(stack, handler).work(once=True)
    assert counts(stack) == (0, 0)
    [dead] = receive_all(stack, f"{QUEUE}-dlq")
    assert dead["Body"] == body
    assert reason in dead["MessageAttributes"]["gas_reason"]["StringValue"]
    assert dead["MessageAttributes"]["gas_utility"]["StringValue"] == "test"


def test_handler_exception_is_logged_retried_and_the_worker_goes_on(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    send(stack, '{"job_id": "boom"}', '{"job_id": "fine"}')

    def handler(message: Message) -> Outcome:
        if message.job_id == "boom":
            raise RuntimeError("handler bug")
        return done()

    with caplog.at_level(logging.INFO, logger="gas"):
        make_worker(stack, handler).work(once=True)
    assert counts(stack) == (0, 0) and delayed(stack) == 1  # only "boom" comes back
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
    sqs.set_queue_attributes(QueueUrl=stack.queue_url(QUEUE), Attributes={"VisibilityTimeout": "2"})
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


def test_messages_that_arrive_after_the_stop_are_handed_back_unhandled(stack: Stack) -> None:
    # Given a SIGTERM that comes while a long poll is under way, and the poll then returns
    # a message
    send(stack, '{"job_id": "j1"}')
    handled = []
    worker = make_worker(stack, lambda m: handled.append(m.job_id) or done())
    real_receive = worker.queue.sqs.receive_message

    def receive_then_stop(**params):
        answer = real_receive(**params)
        worker.request_stop(signal.SIGTERM)
        return answer

    worker.queue.sqs.receive_message = receive_then_stop
    # When the worker runs until stopped
    worker.work()
    # Then the message was not handled, and is visible at once to the other copies instead of
    # hidden for the queue's visibility timeout
    assert handled == []
    assert [round(hidden) for hidden in hidden_for(stack)] == [0]


def test_per_message_log_line_as_json(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    send(stack, '{"job_id": "j7"}')
    with caplog.at_level(logging.INFO, logger="gas"):
        make_worker(stack, lambda m: defer(30, "grace period")).work(once=True)
    [record] = [r for r in caplog.records if getattr(r, "fields", None)]
    line = json.loads(JsonFormatter().format(record))
    assert line["utility"] == "test" and line["job_id"] == "j7"
    assert line["outcome"] == "defer" and line["delay"] == 30
    assert line["receive_count"] == 1 and line["reason"] == "grace period"
    assert line["retries"] == 0
    assert isinstance(line["duration_s"], float)


def test_a_queue_without_dead_letter_queue_is_refused(stack: Stack) -> None:
    stack.client("sqs").create_queue(QueueName="no-dlq")
    with pytest.raises(ConfigError, match="no RedrivePolicy"):
        Worker("test", lambda m: done(), stack.config, stack.aws, "no-dlq")


def test_a_queue_that_does_not_exist_is_named_with_its_setting(stack: Stack) -> None:
    with pytest.raises(ConfigError) as raised:
        Worker("test", lambda m: done(), stack.config, stack.aws, "gas-archve", setting="[x] q")
    assert str(raised.value) == "[x] q = 'gas-archve': no such queue in us-east-1"


def test_a_dead_letter_queue_that_does_not_exist_is_named(stack: Stack) -> None:
    # Given a queue whose dead-letter queue was deleted after its RedrivePolicy named it
    stack.client("sqs").delete_queue(QueueUrl=stack.queue_url(f"{QUEUE}-dlq"))
    with pytest.raises(ConfigError) as raised:
        Worker("test", lambda m: done(), stack.config, stack.aws, QUEUE, setting="[x] q")
    assert str(raised.value) == (
        f"[x] q = {QUEUE!r}: its dead-letter queue {QUEUE}-dlq (RedrivePolicy) does not exist"
    )


class ProcessExit(Exception):
    """os._exit, called in a test: raised instead of ending the test run (with status 0)."""


@pytest.fixture
def no_process_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_called(status: int) -> None:
        raise ProcessExit(f"the worker ended the process (status {status})")

    monkeypatch.setattr(os, "_exit", exit_called)


def test_work_abandoned_at_the_end_of_the_drain_grace_is_handed_back(
    stack: Stack, no_process_exit: None
) -> None:
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


def record_receives(worker: Worker) -> list[tuple[int, int]]:
    """(messages asked for, messages held) of each ReceiveMessage the worker sends."""
    asked: list[tuple[int, int]] = []
    worker.queue.sqs.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage",
        lambda params, **_: asked.append((params["MaxNumberOfMessages"], len(worker.in_flight))),
    )
    return asked


def test_a_free_slot_is_refilled_while_a_long_handler_runs(stack: Stack) -> None:
    # Given a long message and five short ones behind it, two slots, two messages per receive
    send(stack, '{"job_id": "long"}', *(json.dumps({"job_id": f"short{i}"}) for i in range(5)))
    finished: list[str] = []
    shorts_done = threading.Event()

    def handler(message: Message) -> Outcome:
        if message.job_id == "long":
            # Stands for a long transfer: it ends only once every short message is handled.
            shorts_done.wait(10)
        finished.append(message.job_id)
        if len(finished) == 5 and "long" not in finished:
            shorts_done.set()
        return done()

    worker = make_worker(stack, handler, concurrency=2, max_messages=2)
    asked = record_receives(worker)
    # When the worker drains the queue
    worker.work(once=True)
    # Then the short ones went through the other slot while the long one ran
    assert finished[-1] == "long" and sorted(finished[:-1]) == [f"short{i}" for i in range(5)]
    assert counts(stack) == (0, 0)
    # And no receive asked for more than the free slots
    assert all(count + held <= 2 for count, held in asked), asked
    assert any(count == 1 for count, _ in asked), "a single freed slot was refilled"


def test_retry_delay_doubles_per_retry_with_jitter_up_to_the_cap() -> None:
    class Edge(random.Random):
        def __init__(self, high: bool):
            super().__init__()
            self.high = high

        def uniform(self, a: float, b: float) -> float:
            return b if self.high else a

    low, high = Edge(False), Edge(True)
    assert [retry_delay(n, 120, 3600, low) for n in range(1, 7)] == [120, 240, 480, 960, 1920, 3600]
    assert [retry_delay(n, 120, 3600, high) for n in range(1, 7)] == [
        150,
        300,
        600,
        1200,
        2400,
        3600,
    ]
    assert retry_delay(1000, 120, 3600, high) == 3600


@pytest.mark.parametrize(
    "receives, retries, lowest",
    # the delay doubles per retry the handler asked for, whatever the receives
    [(1, 0, 10), (3, 0, 10), (1, 3, 80), (4, 2, 40)],
)
def test_a_retry_sends_a_copy_delayed_by_the_retries_so_far_not_the_receives(
    stack: Stack, caplog: pytest.LogCaptureFixture, receives: int, retries: int, lowest: int
) -> None:
    # Given a message that carries a user's attribute and, after `retries` handler retries of
    # earlier copies, their count; received `receives - 1` times before (crashed workers)
    body = json.dumps({"Type": "Notification", "Message": json.dumps({"job_id": "j1"})})
    send_with(stack, body, trace="t-1", **({"gas_retries": str(retries)} if retries else {}))
    sqs = stack.client("sqs")
    for _ in range(receives - 1):
        [m] = receive_all(stack)
        sqs.change_message_visibility(
            QueueUrl=stack.queue_url(QUEUE), ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    worker = make_worker(
        stack, lambda m: retry("SES throttled"), retry_base_seconds=10, retry_max_seconds=3600
    )
    sent = record_sends(worker)
    # When the handler asks for a retry
    with caplog.at_level(logging.INFO, logger="gas"):
        worker.work(once=True)
    # Then a copy of it, SNS envelope and attributes as they were, one more retry counted, is
    # delayed base x 2^retries (plus at most a quarter), and the message received is deleted
    [copy] = sent
    assert copy["MessageBody"] == body
    assert copy["MessageAttributes"]["trace"] == {"DataType": "String", "StringValue": "t-1"}
    assert copy["MessageAttributes"]["gas_retries"] == {
        "DataType": "Number",
        "StringValue": str(retries + 1),
    }
    assert "gas_not_before" not in copy["MessageAttributes"]
    seconds = copy["DelaySeconds"]
    assert lowest <= seconds <= lowest * 1.25
    assert counts(stack) == (0, 0) and delayed(stack) == 1
    assert f"receives={receives} outcome=retry delay={seconds}s retries={retries} " in caplog.text


def test_a_retry_delay_past_fifteen_minutes_rides_on_gas_not_before(stack: Stack) -> None:
    # Given a retry due in 20 min or more, past SQS's longest message delay (15 min)
    send(stack, '{"job_id": "j1"}')
    worker = make_worker(
        stack, lambda m: retry("down"), retry_base_seconds=1200, retry_max_seconds=3600
    )
    sent = record_sends(worker)
    # When the worker retries it
    worker.work(once=True)
    # Then the copy is delayed 15 min, and carries when it is due
    [copy] = sent
    assert copy["DelaySeconds"] == 900
    due = float(copy["MessageAttributes"]["gas_not_before"]["StringValue"]) - time.time()
    assert 1190 < due <= 1500


def test_a_copy_received_before_it_is_due_is_hidden_again_unhandled(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a copy due in 300 s, received now
    send_with(stack, '{"job_id": "j1"}', gas_retries="4", gas_not_before=str(time.time() + 300))
    seen: list[str] = []
    worker = make_worker(stack, lambda m: seen.append(m.job_id) or done(), retry_max_seconds=3600)
    sent = record_sends(worker)
    # When a worker receives it
    with caplog.at_level(logging.INFO, logger="gas"):
        worker.work(once=True)
    # Then its handler never ran, nothing was sent, and it is hidden until it is due
    assert seen == [] and sent == []
    [hidden] = hidden_for(stack)
    assert 290 < hidden <= 300
    assert "job=j1 receives=1 outcome=early delay=" in caplog.text and "retries=4" in caplog.text


@pytest.mark.parametrize(
    "not_before, handled",
    [
        ("1", True),  # long past
        ("soon", True),  # garbled: not a time
        ("nan", True),
        ("inf", True),
        ("1e300", False),  # forged far ahead: hidden at most retry_max_seconds
    ],
)
def test_a_garbled_or_forged_not_before_neither_crashes_nor_hides_past_retry_max_seconds(
    stack: Stack, not_before: str, handled: bool
) -> None:
    send_with(stack, '{"job_id": "j1"}', gas_retries="1", gas_not_before=not_before)
    seen: list[str] = []
    worker = make_worker(stack, lambda m: seen.append(m.job_id) or done(), retry_max_seconds=600)
    worker.work(once=True)
    assert seen == (["j1"] if handled else [])
    if handled:
        assert counts(stack) == (0, 0)
    else:
        [hidden] = hidden_for(stack)
        assert 590 < hidden <= 600


@pytest.mark.parametrize("retries", ["many", "-2", "2.5", "0x1", "1e400"])
def test_a_garbled_retries_count_counts_as_none(stack: Stack, retries: str) -> None:
    # Given a message whose gas_retries is no count of retries
    send_with(stack, '{"job_id": "j1"}', gas_retries=retries)
    worker = make_worker(
        stack, lambda m: retry("down"), retry_base_seconds=10, retry_max_seconds=3600
    )
    sent = record_sends(worker)
    # When its handler asks for a retry
    worker.work(once=True)
    # Then the worker goes on as for a first retry
    [copy] = sent
    assert copy["MessageAttributes"]["gas_retries"]["StringValue"] == "1"
    assert 10 <= copy["DelaySeconds"] <= 12.5


def test_after_max_retries_the_worker_moves_the_message_to_the_dead_letter_queue(
    stack: Stack,
) -> None:
    # Given a handler that retries every time, two retries allowed, a second's delay
    send_with(stack, '{"job_id": "j1"}', trace="t-1")
    runs: list[int] = []
    worker = make_worker(
        stack,
        lambda m: runs.append(m.retries) or retry(f"down {len(runs)}"),
        max_retries=2,
        retry_base_seconds=1,
        retry_max_seconds=1,
    )
    thread = threading.Thread(target=worker.work)
    thread.start()
    # When the worker has run it until it gives up
    try:
        [dead] = wait_for(
            lambda: receive_all(stack, f"{QUEUE}-dlq"), timeout=20, what="the dead letter"
        )
    finally:
        worker.request_stop(signal.SIGTERM)
        thread.join(10)
    # Then its handler ran three times, each copy knowing the retries before it, and the
    # message went to the dead-letter queue with the last reason, and nowhere else
    assert runs == [0, 1, 2]
    attributes = dead["MessageAttributes"]
    assert attributes["gas_reason"]["StringValue"] == "gave up after 2 retries: down 3"
    assert attributes["trace"]["StringValue"] == "t-1"
    assert "gas_retries" not in attributes  # a redriven message starts afresh
    assert counts(stack) == (0, 0) and delayed(stack) == 0


def test_a_failed_send_falls_back_to_hiding_the_message(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an SQS that takes no new message
    send(stack, '{"job_id": "j1"}')
    worker = make_worker(
        stack, lambda m: retry("down"), retry_base_seconds=100, retry_max_seconds=3600
    )

    def refuse(**params):
        raise EndpointConnectionError(endpoint_url="https://sqs.example")

    worker.queue.sqs.send_message = refuse
    # When the handler asks for a retry
    with caplog.at_level(logging.INFO, logger="gas"):
        worker.work(once=True)
    # Then the message received stays, hidden for the retry's delay: nothing is lost
    [hidden] = hidden_for(stack)
    assert 95 < hidden <= 125
    assert counts(stack) == (0, 1) and delayed(stack) == 0
    assert "outcome=retry delay=" in caplog.text


def test_a_message_is_never_hidden_past_twelve_hours_after_its_receive(stack: Stack) -> None:
    # Given a handler that ran nearly 12 h (its message received 43,000 s ago), then asks for
    # a retry that cannot be sent
    send(stack, '{"job_id": "j1"}')

    def long_handler(message: Message) -> Outcome:
        message.received_at -= 43_000
        return retry("down")

    worker = make_worker(stack, long_handler, retry_base_seconds=1000, retry_max_seconds=3600)

    def refuse(**params):
        raise EndpointConnectionError(endpoint_url="https://sqs.example")

    worker.queue.sqs.send_message = refuse
    # When the worker hides the message instead
    worker.work(once=True)
    # Then only for what SQS allows, 12 h from the receive, not for the retry's delay
    [hidden] = hidden_for(stack)
    assert 190 < hidden < 200


def test_a_message_with_no_room_for_the_retries_count_is_hidden_instead(stack: Stack) -> None:
    # Given a message with ten attributes of its own, SQS's most: none left for gas_retries
    send_with(stack, '{"job_id": "j1"}', **{f"a{i}": str(i) for i in range(10)})
    worker = make_worker(
        stack, lambda m: retry("down"), retry_base_seconds=100, retry_max_seconds=3600
    )
    sent = record_sends(worker)
    # When its handler asks for a retry
    worker.work(once=True)
    # Then no copy is sent (its attributes would be lost): the message itself is hidden
    assert sent == []
    [hidden] = hidden_for(stack)
    assert 95 < hidden <= 125


@pytest.mark.parametrize(
    "receive_count, attributes, before",
    [
        (1, {}, False),
        (2, {}, True),
        (1, {"gas_retries": {"DataType": "Number", "StringValue": "0"}}, True),  # a copy
    ],
)
def test_a_message_knows_whether_it_or_an_earlier_copy_was_delivered_before(
    receive_count: int, attributes: dict, before: bool
) -> None:
    message = Message("m", "r", "{}", receive_count, attributes, 0, 0)
    assert message.delivered_before is before


def test_failed_receives_back_off_exponentially(stack: Stack) -> None:
    # Given an SQS that refuses four receives in a row, then recovers
    send(stack, '{"job_id": "j1"}')
    handled = []
    worker = make_worker(stack, lambda m: handled.append(m.job_id) or done())
    real_receive = worker.queue.sqs.receive_message
    failures = iter(range(4))

    def flaky_receive(**params):
        if next(failures, None) is not None:
            raise EndpointConnectionError(endpoint_url="https://sqs.example")
        return real_receive(**params)

    worker.queue.sqs.receive_message = flaky_receive
    pauses: list[float] = []
    worker.pause = pauses.append
    # When the worker drains the queue
    worker.work(once=True)
    # Then each pause doubled (its upper half random), and the message was handled after
    assert [
        (1 / 2 <= p <= 1, 1 <= q <= 2, 2 <= r <= 4, 4 <= s <= 8) for p, q, r, s in [pauses]
    ] == [(True, True, True, True)], pauses
    assert handled == ["j1"]
    # And a long outage pauses at most a minute between receives
    assert 30 <= receive_backoff(50, random.Random(1)) <= 60


def test_a_handler_past_its_time_limit_is_cancelled_and_its_message_handed_back(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a handler that runs until it is told to give up
    send(stack, '{"job_id": "stuck"}')
    told = []

    def handler(message: Message) -> Outcome:
        if message.receive_count > 1:
            return done()  # stuck no more
        told.append(message.cancelled.wait(10))
        return retry("upload abandoned")

    # When it runs past the time limit
    with caplog.at_level(logging.INFO, logger="gas"):
        make_worker(stack, handler, handler_timeout_seconds=1).work(once=True)
    # Then it was cancelled, the log says why, and the message came back at once (not after
    # the queue's 60 s visibility timeout, nor a retry's backoff) and was done
    assert told == [True]
    assert "job=stuck: handler time limit of 1s passed" in caplog.text
    assert "receives=1 outcome=handed back" in caplog.text
    assert "receives=2 outcome=done" in caplog.text
    assert counts(stack) == (0, 0)


def test_deletes_of_messages_finished_apart_share_batches(stack: Stack) -> None:
    # Given twelve quick messages handled two at a time, each receive fetching what is free
    send(stack, *(json.dumps({"job_id": f"j{i}"}) for i in range(12)))
    worker = make_worker(stack, lambda m: done(), concurrency=2, max_messages=2)
    batches: list[int] = []
    worker.queue.sqs.meta.events.register(
        "provide-client-params.sqs.DeleteMessageBatch",
        lambda params, **_: batches.append(len(params["Entries"])),
    )
    # When the worker drains the queue
    worker.work(once=True)
    # Then every message is deleted, in batches of several messages
    assert sum(batches) == 12 and counts(stack) == (0, 0)
    assert len(batches) < 6, batches
