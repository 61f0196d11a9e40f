"""Every AWS resource the configuration names, created in moto (in process or as a server)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from util.helpers import FREE, PREMIUM, USER_INDEX, Aws
from util.util_config import UTILITY_DIR, Config

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION}
# How many failed receives send a message to its dead-letter queue, as an operator would set.
MAX_RECEIVE_COUNT = 5
QUEUE_VISIBILITY_SECONDS = 60
# The one event of the archive bucket that thaw acts on (backend s3).
RESTORE_COMPLETED = "s3:ObjectRestore:Completed"


@dataclass(frozen=True)
class SampleUser:
    user_id: str
    name: str
    email: str
    role: str


SAMPLE_USERS = (
    SampleUser("u-alice", "Alice Free", "alice@example.com", FREE),
    SampleUser("u-bob", "Bob Premium", "bob@example.com", PREMIUM),
    SampleUser("u-carol", "Carol Free", "carol@example.com", FREE),
)


def utility_config_files() -> list[str]:
    """Every utility's .ini: the stack serves all of them at once."""
    return sorted(str(p) for p in UTILITY_DIR.glob("*/*_config.ini"))


def topics(config: Config) -> list[str]:
    gas = config.gas
    return [gas.job_requests_topic, gas.job_results_topic, gas.thaw_topic]


def subscriptions(config: Config) -> Iterator[tuple[str, str]]:
    """(topic, queue) pairs: the queues fed through SNS (docs/design.md)."""
    yield config.gas.job_requests_topic, config.gas.job_requests_queue
    yield config.gas.job_results_topic, config.notify.queue
    yield config.gas.thaw_topic, config.thaw.queue


def worker_queues(config: Config) -> list[str]:
    """The queues workers consume: the annotator fleet's and each utility's."""
    return [config.gas.job_requests_queue, config.archive.queue, config.restore.queue,
            config.thaw.queue, config.notify.queue]


def create_resources(aws: Aws, config: Config) -> None:
    """Create what the config names; each call is safe to repeat."""
    gas = config.gas
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(
        TableName=gas.annotations_table,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "submit_time", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": USER_INDEX,
            "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"},
                          {"AttributeName": "submit_time", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName=gas.users_table,
        KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for user in SAMPLE_USERS:
        dynamodb.put_item(TableName=gas.users_table, Item={
            "user_id": {"S": user.user_id}, "name": {"S": user.name},
            "email": {"S": user.email}, "role": {"S": user.role},
        })

    s3 = aws.client("s3")
    for bucket in (gas.inputs_bucket, gas.results_bucket, gas.archive_bucket):
        s3.create_bucket(Bucket=bucket)
    # A worker killed mid-upload leaves an unfinished multipart upload (never a partial
    # object); this rule, which every GAS account should have, lets S3 remove it.
    s3.put_bucket_lifecycle_configuration(Bucket=gas.results_bucket, LifecycleConfiguration={
        "Rules": [{"ID": "abort-incomplete-uploads", "Status": "Enabled",
                   "Filter": {"Prefix": ""},
                   "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
    aws.client("glacier").create_vault(vaultName=gas.vault)

    sns = aws.client("sns")
    topic_arns = {name: sns.create_topic(Name=name)["TopicArn"] for name in topics(config)}
    queue_arns = {name: create_queue(aws, name) for name in worker_queues(config)}
    for topic, queue in subscriptions(config):
        sns.subscribe(TopicArn=topic_arns[topic], Protocol="sqs", Endpoint=queue_arns[queue])
    if gas.archive_backend == "s3":
        announce_restores(aws, config, topic_arns[gas.thaw_topic])

    aws.client("ses").verify_email_identity(EmailAddress=config.notify.sender)


def announce_restores(aws: Aws, config: Config, topic_arn: str) -> None:
    """The archive bucket announces each completed restore on the thaw topic (backend s3).

    Only then: putting a notification configuration makes S3 send an ``s3:TestEvent`` to
    the topic, which the vault back end's thaw queue has no use for. It is put only when it
    differs from the bucket's, so that a repeated call sends no second test event.
    """
    s3 = aws.client("s3")
    bucket = config.gas.archive_bucket
    wanted = [{"TopicArn": topic_arn, "Events": [RESTORE_COMPLETED]}]
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    topics = [{"TopicArn": c["TopicArn"], "Events": c["Events"]}
              for c in current.get("TopicConfigurations", [])]
    if topics != wanted:
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"TopicConfigurations": wanted})


def create_queue(aws: Aws, name: str) -> str:
    """A queue with its dead-letter queue `<name>-dlq`; returns the queue's ARN."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq",
                               Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(QUEUE_VISIBILITY_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
    })["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]


def launch(port: int = 0, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start `python -m util.local serve` and return it with the exports it printed."""
    # stderr goes to a file, not a pipe: an unread pipe fills up and blocks the server.
    errors = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "util.local", "serve", "--port", str(port)],
        cwd=UTILITY_DIR.parent, env=env, stdout=subprocess.PIPE, stderr=errors, text=True,
    )
    exports: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        line = line.strip()
        if line == "ready":
            return process, exports
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            exports[name] = value
    process.wait()
    errors.seek(0)
    raise RuntimeError(f"local stack did not start: {errors.read().strip()}")
