"""Every AWS resource the configuration names, created in moto (in process or as a server)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from util.archives import backend_class
from util.aws import Aws
from util.doctor.alarms import alarms
from util.resources import (
    ABORT_INCOMPLETE_UPLOADS_RULE,
    DEAD_LETTER_RETENTION_SECONDS,
    DEAD_LETTER_SUFFIX,
    MAX_RECEIVE_COUNT,
    QUEUE_VISIBILITY_SECONDS,
    RESTORE_COMPLETED,
    lifecycle_rule,
    queue_policy,
    subscriptions,
    tables,
    thaw_topic_policy,
    topics,
    utility_config_files,
    worker_queues,
)
from util.schema import FREE, PREMIUM
from util.util_config import UTILITY_DIR, Config

__all__ = [
    "CREDENTIALS",
    "REGION",
    "SAMPLE_USERS",
    "announce_restores",
    "create_resources",
    "encrypt_by_default",
    "launch",
    "utility_config_files",
]

REGION = "us-east-1"
# What the alarms notify: SNS confirms an e-mail subscription once its link is clicked; moto
# at once, so the local stack's alarms page (nobody) as a deployed stack's do.
ALARM_TOPIC, ALARM_EMAIL = "gas-alarms", "ops@gas.example.com"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


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


def create_resources(aws: Aws, config: Config) -> None:
    """Create what the config names (util/resources.py); each call is safe to repeat.

    Beyond the template's resources: the vault (which CloudFormation cannot make), the
    archive bucket with either back end, and the sample users. The buckets encrypt by
    default with ``[local] bucket_encryption`` (AES256, SSE-S3, is what AWS applies to every
    bucket that names none)."""
    gas = config.gas
    dynamodb = aws.client("dynamodb")
    for table in tables(config):
        dynamodb.create_table(**table)
    for user in SAMPLE_USERS:
        dynamodb.put_item(
            TableName=gas.users_table,
            Item={
                "user_id": {"S": user.user_id},
                "name": {"S": user.name},
                "email": {"S": user.email},
                "role": {"S": user.role},
            },
        )

    s3 = aws.client("s3")
    for bucket in (gas.inputs_bucket, gas.results_bucket, gas.archive_bucket):
        s3.create_bucket(Bucket=bucket)
        encrypt_by_default(s3, bucket, config.local.bucket_encryption)
    for bucket in (gas.results_bucket, gas.archive_bucket):
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={"Rules": [lifecycle_rule(ABORT_INCOMPLETE_UPLOADS_RULE)]},
        )
    aws.client("glacier").create_vault(vaultName=gas.vault)

    sns = aws.client("sns")
    topic_arns = {name: sns.create_topic(Name=name)["TopicArn"] for name in topics(config)}
    queue_arns = {name: create_queue(aws, name) for name in worker_queues(config)}
    sqs = aws.client("sqs")
    for topic, queue in subscriptions(config):
        sqs.set_queue_attributes(
            QueueUrl=aws.queue_url(queue),
            Attributes={"Policy": json.dumps(queue_policy(queue_arns[queue], topic_arns[topic]))},
        )
        sns.subscribe(TopicArn=topic_arns[topic], Protocol="sqs", Endpoint=queue_arns[queue])
    thaw_topic = topic_arns[gas.thaw_topic]
    sns.set_topic_attributes(
        TopicArn=thaw_topic,
        AttributeName="Policy",
        AttributeValue=json.dumps(
            thaw_topic_policy(
                backend_class(config),
                thaw_topic,
                f"arn:aws:s3:::{gas.archive_bucket}",
                aws.account_id(),
            )
        ),
    )
    if backend_class(config).IN_BUCKET:
        announce_restores(aws, config, thaw_topic)

    aws.client("ses").verify_email_identity(EmailAddress=config.notify.sender)
    create_alarms(aws, config)


def create_alarms(aws: Aws, config: Config) -> None:
    """The alarms of util/doctor/alarms.py, notifying a topic with an e-mail subscription."""
    sns = aws.client("sns")
    topic = sns.create_topic(Name=ALARM_TOPIC)["TopicArn"]
    subscribed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    if not any(s["Endpoint"] == ALARM_EMAIL for s in subscribed):
        sns.subscribe(TopicArn=topic, Protocol="email", Endpoint=ALARM_EMAIL)
    for alarm in alarms(config):
        aws.client("cloudwatch").put_metric_alarm(**alarm.arguments(), AlarmActions=[topic])


def encrypt_by_default(s3: Any, bucket: str, algorithm: str) -> None:
    """PutBucketEncryption: `bucket` encrypts what is written to it with `algorithm` (AES256,
    aws:kms, aws:kms:dsse) unless a request asks otherwise."""
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm}}]
        },
    )


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
    topics = [
        {"TopicArn": c["TopicArn"], "Events": c["Events"]}
        for c in current.get("TopicConfigurations", [])
    ]
    if topics != wanted:
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"TopicConfigurations": wanted}
        )


def create_queue(aws: Aws, name: str) -> str:
    """A queue with its dead-letter queue; returns the queue's ARN."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=name + DEAD_LETTER_SUFFIX,
        Attributes={"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_SECONDS)},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(QUEUE_VISIBILITY_SECONDS),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


def launch(
    port: int = 0, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start `python -m util.local serve` and return it with the exports it printed."""
    # stderr goes to a file, not a pipe: an unread pipe fills up and blocks the server.
    errors = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "localaws", "serve", "--port", str(port)],
        cwd=UTILITY_DIR.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    exports: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        line = line.strip()
        if line == "ready":
            return process, exports
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            exports[name] = value
    process.wait()
    errors.seek(0)
    raise RuntimeError(f"local stack did not start: {errors.read().strip()}")
