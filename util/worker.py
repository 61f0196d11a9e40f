"""The queue worker every utility runs: receive, handle, act on the outcome, stop cleanly.

A utility supplies a handler ``(Message) -> Outcome``; everything about SQS lives here:
long polling, SNS unwrapping, concurrency, visibility heartbeats, backoff, the dead-letter
queue, signals and the per-message log line.

Two threads share the work. The receiver long-polls for as many messages as there are free
slots (``concurrency`` minus the messages held) and hands each to the pool at once; the main
loop settles each message as soon as its handler returns, which frees its slot for the next
receive, and meanwhile extends the visibility of the ones still running, cancels any past
``handler_timeout_seconds`` and, once stopping, drains. One long transfer therefore holds one
slot, never the others: no message waits for another's batch.

Retries and defers come back as fresh copies. The handler decided, so its message has not
failed: on ``retry`` or ``defer`` the worker sends the message again (its body and
attributes as received, plus ``gas_retries``, the handler's retries so far) with a delay,
and deletes the one it received. A retry's delay is ``retry_base_seconds`` doubled per
earlier retry, plus up to 25 % jitter, at most ``retry_max_seconds``; a defer's is the
handler's, at most ``retry_max_seconds`` too (a longer one comes back sooner, and its handler
defers it again). SQS delays a message 15 min at most, so a longer delay rides on
``gas_not_before``: a copy received before then is hidden again for the rest, and its
handler does not run. So the queue's redrive policy counts, per copy, only the deliveries
that ended with no outcome (a crash, a worker frozen past the visibility timeout) and such
early receives, while the handler's retries are counted by ``gas_retries``: past
``max_retries`` the worker moves the message to the dead-letter queue itself ("gave up after
N retries: <last reason>"). A copy that cannot be sent (refused, or one attribute too many
for SQS's 10) leaves the message received hidden for the delay instead, as a visibility
change: nothing is lost, and a sent copy whose original then fails to be deleted is only a
duplicate. ``gas_retries`` and ``gas_not_before`` are anyone's to forge: a garbled one counts
as absent, and ``gas_not_before`` is believed at most ``retry_max_seconds`` past the copy's
SentTimestamp. A failed receive pauses 1 s, doubling per failure in a row up to 60 s.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from util import metrics, systemd
from util.helpers import Aws, InvalidMessage, decode_body
from util.util_config import Config, ConfigError, add_config_option, load

SQS_MAX_VISIBILITY = 43200  # 12 h, counted from the receive
SQS_MAX_DELAY = 900  # 15 min: the longest a message is delayed when sent
SQS_MAX_ATTRIBUTES = 10  # message attributes of one message
# What the worker writes on a copy it sends: the handler's retries so far, and when the copy
# is due (epoch seconds) if that is beyond SQS_MAX_DELAY.
RETRIES, NOT_BEFORE = "gas_retries", "gas_not_before"
HEARTBEAT_TICK = 0.25  # how often the loop looks at deadlines while handlers run
RETRY_JITTER = 0.25  # a retry's delay grows by up to this fraction, never shrinks
RECEIVE_BACKOFF_FIRST, RECEIVE_BACKOFF_MAX = 1.0, 60.0  # pause after failed receives
# A finished message's delete waits this long for others to share its batch; its slot is free
# at once. Far below any visibility timeout; a crash in between only means a redelivery.
DELETE_WAIT_SECONDS = 1.0
# Beyond the long poll, how long one receive may block before the loop counts as stuck and
# the systemd watchdog pings stop: one read timeout of the AWS client (util.helpers.Aws).
RECEIVE_STALL_SECONDS = 60

log = logging.getLogger("gas")


# What the runtime does with a message: delete it, leave it to come back, bring it back after a
# delay, move it to the dead-letter queue, make it visible again at once (we are stopping), or
# hide a copy received before it is due until then.
Action = Literal["done", "retry", "defer", "invalid", "handed back", "early"]


@dataclass(frozen=True)
class Outcome:
    """What the runtime does with a message once its handler returns."""

    action: Action
    reason: str = ""
    delay: int = 0


def done(reason: str = "") -> Outcome:
    return Outcome("done", reason)


def retry(reason: str = "") -> Outcome:
    return Outcome("retry", reason)


def defer(seconds: float, reason: str = "") -> Outcome:
    return Outcome("defer", reason, max(1, math.ceil(seconds)))


def invalid(reason: str) -> Outcome:
    return Outcome("invalid", reason)


HANDED_BACK = Outcome("handed back", "worker stopping")


def retry_delay(retry: int, base: int, cap: int, rng: random.Random) -> int:
    """Seconds the `retry`-th retry of a message waits: `base` doubled per earlier retry, plus
    up to RETRY_JITTER of it (spreading a burst of retries), at most `cap`.

    The jitter only adds, so `n` retries last at least base * (2**n - 1) seconds (if the cap
    allows): the outage max_retries rides out.
    """
    delay = base * 2 ** min(max(retry, 1) - 1, 30)
    return int(min(cap, delay * (1 + rng.uniform(0, RETRY_JITTER))))


def receive_backoff(failures: int, rng: random.Random) -> float:
    """The pause after `failures` receives in a row failed: RECEIVE_BACKOFF_FIRST doubled per
    failure up to RECEIVE_BACKOFF_MAX, its second half random (so a fleet does not return
    to a recovering SQS in step)."""
    ceiling = min(RECEIVE_BACKOFF_MAX, RECEIVE_BACKOFF_FIRST * 2 ** min(failures - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class Message:
    """One received SQS message as a handler sees it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: dict[str, Any]
    received_at: float
    visible_until: float
    sent_at: float = 0.0  # when SQS accepted it (SentTimestamp), epoch seconds
    data: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None  # handlers may set it; it goes into the log line
    # Set when the drain grace is nearly over: a long handler should give up cleanly.
    cancelled: threading.Event = field(default_factory=threading.Event)
    started_at: float | None = None  # when its handler started (monotonic)
    timed_out: bool = False  # cancelled because the handler time limit passed
    duration: float = 0.0
    # What the handler did, as metrics (util/metrics.py): e.g. {"BytesArchived": 1234}.
    metrics: dict[str, float] = field(default_factory=dict)
    retries: int = 0  # the handler's retries of earlier copies (gas_retries)
    not_before: float | None = None  # a copy's due time, epoch seconds (gas_not_before)

    @property
    def delivered_before(self) -> bool:
        """This message, or an earlier copy of it, was delivered before: that delivery may
        have done part of the work. A copy the worker sent always carries gas_retries."""
        return self.receive_count > 1 or RETRIES in self.attributes


def copy_number(message_id: str, attributes: dict[str, Any], name: str) -> float | None:
    """The value of a number the worker writes on a copy (gas_retries, gas_not_before); None
    if absent, or if garbled (logged): a finite number, not negative, a whole one for a count.
    """
    if name not in attributes:
        return None
    text = attributes[name].get("StringValue")
    try:
        number = float(text)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or (name == RETRIES and not number.is_integer()):
        log.warning("message %s: %s %r is garbled, ignored", message_id, name, text)
        return None
    return number


def own_attributes(message: Message) -> dict[str, dict[str, Any]]:
    """A message's attributes but the worker's copy numbers, as SendMessage takes them."""
    return {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in message.attributes.items()
        if name not in (RETRIES, NOT_BEFORE)
    }


def number_attribute(value: int) -> dict[str, str]:
    return {"DataType": "Number", "StringValue": str(value)}


Handler = Callable[[Message], Outcome]


class Worker:
    """Long-polls one queue and hands each message to the handler (see module docstring)."""

    def __init__(
        self,
        utility: str,
        handler: Handler,
        config: Config,
        aws: Aws,
        queue: str,
        notifier: systemd.Notifier | None = None,
    ):
        self.utility = utility
        self.handler = handler
        self.settings = config.worker
        self.config = config
        self.sqs = aws.client("sqs")
        self.queue_url = aws.queue_url(queue)
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        self.visibility_timeout = int(attributes["VisibilityTimeout"])
        self.dead_letter_url = self._dead_letter_url(aws, attributes.get("RedrivePolicy"))
        self.pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix=utility)
        # The messages held (received, not yet settled); only the receiver adds to it.
        self.in_flight: dict[Future[Outcome], Message] = {}
        self.changed = threading.Condition()  # in_flight changed, or a handler returned
        self.receive_started: float | None = None  # while a receive is under way
        self.receiver_done = False
        self.to_delete: list[Message] = []  # finished, their delete waiting for a batch
        self.delete_due = 0.0  # when the first of them must go
        self.rng = random.Random()
        self.stop_requested_at: float | None = None
        self.stopped = threading.Event()
        self.pause = self.stopped.wait  # a sleep that a stop interrupts
        self.notifier = notifier or systemd.Notifier()
        self.watchdog = systemd.Watchdog(
            self.notifier, self.settings.wait_seconds + RECEIVE_STALL_SECONDS
        )

    def _dead_letter_url(self, aws: Aws, redrive_policy: str | None) -> str:
        # Without a DLQ an invalid message could only be dropped or retried forever.
        if not redrive_policy:
            raise ConfigError(f"queue {self.queue_url} has no RedrivePolicy (dead-letter queue)")
        arn = json.loads(redrive_policy)["deadLetterTargetArn"]
        _, _, _, _, account, name = arn.split(":", 5)
        return aws.client("sqs").get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)[
            "QueueUrl"
        ]

    # -- the loop ------------------------------------------------------------------------

    def work(self, once: bool = False) -> None:
        """Receive and handle until stopped (or, with `once`, until the queue is empty)."""
        log.info(
            "%s: consuming %s (concurrency %d)",
            self.utility,
            self.queue_url,
            self.settings.concurrency,
        )
        self.notifier.send("READY=1", f"STATUS=consuming {self.queue_url}")
        self.watchdog.start()
        receiver = threading.Thread(
            target=self.receive_loop, args=(once,), daemon=True, name=f"{self.utility}-receive"
        )
        receiver.start()
        try:
            self.settle_loop()
        finally:
            self.flush_deletes(force=True)
            self.watchdog.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.info("%s: stopped", self.utility)

    def free_slots(self) -> int:
        return self.settings.concurrency - len(self.in_flight)

    def receive_loop(self, once: bool) -> None:
        """The receiver thread: fill free slots until stopped (`once`: until the queue is
        empty with nothing in flight)."""
        failures = 0
        try:
            while self.stop_requested_at is None:
                with self.changed:
                    # Timed waits: a signal handler must not take the lock to wake us.
                    while self.free_slots() <= 0 and self.stop_requested_at is None:
                        self.changed.wait(HEARTBEAT_TICK)
                    free, held = self.free_slots(), len(self.in_flight)
                if self.stop_requested_at is not None:
                    break
                self.receive_started = time.monotonic()
                try:
                    messages = self.receive(min(free, self.settings.max_messages))
                except Exception as exc:  # noqa: BLE001 - nothing may end the receiving
                    # botocore has already retried; back off so an outage is no busy loop.
                    failures += 1
                    pause = receive_backoff(failures, self.rng)
                    log.error(
                        "%s: receive failed (%d in a row), next in %.1fs: %s",
                        self.utility,
                        failures,
                        pause,
                        exc,
                        exc_info=not isinstance(exc, (BotoCoreError, ClientError)),
                    )
                    self.pause(pause)
                    continue
                finally:
                    self.receive_started = None
                failures = 0
                if self.stop_requested_at is not None:
                    self.hand_back(messages)
                    break
                with self.changed:
                    for message in messages:
                        future = self.pool.submit(self.perform, message)
                        self.in_flight[future] = message
                        future.add_done_callback(self.wake)
                    self.changed.notify_all()
                    if once and not messages:
                        if held == 0:
                            break
                        # Look again only once a handler has finished (or is retried).
                        while len(self.in_flight) >= held and self.stop_requested_at is None:
                            self.changed.wait(HEARTBEAT_TICK)
        finally:
            with self.changed:
                self.receiver_done = True
                self.changed.notify_all()

    def wake(self, _: Any = None) -> None:
        with self.changed:
            self.changed.notify_all()

    def settle_loop(self) -> None:
        """The main loop: settle each message as its handler returns, keep the others
        hidden and within their time limit, and drain when stopping."""
        while True:
            self.watchdog.beat(self.receive_started)  # a stuck receive is a stuck loop
            with self.changed:
                self.changed.wait_for(
                    lambda: self.receiver_done or any(f.done() for f in self.in_flight),
                    timeout=self.next_tick(),
                )
                finished = [(f, m) for f, m in self.in_flight.items() if f.done()]
            self.settle([(m, f.result()) for f, m in finished if not f.cancelled()])
            with self.changed:
                for future, _ in finished:
                    del self.in_flight[future]
                self.changed.notify_all()  # free slots for the receiver
                pending = list(self.in_flight.items())
                receiver_done = self.receiver_done
            if self.stop_requested_at is not None:
                running = self.drain(pending)
                # A receive still under way hands back what it gets, unless the grace is over.
                if not running and (receiver_done or time.monotonic() >= self.drain_deadlines()[1]):
                    break
            elif receiver_done and not pending:
                break
            self.flush_deletes(force=self.stop_requested_at is not None)
            running_messages = [m for f, m in pending if not f.done()]
            self.enforce_time_limit(running_messages)
            self.extend_visibility(running_messages)

    def request_stop(self, signum: int, _frame: Any = None) -> None:
        """First signal: drain and stop. Second signal: exit at once."""
        if self.stop_requested_at is not None:
            log.warning("%s: second %s, exiting now", self.utility, signal.Signals(signum).name)
            logging.shutdown()
            os._exit(1)
        log.info(
            "%s: %s, draining (up to %ds)",
            self.utility,
            signal.Signals(signum).name,
            self.settings.drain_seconds,
        )
        self.stop_requested_at = time.monotonic()
        self.stopped.set()
        self.notifier.send("STOPPING=1", f"STATUS=draining (up to {self.settings.drain_seconds}s)")

    def receive(self, count: int) -> list[Message]:
        """Up to `count` messages, long-polling."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self.settings.wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        now = time.monotonic()
        messages = []
        for m in response.get("Messages", []):
            attributes = m.get("MessageAttributes", {})
            retries = copy_number(m["MessageId"], attributes, RETRIES)
            messages.append(
                Message(
                    message_id=m["MessageId"],
                    receipt_handle=m["ReceiptHandle"],
                    body=m["Body"],
                    receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                    attributes=attributes,
                    received_at=now,
                    visible_until=now + self.visibility_timeout,
                    sent_at=int(m.get("Attributes", {}).get("SentTimestamp", time.time() * 1000))
                    / 1000,
                    retries=0 if retries is None else int(retries),
                    not_before=copy_number(m["MessageId"], attributes, NOT_BEFORE),
                )
            )
        return messages

    def enforce_time_limit(self, messages: list[Message]) -> None:
        """Ask handlers running past handler_timeout_seconds to give up; their messages are
        handed back when they return."""
        limit = self.settings.handler_timeout_seconds
        now = time.monotonic()
        for message in messages:
            if (
                message.started_at is not None
                and not message.timed_out
                and now - message.started_at > limit
            ):
                message.timed_out = True
                message.cancelled.set()
                log.warning(
                    "%s: message %s job=%s: handler time limit of %ds passed, cancelling it",
                    self.utility,
                    message.message_id,
                    message.job_id or "-",
                    limit,
                )

    def perform(self, message: Message) -> Outcome:
        """Decode and handle one message; whatever goes wrong, return an outcome."""
        if self.stop_requested_at is not None:
            # The pool may start a queued message between the stop and drain()'s cancel.
            return HANDED_BACK
        started = message.started_at = time.monotonic()
        try:
            message.data = decode_body(message.body)
            job_id = message.data.get("job_id")
            message.job_id = job_id if isinstance(job_id, str) else None
            early = self.due_in(message)  # a copy not yet due is hidden again, not handled
            outcome = (
                Outcome("early", "received before its gas_not_before", early)
                if early > 0
                else self.handler(message)
            )
        except InvalidMessage as exc:
            outcome = invalid(str(exc))
        except Exception as exc:  # a handler bug must not kill the worker
            log.error(
                "%s: message %s: unexpected error\n%s",
                self.utility,
                message.message_id,
                traceback.format_exc().rstrip(),
            )
            outcome = retry(f"unexpected error: {type(exc).__name__}: {exc}")
        message.duration = time.monotonic() - started
        return outcome

    def due_in(self, message: Message) -> int:
        """Whole seconds until a copy is due (gas_not_before, believed at most
        retry_max_seconds past the copy's sending); 0 when it is due."""
        if message.not_before is None:
            return 0
        due = min(message.not_before, message.sent_at + self.settings.retry_max_seconds)
        return max(0, int(due - time.time()))

    # -- outcomes ------------------------------------------------------------------------

    def settle(self, results: Iterable[tuple[Message, Outcome]]) -> None:
        """Act on each outcome; deletions wait for a batch (`flush_deletes`)."""
        to_delete = self.to_delete
        if not to_delete:
            self.delete_due = time.monotonic() + DELETE_WAIT_SECONDS
        for message, outcome in results:
            outcome = self.ruling(message, outcome)
            try:
                if outcome.action == "invalid":
                    self.move_to_dead_letter(message, outcome.reason)
                    to_delete.append(message)
                elif outcome.action == "done":
                    to_delete.append(message)
                elif outcome.action == "handed back":
                    # Abandoned (stopping, or past its time limit): let another copy (or our
                    # restart) take it now rather than after the visibility timeout.
                    self.change_visibility([message], 0)
                elif outcome.action == "early":
                    self.change_visibility([message], self.capped(message, outcome.delay))
                else:  # retry, defer: a fresh copy, later (module docstring)
                    outcome = self.later(message, outcome)
            except (BotoCoreError, ClientError) as exc:
                # The message stays on the queue and comes back: nothing is lost.
                log.error(
                    "%s: message %s: could not %s: %s",
                    self.utility,
                    message.message_id,
                    outcome.action,
                    exc,
                )
            self.log_outcome(message, outcome)

    def ruling(self, message: Message, outcome: Outcome) -> Outcome:
        """The outcome the runtime acts on: a retry abandoned (stopping, past its time limit)
        is handed back, and one past max_retries gives up."""
        if message.timed_out and outcome.action in ("retry", "handed back"):
            return Outcome(
                "handed back",
                "handler time limit passed" + (f": {outcome.reason}" if outcome.reason else ""),
            )
        if outcome.action == "retry" and message.cancelled.is_set():
            return Outcome("handed back", outcome.reason)
        if outcome.action == "retry" and message.retries >= self.settings.max_retries:
            return invalid(f"gave up after {message.retries} retries: {outcome.reason}")
        return outcome

    def later(self, message: Message, outcome: Outcome) -> Outcome:
        """A retry or a defer, with its delay: a copy sent with that delay, the message
        received deleted; or, if no copy can be sent, the message received hidden as long."""
        settings = self.settings
        retries = message.retries + (outcome.action == "retry")
        if outcome.action == "retry":
            delay = retry_delay(
                retries, settings.retry_base_seconds, settings.retry_max_seconds, self.rng
            )
        else:
            delay = min(outcome.delay, settings.retry_max_seconds)
        attributes = {**own_attributes(message), RETRIES: number_attribute(retries)}
        if delay > SQS_MAX_DELAY:
            attributes[NOT_BEFORE] = number_attribute(int(time.time()) + delay)
        if len(attributes) > SQS_MAX_ATTRIBUTES:
            log.warning(
                "%s: message %s: no room for %s among its attributes, hidden instead",
                self.utility,
                message.message_id,
                RETRIES,
            )
        else:
            try:
                self.sqs.send_message(
                    QueueUrl=self.queue_url,
                    MessageBody=message.body,
                    MessageAttributes=attributes,
                    DelaySeconds=min(delay, SQS_MAX_DELAY),
                )
            except (BotoCoreError, ClientError) as exc:
                log.error(
                    "%s: message %s: could not send it again, hidden instead: %s",
                    self.utility,
                    message.message_id,
                    exc,
                )
            else:
                self.to_delete.append(message)  # should its delete fail: a duplicate
                return Outcome(outcome.action, outcome.reason, delay)
        # This copy comes back itself, its receives counting: they lengthen a retry too.
        if outcome.action == "retry":
            delay = retry_delay(
                message.retries + message.receive_count,
                settings.retry_base_seconds,
                settings.retry_max_seconds,
                self.rng,
            )
        hidden = self.capped(message, delay)
        self.change_visibility([message], hidden)
        return Outcome(outcome.action, outcome.reason, hidden)

    def flush_deletes(self, force: bool = False) -> None:
        """Delete the finished messages once ten share a batch, the first has waited
        DELETE_WAIT_SECONDS, or `force`."""
        waiting = self.to_delete
        if waiting and (force or len(waiting) >= 10 or time.monotonic() >= self.delete_due):
            self.to_delete = []
            self.delete(waiting)

    def move_to_dead_letter(self, message: Message, reason: str) -> None:
        """Send the message to the dead-letter queue with why; its copy numbers stay behind,
        so that a message redriven from there starts afresh (the reason has the count)."""
        attributes = dict(list(own_attributes(message).items())[:6])
        attributes.update(
            {
                "gas_reason": {"DataType": "String", "StringValue": reason[:1000] or "invalid"},
                "gas_utility": {"DataType": "String", "StringValue": self.utility},
                "gas_source_queue": {"DataType": "String", "StringValue": self.queue_url},
                "gas_message_id": {"DataType": "String", "StringValue": message.message_id},
            }
        )
        self.sqs.send_message(
            QueueUrl=self.dead_letter_url, MessageBody=message.body, MessageAttributes=attributes
        )

    def delete(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(chunk)
                    ],
                )
            except (BotoCoreError, ClientError) as exc:
                log.error(
                    "%s: delete failed, %d message(s) will be redelivered: %s",
                    self.utility,
                    len(chunk),
                    exc,
                )
                continue
            for failure in response.get("Failed", []):
                log.error(
                    "%s: delete of %s failed: %s",
                    self.utility,
                    chunk[int(failure["Id"])].message_id,
                    failure.get("Message"),
                )

    def change_visibility(self, messages: list[Message], seconds: int) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            response = self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                    for i, m in enumerate(chunk)
                ],
            )
            now = time.monotonic()
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            for i, message in enumerate(chunk):
                if i in failed:
                    log.warning(
                        "%s: visibility change of %s failed", self.utility, message.message_id
                    )
                else:
                    message.visible_until = now + seconds

    @staticmethod
    def capped(message: Message, seconds: int) -> int:
        """SQS refuses a visibility that reaches past 12 h after the receive."""
        left = SQS_MAX_VISIBILITY - int(time.monotonic() - message.received_at) - 1
        return max(0, min(seconds, left))

    def extend_visibility(self, messages: list[Message]) -> None:
        """Keep a message hidden while it is worked on, once half its timeout has gone."""
        now = time.monotonic()
        due = [m for m in messages if m.visible_until - now < self.visibility_timeout / 2]
        if not due:
            return
        try:
            self.change_visibility(due, self.capped(due[0], self.visibility_timeout))
        except (BotoCoreError, ClientError) as exc:
            log.error("%s: could not extend visibility: %s", self.utility, exc)

    def hand_back(self, messages: list[Message]) -> None:
        """Make messages visible again at once, for another worker (or our restart)."""
        if not messages:
            return
        try:
            self.change_visibility(messages, 0)
        except (BotoCoreError, ClientError) as exc:
            log.error("%s: could not hand back %d message(s): %s", self.utility, len(messages), exc)
        for message in messages:
            self.log_outcome(message, HANDED_BACK)

    def drain_deadlines(self) -> tuple[float, float]:
        """(cancel at, exit at) while stopping, as monotonic times.

        The last part of the grace is left for handlers to abandon their work tidily.
        """
        assert self.stop_requested_at is not None
        grace = self.settings.drain_seconds
        exit_at = self.stop_requested_at + grace
        return exit_at - min(5.0, grace / 5), exit_at

    def next_tick(self) -> float:
        """How long to wait for handlers before looking at deadlines again."""
        if self.stop_requested_at is None:
            return HEARTBEAT_TICK
        now = time.monotonic()
        upcoming = [t - now for t in self.drain_deadlines() if t > now]
        return min([HEARTBEAT_TICK, *upcoming]) + 0.01

    def drain(self, pending: list[tuple[Future[Outcome], Message]]) -> set[Future[Outcome]]:
        """While stopping: hand back what has not started, bound what has by the grace."""
        unstarted = [(f, m) for f, m in pending if f.cancel()]
        with self.changed:
            for future, _ in unstarted:
                del self.in_flight[future]
        self.hand_back([m for _, m in unstarted])
        running = [(f, m) for f, m in pending if not f.cancelled()]
        cancel_at, exit_at = self.drain_deadlines()
        now = time.monotonic()
        if now >= cancel_at:
            for _, message in running:
                message.cancelled.set()
        if now >= exit_at and running:
            self.flush_deletes(force=True)
            self.hand_back([m for _, m in running])
            log.warning(
                "%s: drain grace over, exiting with %d handler(s) unfinished",
                self.utility,
                len(running),
            )
            logging.shutdown()
            os._exit(0)  # handler threads cannot be killed; the process can
        return {f for f, _ in running}

    def log_outcome(self, message: Message, outcome: Outcome) -> None:
        metrics.emit_message(
            self.config, self.utility, outcome.action, message.duration, message.metrics
        )
        level = logging.WARNING if outcome.action == "invalid" else logging.INFO
        reason = f" reason={outcome.reason!r}" if outcome.reason else ""
        timed = outcome.action in ("defer", "retry", "early")
        delay = f" delay={outcome.delay}s" if timed else ""
        log.log(
            level,
            "%s message=%s job=%s receives=%d outcome=%s%s retries=%d duration=%.3fs%s",
            self.utility,
            message.message_id,
            message.job_id or "-",
            message.receive_count,
            outcome.action,
            delay,
            message.retries,
            message.duration,
            reason,
            extra={
                "fields": {
                    "utility": self.utility,
                    "message_id": message.message_id,
                    "job_id": message.job_id,
                    "receive_count": message.receive_count,
                    "retries": message.retries,
                    "outcome": outcome.action,
                    "reason": outcome.reason or None,
                    "delay": outcome.delay if timed else None,
                    "duration_s": round(message.duration, 3),
                }
            },
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the structured fields of per-message lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {"message": record.getMessage()})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = (
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    if systemd.stderr_is_journal():
        # journald takes each line's priority from the prefix and strips it.
        formatter = systemd.JournalFormatter(formatter)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # botocore logs every retry at DEBUG; its warnings are worth keeping.
    logging.getLogger("botocore").setLevel(max(logging.getLevelName(level), logging.WARNING))


# glibc's M_MMAP_THRESHOLD, and the size from which buffers are mapped: transfer parts.
_M_MMAP_THRESHOLD, _MAPPED_FROM = -3, 1024 * 1024


def map_large_buffers() -> None:
    """Have glibc map every buffer of 1 MiB or more on its own, and unmap it when freed.

    By default glibc raises its mapping threshold to the size of the largest buffer freed,
    so after the first part of a transfer each thread's parts (16 MiB) come from its heap
    arena, which keeps them once freed: about 15 MiB above the parts in flight. A fixed
    threshold keeps the worker within `transfer_threads` × part size. Not glibc: nothing.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM)
    except (OSError, AttributeError):
        pass


def main(
    utility: str, make_handler: Callable[[Config, Aws], Handler], argv: list[str] | None = None
) -> int:
    """The command line every utility shares; returns the process exit code."""
    map_large_buffers()
    parser = argparse.ArgumentParser(prog=utility, description=f"GAS {utility} worker")
    add_config_option(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="drain the queue, then exit 0 when a receive returns nothing",
    )
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)

    def start() -> list[Worker]:
        config = load(utility, args.config)
        configure_logging(
            args.log_format or config.worker.log_format, args.log_level or config.worker.log_level
        )
        aws = Aws(config)
        return [
            Worker(
                utility,
                make_handler(config, aws),
                config,
                aws,
                getattr(config, utility).queue,
                systemd.Notifier.from_environ(),
            )
        ]

    return run(utility, start, once=args.once)


def run(name: str, start: Callable[[], Sequence[Worker]], once: bool = False) -> int:
    """Make the workers, then run them until a signal stops them; the process exit code.

    A setting that is missing or malformed exits 2 and AWS out of reach at start exits 1,
    each with one line naming the cause. Several workers (loops over one queue) run in
    threads; SIGTERM/SIGINT asks each to stop, and a second signal exits at once.
    """
    try:
        workers = start()
    except ConfigError as exc:
        print(f"{name}: config error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        return 1

    def request_stop(signum: int, frame: Any = None) -> None:
        for worker in workers:
            worker.request_stop(signum, frame)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # The first worker runs in the main thread, where the signal handlers run too.
    others = [
        threading.Thread(target=w.work, kwargs={"once": once}, name=f"{name}-{i}")
        for i, w in enumerate(workers[1:], 1)
    ]
    for thread in others:
        thread.start()
    workers[0].work(once=once)
    for thread in others:
        thread.join()
    return 0
