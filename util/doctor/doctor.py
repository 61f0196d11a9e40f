"""``python -m util.doctor [--role UTILITY=ARN]... [--format text|json] [option]...``: check a
deployment.

Reads the configuration as the workers do (every utility's .ini, each --config, GAS_*
variables), looks at the account the standard AWS chain reaches, and prints one line per
check: ``✔`` what is right, ``✘`` what is wrong with the fix, ``-`` what it could not check
(``--format json``: an object per check). Exit 0 when nothing is ``✘``, 1 otherwise, 2 on a
bad setting.

`describe` reads what the utilities depend on into plain data; the checks (services.py,
buckets.py, iam.py beside this file) judge that data against util/resources.py, and a test
compares it with the CloudFormation template's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploy.iam import UTILITIES
from util import cli
from util.archives import backend_class
from util.aws import Aws
from util.doctor.alarms import alarm_checks
from util.doctor.buckets import bucket_checks, read_bucket
from util.doctor.common import TEMPLATE, Check, missing
from util.doctor.iam import Grant, grants, key_checks, simulate
from util.doctor.services import (
    archive_checks,
    queue_checks,
    ses_checks,
    table_checks,
    table_shape,
    topic_checks,
)
from util.process import configure_logging
from util.resources import (
    tables,
    topics,
    utility_config_files,
    worker_queues,
    written_buckets,
)
from util.util_config import Config, ConfigError, load

# The AWS defaults of what a template leaves out, so that both sides read alike.
SQS_DEFAULTS = {"VisibilityTimeout": 30, "MessageRetentionPeriod": 345600}


def describe(aws: Aws, config: Config) -> dict[str, Any]:
    """What the deployment has of what the utilities depend on, as plain data."""
    gas = config.gas
    sns, s3 = aws.client("sns"), aws.client("s3")
    queues: dict[str, Any] = {}
    for name in worker_queues(config):
        _read_queue(aws, name, queues)
    for queue in list(queues.values()):  # then their dead-letter queues, by whatever name
        if queue["RedrivePolicy"]:
            _read_queue(aws, queue["RedrivePolicy"]["deadLetterQueue"], queues)

    topic_arns: dict[str, str] = {}
    delivered = []
    thaw_policy: list[Grant] = []
    for name in topics(config):
        arn = aws.topic_arn(name)
        try:
            attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        except ClientError as exc:
            if not missing(exc):
                raise
            continue
        topic_arns[name] = arn
        if name == gas.thaw_topic:
            thaw_policy = grants(attributes.get("Policy"))
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn):
            for subscription in page["Subscriptions"]:
                if subscription["Protocol"] != "sqs" or ":" not in subscription["SubscriptionArn"]:
                    continue  # pending confirmation: delivers nothing
                raw = (
                    sns.get_subscription_attributes(
                        SubscriptionArn=subscription["SubscriptionArn"]
                    )["Attributes"].get("RawMessageDelivery", "false")
                    == "true"
                )
                queue = next(
                    (q for q, v in queues.items() if v["Arn"] == subscription["Endpoint"]),
                    subscription["Endpoint"],
                )
                delivered.append([name, queue, raw])

    buckets: dict[str, Any] = {}
    archive = [gas.archive_bucket] if backend_class(config).IN_BUCKET else []
    for bucket in [gas.inputs_bucket, gas.results_bucket, *archive]:
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if missing(exc):
                continue
            raise
        buckets[bucket] = read_bucket(aws, bucket)

    return {
        "queues": queues,
        "topics": topic_arns,
        "thaw_topic_policy": thaw_policy,
        "subscriptions": sorted(delivered),
        "buckets": buckets,
        "tables": _tables(aws, config),
        "sender": _sender(aws, config.notify.sender),
    }


def _read_queue(aws: Aws, name: str, queues: dict[str, Any]) -> None:
    """Add queue `name` (or URL) to `queues`, if it exists."""
    try:
        attributes = aws.client("sqs").get_queue_attributes(
            QueueUrl=aws.queue_url(name), AttributeNames=["All"]
        )["Attributes"]
    except ClientError as exc:
        if missing(exc):
            return
        raise
    redrive = json.loads(attributes.get("RedrivePolicy") or "null")
    queues[name] = {
        **{k: int(attributes.get(k, v)) for k, v in SQS_DEFAULTS.items()},
        "Arn": attributes["QueueArn"],
        "RedrivePolicy": redrive
        and {
            "deadLetterQueue": redrive["deadLetterTargetArn"].rsplit(":", 1)[1],
            "maxReceiveCount": int(redrive["maxReceiveCount"]),
        },
        "Policy": grants(attributes.get("Policy")),
    }


def _tables(aws: Aws, config: Config) -> dict[str, Any]:
    found = {}
    for wanted in tables(config):
        try:
            table = aws.client("dynamodb").describe_table(TableName=wanted["TableName"])["Table"]
        except ClientError as exc:
            if missing(exc):
                continue
            raise
        found[wanted["TableName"]] = table_shape(table)
    return found


def _sender(aws: Aws, sender: str) -> dict[str, Any]:
    """The sender's identities SES knows (the address, its domain) and their status."""
    address = parseaddr(sender)[1]
    identities = [address, address.rpartition("@")[2]]
    found = aws.client("ses").get_identity_verification_attributes(Identities=identities)[
        "VerificationAttributes"
    ]
    return {i: found[i]["VerificationStatus"] for i in identities if i in found}


def check(aws: Aws, config: Config, state: dict[str, Any]) -> Iterator[Check]:
    """Judge `state` (from `describe`) against what the configuration needs."""
    gas = config.gas
    yield from queue_checks(config, state["queues"])
    yield from topic_checks(config, state)
    yield from archive_checks(aws, config, state)
    if gas.results_bucket not in state["buckets"]:
        yield Check(False, f"bucket {gas.results_bucket}: missing", f"create it ({TEMPLATE})")
    for name in written_buckets(config):
        if name in state["buckets"]:  # a missing archive bucket is reported above
            yield from bucket_checks(aws, name, state["buckets"][name])
    yield from table_checks(config, state["tables"])
    yield from ses_checks(aws, config, state["sender"])


def role_argument(text: str) -> tuple[str, str]:
    utility, _, arn = text.partition("=")
    if utility not in UTILITIES or not arn.startswith("arn:"):
        raise argparse.ArgumentTypeError(f"UTILITY=ARN, UTILITY one of {', '.join(UTILITIES)}")
    return utility, arn


def as_json(c: Check) -> dict[str, Any]:
    """One check as an object: what, its status (ok, wrong, unchecked) and the fix (or null)."""
    status = "unchecked" if c.ok is None else "ok" if c.ok else "wrong"
    return {"check": c.what, "status": status, "fix": c.fix or None}


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = cli.parser(
        "doctor",
        "check a deployment",
        results="an object per check: its check, status (ok, wrong, unchecked) and fix",
    )
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        type=role_argument,
        metavar="UTILITY=ARN",
        help="check this role's policy, and its use of the buckets' KMS keys (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        config = load(None, [*utility_config_files(), *args.config])
    except ConfigError as exc:
        print(f"doctor: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(*cli.log_settings(args, config))
    aws = Aws(config)
    roles = dict(args.role)
    try:
        state = describe(aws, config)
        checks = [
            *check(aws, config, state),
            *simulate(aws, config, roles),
            *key_checks(aws, config, state, roles),
            *alarm_checks(aws, config),
        ]
    except (BotoCoreError, ClientError) as exc:
        print(f"doctor: cannot look at the account: {exc}", file=sys.stderr)
        return 1
    failed = sum(c.ok is False for c in checks)
    if args.format == "json":
        out(json.dumps({"checks": [as_json(c) for c in checks], "to_fix": failed}, indent=1))
        return 1 if failed else 0
    for c in checks:
        out(c.line())
    out(f"{len(checks)} checks, {failed} to fix" if failed else f"{len(checks)} checks, all fine")
    return 1 if failed else 0
