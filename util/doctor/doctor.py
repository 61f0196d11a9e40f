"""``python -m util.doctor [--config FILE]... [--role UTILITY=ARN]...``: check a deployment.

Reads the configuration as the workers do (every utility's .ini, each --config, GAS_*
variables), looks at the account the standard AWS chain reaches, and prints one line per
check: ``✔`` what is right, ``✘`` what is wrong with the fix, ``-`` what it could not check.
Exit 0 when nothing is ``✘``, 1 otherwise, 2 on a bad setting.

`describe` reads what the utilities depend on into plain data; the checks judge that data
against util/resources.py, and a test compares it with the CloudFormation template's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from email.utils import parseaddr
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploy.iam import UTILITIES, Arns
from util.archives import backend_class, backend_for
from util.doctor.buckets import bucket_checks, read_bucket
from util.doctor.common import TEMPLATE, UNAVAILABLE, Check, missing, probe, reason
from util.doctor.iam import Grant, allows, grants, key_checks, simulate
from util.helpers import Aws
from util.resources import (
    DEAD_LETTER_SUFFIX,
    MAX_RECEIVE_COUNT_RANGE,
    SNS_SERVICE,
    subscriptions,
    tables,
    topics,
    utility_config_files,
    worker_queues,
    written_buckets,
)
from util.util_config import Config, ConfigError, add_config_option, load

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


def table_shape(table: dict[str, Any]) -> dict[str, Any]:
    """The keys and indexes of a table (CreateTable's arguments or DescribeTable's answer)."""
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}

    def keys(schema: list[dict[str, str]]) -> list[str]:
        return [f"{k['AttributeName']} {k['KeyType']} {types[k['AttributeName']]}" for k in schema]

    return {
        "keys": keys(table["KeySchema"]),
        "indexes": {
            i["IndexName"]: {
                "keys": keys(i["KeySchema"]),
                "projection": i["Projection"]["ProjectionType"],
            }
            for i in table.get("GlobalSecondaryIndexes", [])
        },
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
    low, high = MAX_RECEIVE_COUNT_RANGE
    queues = state["queues"]
    for name in worker_queues(config):
        queue = queues.get(name)
        redrive = queue and queue["RedrivePolicy"]
        dead_letter = name.rstrip("/").rsplit("/", 1)[-1] + DEAD_LETTER_SUFFIX
        if queue is None:
            yield Check(False, f"queue {name}: missing", f"create it ({TEMPLATE})")
        elif not redrive or redrive["deadLetterQueue"] not in queues:
            yield Check(
                False,
                f"queue {name}: no dead-letter queue",
                f"create {dead_letter} and set {name}'s RedrivePolicy to "
                f"it, maxReceiveCount {low}-{high} ({TEMPLATE})",
            )
        elif redrive["deadLetterQueue"] != dead_letter:
            # The worker sends invalid messages there itself, as its IAM policy allows.
            yield Check(
                False,
                f"queue {name}: dead-letter queue {redrive['deadLetterQueue']} "
                f"is not {dead_letter}",
                f"point {name}'s RedrivePolicy at {dead_letter}, the queue the "
                "workers' IAM policies let them send to",
            )
        elif not low <= redrive["maxReceiveCount"] <= high:
            yield Check(
                False,
                f"queue {name}: maxReceiveCount {redrive['maxReceiveCount']}",
                f"set it to {low}-{high} in {name}'s RedrivePolicy",
            )
        else:
            yield Check(
                True,
                f"queue {name}: dead-letter queue {redrive['deadLetterQueue']}, "
                f"maxReceiveCount {redrive['maxReceiveCount']}",
            )
    for topic, name in subscriptions(config):
        if topic not in state["topics"]:
            yield Check(False, f"topic {topic}: missing", f"create it ({TEMPLATE})")
            continue
        arn = state["topics"][topic]
        if name not in queues:
            continue  # reported above
        if any(s[:2] == [topic, name] for s in state["subscriptions"]):
            yield Check(True, f"topic {topic} -> queue {name}: subscribed")
        else:
            yield Check(
                False,
                f"topic {topic} -> queue {name}: no subscription",
                f"aws sns subscribe --topic-arn {arn} --protocol sqs "
                f"--notification-endpoint {queues[name]['Arn']}",
            )
        if allows(queues[name]["Policy"], SNS_SERVICE, "sqs:sendmessage", arn):
            yield Check(True, f"queue {name}: its policy lets topic {topic} deliver")
        else:
            yield Check(
                False,
                f"queue {name}: its policy does not let topic {topic} deliver",
                f"allow {SNS_SERVICE} sqs:SendMessage with aws:SourceArn {arn} in its "
                f"access policy ({TEMPLATE}, QueuePolicy)",
            )
    yield from _archive_checks(aws, config, state)
    if gas.results_bucket not in state["buckets"]:
        yield Check(False, f"bucket {gas.results_bucket}: missing", f"create it ({TEMPLATE})")
    for name in written_buckets(config):
        if name in state["buckets"]:  # a missing archive bucket is reported above
            yield from bucket_checks(aws, name, state["buckets"][name])
    for wanted in tables(config):
        name, shape = wanted["TableName"], table_shape(wanted)
        found = state["tables"].get(name)
        if found == shape:
            yield Check(
                True,
                f"table {name}: keys {', '.join(shape['keys'])}"
                + "".join(
                    f"; index {i} {', '.join(v['keys'])}" for i, v in shape["indexes"].items()
                ),
            )
        else:
            yield Check(
                False,
                f"table {name}: "
                + ("missing" if found is None else f"keys or indexes differ: {found}"),
                f"create it as {TEMPLATE} does: {shape}",
            )
    yield from _ses_checks(aws, config, state["sender"])


def _archive_checks(aws: Aws, config: Config, state: dict[str, Any]) -> Iterator[Check]:
    gas, backend = config.gas, backend_class(config)
    publisher = backend.PUBLISHER
    thaw = state["topics"].get(gas.thaw_topic)
    bucket_arn = Arns.bucket(gas.archive_bucket)
    if thaw is not None:
        source = bucket_arn if backend.IN_BUCKET else "*"
        if allows(state["thaw_topic_policy"], publisher, "sns:publish", source):
            yield Check(True, f"topic {gas.thaw_topic}: {publisher} may publish")
        else:
            condition = f" with aws:SourceArn {bucket_arn}" if backend.IN_BUCKET else ""
            yield Check(
                False,
                f"topic {gas.thaw_topic}: {publisher} may not publish",
                f"allow {publisher} sns:Publish{condition} in its access policy "
                f"({TEMPLATE}, TopicPolicy)",
            )
    yield Check(*backend_for(config, aws).check_store())


def _ses_checks(aws: Aws, config: Config, identities: dict[str, str]) -> Iterator[Check]:
    sender = config.notify.sender
    verified = [i for i, status in identities.items() if status == "Success"]
    if verified:
        yield Check(True, f"SES sender {sender}: verified ({verified[0]})")
    else:
        yield Check(
            False,
            f"SES sender {sender}: not verified",
            f"aws ses verify-email-identity --email-address {sender}, then click the link",
        )
    try:
        account = probe(aws, "sesv2").get_account()
    except UNAVAILABLE as exc:
        yield Check(None, f"SES sandbox: skipped (not available: {reason(exc)})")
        return
    if account.get("ProductionAccessEnabled"):
        yield Check(True, "SES: out of the sandbox")
    else:
        yield Check(
            False,
            "SES: in the sandbox, mail only to verified addresses",
            "request production access (SES console, Account dashboard)",
        )


def role_argument(text: str) -> tuple[str, str]:
    utility, _, arn = text.partition("=")
    if utility not in UTILITIES or not arn.startswith("arn:"):
        raise argparse.ArgumentTypeError(f"UTILITY=ARN, UTILITY one of {', '.join(UTILITIES)}")
    return utility, arn


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m util.doctor", description=__doc__.split("\n")[0]
    )
    add_config_option(parser)
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
    aws = Aws(config)
    roles = dict(args.role)
    try:
        state = describe(aws, config)
        checks = [
            *check(aws, config, state),
            *simulate(aws, config, roles),
            *key_checks(aws, config, state, roles),
        ]
    except (BotoCoreError, ClientError) as exc:
        print(f"doctor: cannot look at the account: {exc}", file=sys.stderr)
        return 1
    for c in checks:
        out(c.line())
    failed = sum(c.ok is False for c in checks)
    out(f"{len(checks)} checks, {failed} to fix" if failed else f"{len(checks)} checks, all fine")
    return 1 if failed else 0
