"""The AWS resources GAS runs on, written once: the local stack creates them
(util/local/stack.py), the CloudFormation template declares them (deploy/cloudformation) and
the doctor checks a deployment against them (util/doctor).

Functions take the ARNs they place as arguments, so that the template can pass its own
intrinsic functions (``{"Fn::GetAtt": ...}``) where the local stack passes strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from util.helpers import USER_INDEX
from util.util_config import UTILITY_DIR, Config

# The dead-letter queue of queue Q is Q-dlq; the IAM policies grant sending to it.
DEAD_LETTER_SUFFIX = "-dlq"
# How many failed receives send a message to its dead-letter queue, as an operator would set.
MAX_RECEIVE_COUNT = 5
# Sane bounds for the doctor: 1 dead-letters a message at the first crash of a worker, and
# far more keeps a message that always fails going round for hours.
MAX_RECEIVE_COUNT_RANGE = (3, 20)
QUEUE_VISIBILITY_SECONDS = 60
# A dead letter waits for an operator: SQS's longest retention, 14 days.
DEAD_LETTER_RETENTION_SECONDS = 1209600
# The one event of the archive bucket that thaw acts on (backend s3).
RESTORE_COMPLETED = "s3:ObjectRestore:Completed"
# A worker killed mid-upload leaves an unfinished multipart upload (never a partial object);
# this rule of the results bucket lets S3 remove it.
ABORT_INCOMPLETE_UPLOADS_RULE = "abort-incomplete-uploads"
ABORT_INCOMPLETE_UPLOAD_DAYS = 1
# Who publishes retrieval notices on the thaw topic, per archive back end.
THAW_PUBLISHERS = {"vault": "glacier.amazonaws.com", "s3": "s3.amazonaws.com"}
SNS_SERVICE = "sns.amazonaws.com"


def utility_config_files() -> list[str]:
    """Every utility's .ini: the stack (and the doctor) serve all of them at once."""
    return sorted(str(p) for p in UTILITY_DIR.glob("*/*_config.ini"))


def topics(config: Config) -> list[str]:
    gas = config.gas
    return [gas.job_requests_topic, gas.job_results_topic, gas.thaw_topic]


def subscriptions(config: Config) -> Iterator[tuple[str, str]]:
    """(topic, queue) pairs: the queues fed through SNS (envelopes, not raw delivery)."""
    yield config.gas.job_requests_topic, config.gas.job_requests_queue
    yield config.gas.job_results_topic, config.notify.queue
    yield config.gas.thaw_topic, config.thaw.queue


def worker_queues(config: Config) -> list[str]:
    """The queues workers consume: the annotator fleet's and each utility's."""
    return [
        config.gas.job_requests_queue,
        config.archive.queue,
        config.restore.queue,
        config.thaw.queue,
        config.notify.queue,
    ]


def tables(config: Config) -> list[dict[str, Any]]:
    """CreateTable's arguments of each table (CloudFormation's properties are the same)."""
    return [
        {
            "TableName": config.gas.annotations_table,
            "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": "job_id", "AttributeType": "S"},
                {"AttributeName": "user_id", "AttributeType": "S"},
                {"AttributeName": "submit_time", "AttributeType": "N"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": USER_INDEX,
                    "KeySchema": [
                        {"AttributeName": "user_id", "KeyType": "HASH"},
                        {"AttributeName": "submit_time", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        {
            "TableName": config.gas.users_table,
            "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "user_id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    ]


def queue_policy(queue_arn: Any, topic_arn: Any) -> dict[str, Any]:
    """A queue's access policy: its topic may deliver to it (SNS needs this; nothing says
    so when it is missing: the messages never arrive)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TopicDelivers",
                "Effect": "Allow",
                "Principal": {"Service": SNS_SERVICE},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


def thaw_topic_policy(
    backend: str, topic_arn: Any, archive_bucket_arn: Any, account: Any
) -> dict[str, Any]:
    """The thaw topic's access policy: Glacier (vault) or the archive bucket (s3) may publish."""
    statement: dict[str, Any] = {
        "Sid": "RetrievalNotices",
        "Effect": "Allow",
        "Principal": {"Service": THAW_PUBLISHERS[backend]},
        "Action": "sns:Publish",
        "Resource": topic_arn,
    }
    if backend == "s3":
        statement["Condition"] = {
            "ArnLike": {"aws:SourceArn": archive_bucket_arn},
            "StringEquals": {"aws:SourceAccount": account},
        }
    return {"Version": "2012-10-17", "Statement": [statement]}
