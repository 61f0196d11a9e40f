"""Removing ann_load's synthetic jobs (docs/ann_load.md#synthetic-jobs-and-cleanup): each one's
S3 objects, archive and item, in that order, so that an interrupted cleanup is simply run
again; then the objects of such jobs left without an item, and with ``--cleanup`` alone the
temporary queues of runs killed before they could remove theirs.

Only items marked ``synthetic = true`` whose job id starts with the given prefix are touched,
and objects only in the configured buckets, whatever an item says.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from util.ann_load_aws import TEMP_QUEUE_PREFIX
from util.ann_load_schedule import SYNTHETIC_JOB_PREFIX
from util.archives import backend_for
from util.aws import Aws
from util.cli import counted
from util.schema import (
    ARCHIVE_ID,
    INPUT_KEY,
    INPUTS_BUCKET,
    JOB_ID,
    LOG_KEY,
    RESULT_KEY,
    RESULTS_BUCKET,
    SYNTHETIC,
)
from util.util_config import Config

CLEANUP_THREADS = 16


class CleanupError(Exception):
    """S3 refused to delete an object; the message names it."""


def _page_of_items(aws: Aws, table: str, job_prefix: str) -> Iterator[list[dict[str, str]]]:
    """Pages of the synthetic items whose job id starts with `job_prefix` (string attributes)."""
    names = {
        "#id": JOB_ID,
        "#syn": SYNTHETIC,
        "#ib": INPUTS_BUCKET,
        "#ik": INPUT_KEY,
        "#rb": RESULTS_BUCKET,
        "#rk": RESULT_KEY,
        "#lk": LOG_KEY,
        "#ar": ARCHIVE_ID,
    }
    pages = (
        aws.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=table,
            ConsistentRead=True,
            FilterExpression="#syn = :yes AND begins_with(#id, :prefix)",
            ProjectionExpression=", ".join(n for n in names if n != "#syn"),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":yes": {"BOOL": True}, ":prefix": {"S": job_prefix}},
        )
    )
    for page in pages:
        yield [{k: v["S"] for k, v in item.items() if "S" in v} for item in page["Items"]]


def cleanup(config: Config, aws: Aws, job_prefix: str) -> dict[str, int]:
    """Remove the synthetic jobs whose id starts with `job_prefix`: their S3 objects (input,
    result, log), archive (if the archive utility got to it) and item, in that order, so an
    interrupted cleanup can be run again. Then objects of such jobs left under the prefix
    without an item."""
    gas = config.gas
    s3, dynamodb = aws.client("s3"), aws.client("dynamodb")
    archives_backend = backend_for(config, aws)
    counts = {"jobs": 0, "objects": 0, "archives": 0}
    with ThreadPoolExecutor(CLEANUP_THREADS, thread_name_prefix="cleanup") as pool:
        for items in _page_of_items(aws, gas.annotations_table, job_prefix):
            keys: dict[str, list[str]] = {gas.inputs_bucket: [], gas.results_bucket: []}
            for item in items:
                for bucket, key in (
                    (INPUTS_BUCKET, INPUT_KEY),
                    (RESULTS_BUCKET, RESULT_KEY),
                    (RESULTS_BUCKET, LOG_KEY),
                ):
                    # Never outside the configured buckets, whatever an item says.
                    if item.get(bucket) in keys and item.get(key):
                        keys[item[bucket]].append(item[key])
            for bucket, bucket_keys in keys.items():
                # A shared input is named by many items: once per request.
                counts["objects"] += _delete_objects(s3, bucket, list(dict.fromkeys(bucket_keys)))
            archives = [item[ARCHIVE_ID] for item in items if ARCHIVE_ID in item]
            list(pool.map(archives_backend.delete, archives))
            counts["archives"] += len(archives)
            list(
                pool.map(
                    lambda i: dynamodb.delete_item(
                        TableName=gas.annotations_table, Key={JOB_ID: {"S": i[JOB_ID]}}
                    ),
                    items,
                )
            )
            counts["jobs"] += len(items)
    for bucket in (gas.inputs_bucket, gas.results_bucket):
        orphans = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{config.ann_load.prefix}/"
            )
            for obj in page.get("Contents", [])
            if obj["Key"].rpartition("/")[2].startswith(job_prefix)
        ]
        counts["objects"] += _delete_objects(s3, bucket, orphans)
    return counts


def say_removed(counts: dict[str, int]) -> None:
    """The cleanup's one line: what it removed, in words."""
    say_removed(counts)


def _delete_objects(s3: Any, bucket: str, keys: list[str]) -> int:
    for start in range(0, len(keys), 1000):
        response = s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True},
        )
        if response.get("Errors"):
            error = response["Errors"][0]
            raise CleanupError(f"cannot delete s3://{bucket}/{error['Key']}: {error['Message']}")
    return len(keys)


def remove_leftover_queues(aws: Aws, results_topic_arn: str) -> int:
    """Temporary queues (and their subscriptions) of runs killed before they could remove them."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    urls = [
        url
        for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=TEMP_QUEUE_PREFIX)
        for url in page.get("QueueUrls", [])
    ]
    if not urls:
        return 0
    arns = {
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]: url
        for url in urls
    }
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(
        TopicArn=results_topic_arn
    ):
        for subscription in page["Subscriptions"]:
            if subscription["Endpoint"] in arns:
                sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    for url in urls:
        sqs.delete_queue(QueueUrl=url)
    return len(urls)


def clean_only(config: Config, aws: Aws) -> int:
    """``--cleanup`` alone: every synthetic job of any run, and leftover temporary queues."""
    endpoint = aws.client("sns").meta.endpoint_url
    print(
        f"ann_load: removing every synthetic job from account {aws.account_id()} at {endpoint}",
        flush=True,
    )
    counts = cleanup(config, aws, SYNTHETIC_JOB_PREFIX)
    counts["queues"] = remove_leftover_queues(aws, aws.topic_arn(config.gas.job_results_topic))
    backlog = aws.client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_url(config.gas.job_requests_queue),
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]["ApproximateNumberOfMessages"]
    print(f"ann_load: cleanup: removed {counted(counts)}")
    if int(backlog):
        print(
            f"ann_load: {backlog} job request(s) still queued: their jobs are gone, so the "
            "annotator will refuse them",
            file=sys.stderr,
        )
    return 0
