"""The AWS resources GAS runs on, written once: the local stack creates them
(localaws/stack.py), the CloudFormation template declares them (deploy/cloudformation) and
the doctor checks a deployment against them (util/doctor).

Functions take the ARNs they place as arguments, so that the template can pass its own
intrinsic functions (``{"Fn::GetAtt": ...}``) where the local stack passes strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from util.archives import backend_class
from util.schema import JOB_ID, SUBMIT_TIME, USER_ID, USER_INDEX
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
# A worker killed mid-upload (thaw, into the results bucket) or mid-copy (archive, into the
# archive bucket) leaves an unfinished multipart upload, never a partial object, whose parts
# are billed until it is aborted: this rule of both buckets lets S3 abort it.
ABORT_INCOMPLETE_UPLOADS_RULE = "abort-incomplete-uploads"
ABORT_INCOMPLETE_UPLOAD_DAYS = 1
# In a versioned bucket a delete only adds a delete marker: the bytes stay, billed, as a
# noncurrent version. A bucket an organisation keeps versioned needs this rule, which expires
# them and then the delete markers left alone (docs/deploy.md).
NONCURRENT_VERSIONS_RULE = "expire-noncurrent-versions"
NONCURRENT_VERSION_DAYS = 1
# Who publishes retrieval notices on the thaw topic, per archive back end.
SNS_SERVICE = "sns.amazonaws.com"


def lifecycle_rule(rule_id: str) -> dict[str, Any]:
    """A lifecycle rule of the buckets, for every key, as PutBucketLifecycleConfiguration takes it."""
    actions: dict[str, dict[str, Any]] = {
        ABORT_INCOMPLETE_UPLOADS_RULE: {
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_UPLOAD_DAYS}
        },
        NONCURRENT_VERSIONS_RULE: {
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
    }
    return {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": ""}, **actions[rule_id]}


def applies_to_every_key(rule: dict[str, Any]) -> bool:
    """Whether a lifecycle rule (GetBucketLifecycleConfiguration's) is enabled for every key:
    no prefix, no tag, no object size in its filter."""
    narrowed = rule.get("Filter", {})
    narrowed = narrowed.get("And", narrowed)
    return rule.get("Status") == "Enabled" and not (
        rule.get("Prefix")
        or narrowed.get("Prefix")
        or narrowed.get("Tag")
        or narrowed.get("Tags")
        or "ObjectSizeGreaterThan" in narrowed
        or "ObjectSizeLessThan" in narrowed
    )


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


def written_buckets(config: Config) -> list[str]:
    """The buckets workers upload to, copy into and delete from: the results bucket (archive
    deletes, thaw uploads) and, with the s3 back end, the archive bucket (archive copies in,
    thaw and reconcile delete)."""
    gas = config.gas
    return [gas.results_bucket, *([gas.archive_bucket] if backend_class(config).IN_BUCKET else [])]


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
            "KeySchema": [{"AttributeName": JOB_ID, "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": JOB_ID, "AttributeType": "S"},
                {"AttributeName": USER_ID, "AttributeType": "S"},
                {"AttributeName": SUBMIT_TIME, "AttributeType": "N"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": USER_INDEX,
                    "KeySchema": [
                        {"AttributeName": USER_ID, "KeyType": "HASH"},
                        {"AttributeName": SUBMIT_TIME, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        {
            "TableName": config.gas.users_table,
            "KeySchema": [{"AttributeName": USER_ID, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": USER_ID, "AttributeType": "S"}],
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
    backend: Any, topic_arn: Any, archive_bucket_arn: Any, account: Any
) -> dict[str, Any]:
    """The thaw topic's access policy: the back end's publisher (a class of util.archives) may
    publish: Glacier, or the archive bucket."""
    statement: dict[str, Any] = {
        "Sid": "RetrievalNotices",
        "Effect": "Allow",
        "Principal": {"Service": backend.PUBLISHER},
        "Action": "sns:Publish",
        "Resource": topic_arn,
    }
    if backend.IN_BUCKET:
        statement["Condition"] = {
            "ArnLike": {"aws:SourceArn": archive_bucket_arn},
            "StringEquals": {"aws:SourceAccount": account},
        }
    return {"Version": "2012-10-17", "Statement": [statement]}
