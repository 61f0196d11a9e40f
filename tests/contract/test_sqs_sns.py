"""SQS's limits the worker runtime works within (visibility, delay, redrive), and SNS's envelope."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_for
from tests.contract.account import Account, error_code, local_gap, unique

TWELVE_HOURS = 43200
FIFTEEN_MINUTES = 900


def invalid_parameter(exc: ClientError) -> bool:
    """SQS's refusal of a value out of range (its JSON protocol may add "Exception")."""
    return error_code(exc).removesuffix("Exception") == "InvalidParameterValue"


def received(account: Account, queue: str, body: str, **options: int) -> dict:
    """`body`'s message, received from `queue` (long polls until it comes)."""

    def receive() -> dict | None:
        messages = (
            account.client("sqs")
            .receive_message(
                QueueUrl=queue,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=2,
                MessageSystemAttributeNames=["All"],
                **options,
            )
            .get("Messages", [])
        )
        return next((m for m in messages if m["Body"] == body), None)

    return wait_for(receive, timeout=60, what=f"message {body}")


def test_a_visibility_timeout_is_at_most_twelve_hours(account: Account) -> None:
    # Given a message just received
    sqs, queue, body = account.client("sqs", attempts=1), account.queue(), unique()
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    handle = received(account, queue, body)["ReceiptHandle"]
    # When its visibility timeout is set to 12 hours less a minute, then to 12 hours and a second
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=handle, VisibilityTimeout=TWELVE_HOURS - 60
    )
    with pytest.raises(ClientError) as refused:
        sqs.change_message_visibility(
            QueueUrl=queue, ReceiptHandle=handle, VisibilityTimeout=TWELVE_HOURS + 1
        )
    # Then the first is accepted and the second refused
    assert invalid_parameter(refused.value)


@local_gap("moto counts the 12 hours from the message's send, not from its receive")
def test_the_twelve_hours_count_from_the_receive_not_the_send(account: Account) -> None:
    # Given a message received 2 s after it was sent (delayed that long)
    sqs, queue, body = account.client("sqs", attempts=1), account.queue(), unique()
    sqs.send_message(QueueUrl=queue, MessageBody=body, DelaySeconds=2)
    handle = received(account, queue, body)["ReceiptHandle"]
    # When its visibility timeout is set to 12 hours less a second, at once
    # Then SQS accepts it: the limit is 12 hours from the receive
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=handle, VisibilityTimeout=TWELVE_HOURS - 1
    )


def test_a_message_may_be_delayed_fifteen_minutes_at_most(account: Account) -> None:
    # Given a queue
    sqs, queue = account.client("sqs", attempts=1), account.queue()
    # When messages are sent delayed 15 minutes, and 15 minutes and a second
    sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=FIFTEEN_MINUTES)
    with pytest.raises(ClientError) as refused:
        sqs.send_message(QueueUrl=queue, MessageBody="too late", DelaySeconds=FIFTEEN_MINUTES + 1)
    # Then the first is accepted and kept out of sight, the second refused
    assert invalid_parameter(refused.value)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)


def test_a_message_received_max_receive_count_times_moves_to_the_dead_letter_queue(
    account: Account,
) -> None:
    # Given the archive queue as deployed (maxReceiveCount 5, dead-letter queue <queue>-dlq)
    sqs, name = account.client("sqs"), account.config.archive.queue
    queue, dead = account.queue_url(name), account.queue_url(f"{name}-dlq")
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    assert redrive["deadLetterTargetArn"] == account.queue_arn(dead)
    limit = int(redrive["maxReceiveCount"])
    body, retries = unique(), {"gas_retries": {"DataType": "Number", "StringValue": "3"}}
    sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes=retries)
    # When it is received that many times, never deleted
    counts = [
        int(
            received(account, queue, body, VisibilityTimeout=0)["Attributes"][
                "ApproximateReceiveCount"
            ]
        )
        for _ in range(limit)
    ]
    # Then each receive counted one more, and the next receive moves it to the dead-letter
    # queue, with its message attributes (a worker's retries count goes with it)
    assert counts == list(range(1, limit + 1))

    def moved() -> dict | None:
        sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1, VisibilityTimeout=0)
        messages = sqs.receive_message(
            QueueUrl=dead, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        mine = next((m for m in messages.get("Messages", []) if m["Body"] == body), None)
        if mine:
            sqs.delete_message(QueueUrl=dead, ReceiptHandle=mine["ReceiptHandle"])
        return mine

    dead_letter = wait_for(moved, timeout=60, what="the message in the dead-letter queue")
    assert dead_letter["MessageAttributes"] == retries


def test_sns_delivers_to_a_subscribed_queue_in_its_envelope(account: Account) -> None:
    # Given the job-results topic and the notify queue subscribed to it (not raw delivery)
    gas = account.config.gas
    topic = account.topic_arn(gas.job_results_topic)
    queue = account.queue_url(account.config.notify.queue)
    message = json.dumps({"job_id": unique("job"), "job_status": "COMPLETED"})
    # When a job result is published with a subject
    published = account.client("sns").publish(TopicArn=topic, Message=message, Subject="result")
    # Then the queue gets it wrapped: the message as a string, with the topic and its id
    envelope = wait_for(
        lambda: next(
            (
                json.loads(m["Body"])
                for m in account.client("sqs")
                .receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)
                .get("Messages", [])
                if json.loads(m["Body"]).get("Message") == message
            ),
            None,
        ),
        timeout=60,
        what="the notification",
    )
    assert envelope["Type"] == "Notification"
    assert envelope["TopicArn"] == topic
    assert envelope["MessageId"] == published["MessageId"]
    assert envelope["Subject"] == "result"
    assert {"Timestamp", "Signature", "SigningCertURL"} <= envelope.keys()


def test_a_queue_that_does_not_exist_is_queue_does_not_exist(account: Account) -> None:
    # A worker's queue setting that names no queue: the worker says so and stops (util/sqs.py)
    sqs = account.client("sqs", attempts=1)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=unique())


@local_gap("moto confirms an e-mail subscription at once")
def test_an_email_subscription_is_pending_until_confirmed(account: Account) -> None:
    # The alarms' topic pages nobody until its e-mail link is clicked (util/doctor/alarms.py)
    sns = account.client("sns")
    topic = str(sns.create_topic(Name=unique())["TopicArn"])
    account.cleanups.append(lambda: sns.delete_topic(TopicArn=topic))
    answer = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="gas-contract@example.com")
    assert answer["SubscriptionArn"] == "pending confirmation"
