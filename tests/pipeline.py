"""The utilities' handlers over their real queues, in process: what workers would do, until
nothing is left to do. Tests use it to redeliver whatever a scenario left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.conftest import NOW, Stack
from util.archive.archive import Archiver
from util.helpers import InvalidMessage
from util.messages import Message, Outcome, decode_body
from util.notify.notify import Notifier
from util.restore.restore import Restorer
from util.thaw.thaw import Thawer

HANDLERS: dict[str, Callable[..., Callable[[Message], Outcome]]] = {
    "archive": Archiver,
    "restore": Restorer,
    "thaw": Thawer,
    "notify": Notifier,
}


@dataclass
class Pipeline:
    """Fresh handlers (as a restarted worker has) draining the utilities' queues.

    Time is the handlers' clock, and moves on only when a message is deferred: to its time.
    """

    stack: Stack
    clock: float = NOW
    # Every message sent to a dead-letter queue, with its reason, per utility.
    dead: dict[str, list[str]] = field(default_factory=dict)
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)

    def handler(self, utility: str) -> Callable[[Message], Outcome]:
        handler = HANDLERS[utility](self.stack.config, self.stack.aws, clock=lambda: self.clock)
        if utility == "restore":
            handler.retrievals.claim_wait_seconds = 0
        return handler

    def step(self, utility: str) -> int:
        """Handle what the utility's queue holds now; how many messages it held."""
        sqs = self.stack.client("sqs")
        url = self.stack.queue_url(getattr(self.stack.config, utility).queue)
        received = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        handler = self.handler(utility)
        for m in received:
            message = Message(
                m["MessageId"],
                m["ReceiptHandle"],
                m["Body"],
                int(m["Attributes"]["ApproximateReceiveCount"]),
                {},
                0,
                0,
            )
            try:
                message.data = decode_body(message.body)
                outcome = handler(message)
            except InvalidMessage as exc:
                outcome = Outcome("invalid", str(exc))
            self.outcomes.append((utility, outcome))
            if outcome.action == "invalid":
                self.dead.setdefault(utility, []).append(outcome.reason)
            if outcome.action in ("done", "invalid"):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            else:  # retry or defer: back at once, its time come (the clock moves on to it)
                self.clock += outcome.delay
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
        return len(received)

    def settle(
        self,
        until: Callable[[], bool] = lambda: True,
        timeout: float = 20,
        utilities: tuple[str, ...] = tuple(HANDLERS),
    ) -> None:
        """Drain the queues until `until()` holds with every queue empty; fail at `timeout`.

        Completion notices come from timers, so an empty round is not the end: the queues
        are looked at again until the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            busy = sum(self.step(utility) for utility in utilities)
            if not busy and until():
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the pipeline did not settle in {timeout}s; "
                    f"last outcomes: {self.outcomes[-5:]}"
                )
            if not busy:
                time.sleep(0.05)
