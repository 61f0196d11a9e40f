"""The doctor's checks of the queues (their dead-letter queues), the topics (subscribed
queues, access policies, the archive back end's publisher), the tables (keys and indexes) and
the SES sender, each failure with its fix (docs/deploy.md). The archive store's own check is
the back end's (util/archives).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deploy.iam import Arns
from util.archives import backend_class, backend_for
from util.aws import Aws, queue_name
from util.doctor.common import TEMPLATE, UNAVAILABLE, Check, probe, reason
from util.doctor.iam import allows
from util.resources import (
    DEAD_LETTER_SUFFIX,
    MAX_RECEIVE_COUNT_RANGE,
    SNS_SERVICE,
    subscriptions,
    tables,
    worker_queues,
)
from util.util_config import Config


def queue_checks(config: Config, queues: dict[str, Any]) -> Iterator[Check]:
    """Each worker's queue has a dead-letter queue, the one the workers' IAM policies let
    them send to, and a maxReceiveCount in MAX_RECEIVE_COUNT_RANGE."""
    low, high = MAX_RECEIVE_COUNT_RANGE
    for name in worker_queues(config):
        queue = queues.get(name)
        redrive = queue and queue["RedrivePolicy"]
        dead_letter = queue_name(name) + DEAD_LETTER_SUFFIX
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


def topic_checks(config: Config, state: dict[str, Any]) -> Iterator[Check]:
    """Each topic delivers to its queues: subscribed, and let by the queue's policy."""
    queues = state["queues"]
    for topic, name in subscriptions(config):
        if topic not in state["topics"]:
            yield Check(False, f"topic {topic}: missing", f"create it ({TEMPLATE})")
            continue
        arn = state["topics"][topic]
        if name not in queues:
            continue  # reported by queue_checks
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


def archive_checks(aws: Aws, config: Config, state: dict[str, Any]) -> Iterator[Check]:
    """The thaw topic lets the back end's publisher publish; the back end checks its store."""
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


def table_checks(config: Config, found_tables: dict[str, Any]) -> Iterator[Check]:
    """Each table has the keys and indexes the utilities query."""
    for wanted in tables(config):
        name, shape = wanted["TableName"], table_shape(wanted)
        found = found_tables.get(name)
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


def ses_checks(aws: Aws, config: Config, identities: dict[str, str]) -> Iterator[Check]:
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
