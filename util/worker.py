"""The queue loop every utility runs: receive, hand each message to the handler, settle its
outcome, stop cleanly (docs/runtime.md).

Two threads share the work. The receiver long-polls for as many messages as there are free
slots and hands each to the pool at once; the main loop settles each message as soon as its
handler returns, which frees its slot, and meanwhile extends the visibility of the ones still
running, cancels any past ``handler_timeout_seconds`` and, once stopping, drains. A retry or
a defer comes back as a fresh copy (util/messages.py), so the queue's redrive policy counts
only deliveries that ended without an outcome; past ``max_retries`` the worker dead-letters
the message itself.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from util import metrics, systemd
from util.aws import Aws
from util.helpers import InvalidMessage
from util.messages import (
    HANDED_BACK,
    NOT_BEFORE,
    RETRIES,
    Handler,
    Message,
    Outcome,
    decode_body,
    invalid,
    number_attribute,
    own_attributes,
    retry,
    retry_delay,
)
from util.sqs import SQS_MAX_ATTRIBUTES, SQS_MAX_DELAY, Queue, capped, receive_backoff
from util.util_config import Config

HEARTBEAT_TICK = 0.25  # how often the loop looks at deadlines while handlers run
# A finished message's delete waits this long for others to share its batch; its slot is free
# at once. Far below any visibility timeout; a crash in between only means a redelivery.
DELETE_WAIT_SECONDS = 1.0
# Beyond the long poll, how long one receive may block before the loop counts as stuck and
# the systemd watchdog pings stop: one read timeout of the AWS client (util.helpers.Aws).
RECEIVE_STALL_SECONDS = 60
ONCE_WAIT_SECONDS = 1  # --once's long poll: short, but it asks every SQS server (0 s samples)

log = logging.getLogger("gas")


class Worker:
    """Long-polls one queue and hands each message to the handler (see module docstring)."""

    def __init__(
        self,
        utility: str,
        handler: Handler,
        config: Config,
        aws: Aws,
        queue: str,
        notifier: systemd.ServiceManager | None = None,
        setting: str = "",
    ):
        self.utility = utility
        self.handler = handler
        self.settings = config.worker
        self.config = config
        self.queue = Queue(aws, queue, utility, setting=setting)
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
        self.notifier = notifier or systemd.ServiceManager()
        self.watchdog = systemd.Watchdog(
            self.notifier, self.settings.wait_seconds + RECEIVE_STALL_SECONDS
        )

    # -- the loop ------------------------------------------------------------------------

    def work(self, once: bool = False) -> None:
        """Receive and handle until stopped (or, with `once`, until the queue is empty)."""
        log.info(
            "%s: consuming %s (concurrency %d)",
            self.utility,
            self.queue.url,
            self.settings.concurrency,
        )
        self.notifier.send("READY=1", f"STATUS=consuming {self.queue.url}")
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
        failures, wait = 0, self.settings.wait_seconds
        if once:  # an empty receive ends the run: it need not wait a whole long poll
            wait = min(wait, ONCE_WAIT_SECONDS)
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
                    messages = self.queue.receive(min(free, self.settings.max_messages), wait)
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
            metrics.emit_error(self.config, self.utility)
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
                    self.queue.change_visibility([message], 0)
                elif outcome.action == "early":
                    self.queue.change_visibility([message], capped(message, outcome.delay))
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
                self.queue.send(message.body, attributes, delay)
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
        hidden = capped(message, delay)
        self.queue.change_visibility([message], hidden)
        return Outcome(outcome.action, outcome.reason, hidden)

    def flush_deletes(self, force: bool = False) -> None:
        """Delete the finished messages once ten share a batch, the first has waited
        DELETE_WAIT_SECONDS, or `force`."""
        waiting = self.to_delete
        if waiting and (force or len(waiting) >= 10 or time.monotonic() >= self.delete_due):
            self.to_delete = []
            self.queue.delete(waiting)

    def move_to_dead_letter(self, message: Message, reason: str) -> None:
        """Send the message to the dead-letter queue with why; its copy numbers stay behind,
        so that a message redriven from there starts afresh (the reason has the count)."""
        attributes = dict(list(own_attributes(message).items())[:6])
        attributes.update(
            {
                "gas_reason": {"DataType": "String", "StringValue": reason[:1000] or "invalid"},
                "gas_utility": {"DataType": "String", "StringValue": self.utility},
                "gas_source_queue": {"DataType": "String", "StringValue": self.queue.url},
                "gas_message_id": {"DataType": "String", "StringValue": message.message_id},
            }
        )
        self.queue.dead_letter(message, attributes)

    def extend_visibility(self, messages: list[Message]) -> None:
        """Keep a message hidden while it is worked on, once half its timeout has gone."""
        now = time.monotonic()
        due = [m for m in messages if m.visible_until - now < self.queue.visibility_timeout / 2]
        if not due:
            return
        try:
            self.queue.change_visibility(due, capped(due[0], self.queue.visibility_timeout))
        except (BotoCoreError, ClientError) as exc:
            log.error("%s: could not extend visibility: %s", self.utility, exc)

    def hand_back(self, messages: list[Message]) -> None:
        """Make messages visible again at once, for another worker (or our restart)."""
        if not messages:
            return
        try:
            self.queue.change_visibility(messages, 0)
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
