"""The CloudWatch alarms that page, written once (`alarms`): a message in any dead-letter queue,
a worker queue's oldest message older than a threshold, the sweep finding a lost result or not
reporting for 26 h, a worker's unexpected error. The template declares them
(deploy/cloudformation), the local stack creates them, and the doctor checks that each exists,
watches its metric and notifies a topic with a confirmed subscription (`alarm_checks`;
docs/deploy.md#alarms).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deploy.iam import WORKERS
from util import metrics
from util.aws import Aws, queue_name
from util.doctor.common import TEMPLATE, Check, missing
from util.reconcile.report import LOST
from util.resources import DEAD_LETTER_SUFFIX, worker_queues
from util.util_config import Config

SQS = "AWS/SQS"
VISIBLE, OLDEST = "ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"
FIVE_MINUTES, HOUR = 300, 3600
# The sweep runs daily, up to an hour late (gas-reconcile.timer): 26 hourly periods with no
# pass are an alarm. Periods of an hour may span 7 days, shorter ones a day (PutMetricAlarm).
SWEEP_HOURS = 26


@dataclass(frozen=True)
class Alarm:
    """One alarm on one metric; `kind` and `subject` name its template resource."""

    kind: str
    subject: str
    name: str
    description: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    period: int
    periods: int
    threshold: Any  # a number, or the template's ${Parameter}
    comparison: str
    missing_data: str

    def arguments(self) -> dict[str, Any]:
        """PutMetricAlarm's arguments but the actions: AWS::CloudWatch::Alarm's properties."""
        return {
            "AlarmName": self.name,
            "AlarmDescription": self.description,
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
            "Statistic": self.statistic,
            "Period": self.period,
            "EvaluationPeriods": self.periods,
            "DatapointsToAlarm": self.periods,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": self.missing_data,
        }

    def watches(self) -> tuple[str, str, list[tuple[str, str]], str]:
        return self.namespace, self.metric, sorted(self.dimensions), self.statistic


def oldest_message_seconds(config: Config) -> int:
    """The default threshold: a handler's time limit plus a retry copy's longest wait (a copy
    is hidden until due); a message older than both is stuck, or has no worker."""
    return config.worker.handler_timeout_seconds + config.worker.retry_max_seconds


def alarms(config: Config, oldest: Any = None) -> list[Alarm]:
    """The alarms `config` implies; `oldest`: the age threshold (default above)."""
    oldest = oldest_message_seconds(config) if oldest is None else oldest
    namespace = config.metrics.namespace
    above: dict[str, Any] = {"comparison": "GreaterThanThreshold", "periods": 1}
    found: list[Alarm] = []
    for queue in map(queue_name, worker_queues(config)):
        dead = queue + DEAD_LETTER_SUFFIX
        sqs: dict[str, Any] = {
            "namespace": SQS,
            "statistic": "Maximum",
            "period": FIVE_MINUTES,
            **above,
        }
        found.append(
            Alarm(
                kind="DeadLetters",
                subject=queue,
                name=f"{dead}-not-empty",
                description=f"a message is in {dead}: read its gas_reason, fix the cause, "
                "redrive it (docs/operations.md)",
                metric=VISIBLE,
                dimensions=(("QueueName", dead),),
                threshold=0,
                missing_data="notBreaching",  # SQS stops reporting an empty, untouched queue
                **sqs,
            )
        )
        found.append(
            Alarm(
                kind="OldestMessage",
                subject=queue,
                name=f"{queue}-oldest-message",
                description=f"the oldest message of {queue} is older than {oldest} s: its "
                "workers are stopped, too few or stuck (python -m util.status)",
                metric=OLDEST,
                dimensions=(("QueueName", queue),),
                threshold=oldest,
                missing_data="notBreaching",
                **sqs,
            )
        )
    sweep: dict[str, Any] = {
        "kind": "Sweep",
        "namespace": namespace,
        "metric": metrics.finding_metric(LOST),  # every pass emits it, zero or not
        "dimensions": tuple(metrics.FINDINGS_DIMENSIONS.items()),
        "period": HOUR,
    }
    found.append(
        Alarm(
            subject="Lost",
            name=f"{namespace}-reconcile-lost-result",
            description="the reconcile sweep found a lost result (exit 3): read its report "
            "(python -m util.status)",
            statistic="Maximum",
            threshold=0,
            missing_data="ignore",  # passes are a day apart: the state stays until the next
            **sweep,
            **above,
        )
    )
    found.append(
        Alarm(
            subject="Missing",
            name=f"{namespace}-reconcile-not-reporting",
            description=f"no reconcile pass reported for {SWEEP_HOURS} h: is "
            "gas-reconcile.timer enabled, and are its EMF lines shipped to CloudWatch?",
            statistic="SampleCount",
            periods=SWEEP_HOURS,
            threshold=1,
            comparison="LessThanThreshold",
            missing_data="breaching",
            **sweep,
        )
    )
    for utility in WORKERS:
        found.append(
            Alarm(
                kind="UnexpectedErrors",
                subject=utility,
                name=f"{namespace}-{utility}-unexpected-errors",
                description=f"a {utility} handler raised (a bug; the message is retried): "
                f"journalctl -u 'gas-worker@{utility}*' -p err",
                namespace=namespace,
                metric=metrics.UNEXPECTED_ERRORS,
                dimensions=(("Utility", utility),),
                statistic="Sum",
                period=FIVE_MINUTES,
                threshold=0,
                missing_data="notBreaching",
                **above,
            )
        )
    return found


def alarm_checks(aws: Aws, config: Config) -> Iterator[Check]:
    """Each alarm exists and watches its metric, and someone confirmed the topics they notify."""
    wanted = alarms(config)
    found: dict[str, dict[str, Any]] = {}
    pages = aws.client("cloudwatch").get_paginator("describe_alarms")
    for page in pages.paginate(AlarmNames=[a.name for a in wanted]):
        found.update((a["AlarmName"], a) for a in page["MetricAlarms"])
    if not found:
        yield Check(
            False,
            f"alarms: none of the {len(wanted)} exist: nothing pages anyone",
            f"deploy {TEMPLATE} with AlarmEmail=<your address> (docs/deploy.md#alarms)",
        )
        return
    topics = sorted({t for a in found.values() for t in a.get("AlarmActions", [])})
    wrong = 0
    for alarm in wanted:
        problem = _problem(alarm, found.get(alarm.name))
        if problem is None:
            continue
        wrong += 1
        command = {**alarm.arguments(), "AlarmActions": topics[:1] or ["<SNS topic ARN>"]}
        yield Check(
            False,
            f"alarm {alarm.name}: {problem}",
            "aws cloudwatch put-metric-alarm --cli-input-json "
            + shlex.quote(json.dumps(command, separators=(",", ":"))),
        )
    if not wrong:
        yield Check(True, f"alarms: all {len(wanted)} exist and notify {', '.join(topics)}")
    for topic in topics:
        yield _topic_check(aws, topic)


def _problem(alarm: Alarm, there: dict[str, Any] | None) -> str | None:
    """What is wrong with the alarm DescribeAlarms answered for `alarm` (None: nothing)."""
    if there is None:
        return "missing"
    seen = (
        there.get("Namespace", ""),
        there.get("MetricName", ""),
        sorted((d["Name"], d["Value"]) for d in there.get("Dimensions", [])),
        there.get("Statistic", ""),
    )
    if seen != alarm.watches():
        return f"watches {seen}, not {alarm.watches()}"
    return None if there.get("AlarmActions") else "notifies no one"


def _topic_check(aws: Aws, topic: str) -> Check:
    """A topic pages someone once a subscription is confirmed: an e-mail one, once the link
    SNS sends is clicked (until then its SubscriptionArn is no ARN: PendingConfirmation)."""
    sns = aws.client("sns")
    try:
        subscriptions = [
            s
            for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic)
            for s in page["Subscriptions"]
        ]
    except ClientError as exc:
        if not missing(exc):
            raise
        return Check(False, f"alarm topic {topic}: missing", f"create it ({TEMPLATE})")
    confirmed = [s["Endpoint"] for s in subscriptions if ":" in s["SubscriptionArn"]]
    if confirmed:
        return Check(True, f"alarm topic {topic}: pages {', '.join(sorted(confirmed))}")
    pending = [s["Endpoint"] for s in subscriptions]
    return Check(
        False,
        f"alarm topic {topic}: "
        + (f"{', '.join(pending)} not confirmed" if pending else "no subscription")
        + ": nobody is paged",
        "click the link in the e-mail SNS sent"
        if pending
        else f"aws sns subscribe --topic-arn {topic} --protocol email "
        "--notification-endpoint <your address>, then click the link",
    )
