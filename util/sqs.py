"""One SQS queue as the worker (util/worker.py) and ann_load consume it: long-polled receives,
deletes ten to a batch, visibility changes, a message sent again, the dead-letter queue.

A worker's queue must have a dead-letter queue (RedrivePolicy): without one an invalid message
could only be dropped or retried forever, so `Queue` refuses to start on one that has none.
A failed receive is followed by a pause (`receive_backoff`), so an outage is no busy loop.
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from util.aws import Aws
from util.messages import NOT_BEFORE, RETRIES, Message, copy_number
from util.util_config import ConfigError

log = logging.getLogger("gas")

SQS_MAX_VISIBILITY = 43200  # 12 h, counted from the receive
SQS_MAX_DELAY = 900  # 15 min: the longest a message is delayed when sent
SQS_MAX_ATTRIBUTES = 10  # message attributes of one message
SQS_BATCH = 10  # entries of one batch request
RECEIVE_BACKOFF_FIRST, RECEIVE_BACKOFF_MAX = 1.0, 60.0  # pause after failed receives


def receive_backoff(failures: int, rng: random.Random) -> float:
    """The pause after `failures` receives in a row failed: RECEIVE_BACKOFF_FIRST doubled per
    failure up to RECEIVE_BACKOFF_MAX, its second half random (so a fleet does not return
    to a recovering SQS in step)."""
    ceiling = min(RECEIVE_BACKOFF_MAX, RECEIVE_BACKOFF_FIRST * 2 ** min(failures - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Queue:
    """One queue (by name or URL), its visibility timeout, and its dead-letter queue's URL
    (`dead_letter`: it must have one). `setting` names where the queue came from: a queue
    that does not exist is a ConfigError naming it."""

    def __init__(
        self, aws: Aws, name_or_url: str, who: str, dead_letter: bool = True, setting: str = ""
    ):
        self.who = who  # for the log lines
        self.sqs = aws.client("sqs")
        named = f"{setting or 'queue'} = {name_or_url!r}"
        try:
            self.url = aws.queue_url(name_or_url)
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
            )["Attributes"]
        except self.sqs.exceptions.QueueDoesNotExist:
            region = self.sqs.meta.region_name
            raise ConfigError(f"{named}: no such queue in {region}") from None
        self.visibility_timeout = int(attributes["VisibilityTimeout"])
        self.dead_letter_url = (
            self._dead_letter_url(named, attributes.get("RedrivePolicy")) if dead_letter else ""
        )

    def _dead_letter_url(self, named: str, redrive_policy: str | None) -> str:
        if not redrive_policy:
            raise ConfigError(f"{named}: the queue has no RedrivePolicy (dead-letter queue)")
        arn = json.loads(redrive_policy)["deadLetterTargetArn"]
        _, _, _, _, account, name = arn.split(":", 5)
        try:
            answer = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        except self.sqs.exceptions.QueueDoesNotExist:
            message = f"{named}: its dead-letter queue {name} (RedrivePolicy) does not exist"
            raise ConfigError(message) from None
        return answer["QueueUrl"]

    def receive(self, count: int, wait_seconds: int) -> list[Message]:
        """Up to `count` messages, long-polling `wait_seconds`."""
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        now = time.monotonic()
        messages = []
        for m in response.get("Messages", []):
            attributes = m.get("MessageAttributes", {})
            system = m.get("Attributes", {})
            retries = copy_number(m["MessageId"], attributes, RETRIES)
            messages.append(
                Message(
                    message_id=m["MessageId"],
                    receipt_handle=m["ReceiptHandle"],
                    body=m["Body"],
                    receive_count=int(system.get("ApproximateReceiveCount", 1)),
                    attributes=attributes,
                    received_at=now,
                    visible_until=now + self.visibility_timeout,
                    sent_at=int(system.get("SentTimestamp", time.time() * 1000)) / 1000,
                    retries=0 if retries is None else int(retries),
                    not_before=copy_number(m["MessageId"], attributes, NOT_BEFORE),
                )
            )
        return messages

    def delete(self, messages: list[Message]) -> None:
        """Delete the messages, ten to a request; one that fails is logged: it only comes back."""
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(chunk)
                    ],
                )
            except (BotoCoreError, ClientError) as exc:
                log.error(
                    "%s: delete failed, %d message(s) will be redelivered: %s",
                    self.who,
                    len(chunk),
                    exc,
                )
                continue
            for failure in response.get("Failed", []):
                log.error(
                    "%s: delete of %s failed: %s",
                    self.who,
                    chunk[int(failure["Id"])].message_id,
                    failure.get("Message"),
                )

    def change_visibility(self, messages: list[Message], seconds: int) -> None:
        """Hide the messages `seconds` from now (0: visible at once); sets `visible_until`."""
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            response = self.sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                    for i, m in enumerate(chunk)
                ],
            )
            now = time.monotonic()
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            for i, message in enumerate(chunk):
                if i in failed:
                    log.warning("%s: visibility change of %s failed", self.who, message.message_id)
                else:
                    message.visible_until = now + seconds

    def send(self, body: str, attributes: dict[str, Any], delay: int) -> None:
        """Send a message (a copy of one received) with `delay` seconds of SQS's delay."""
        self.sqs.send_message(
            QueueUrl=self.url,
            MessageBody=body,
            MessageAttributes=attributes,
            DelaySeconds=min(delay, SQS_MAX_DELAY),
        )

    def dead_letter(self, message: Message, attributes: dict[str, Any]) -> None:
        """Send the message to the dead-letter queue with `attributes` (its reason)."""
        self.sqs.send_message(
            QueueUrl=self.dead_letter_url, MessageBody=message.body, MessageAttributes=attributes
        )


def capped(message: Message, seconds: int) -> int:
    """SQS refuses a visibility that reaches past 12 h after the receive."""
    left = SQS_MAX_VISIBILITY - int(time.monotonic() - message.received_at) - 1
    return max(0, min(seconds, left))
