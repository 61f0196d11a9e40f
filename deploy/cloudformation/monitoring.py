"""The alarms of util/doctor/alarms.py in the template, made when ``AlarmEmail`` is given: each
notifies one topic that e-mails that address (once its link is clicked), each SQS one watches
a queue the template makes; and a dashboard of the same metrics (docs/deploy.md#alarms).
"""

from __future__ import annotations

import json
from typing import Any

from deploy.cloudformation.common import ADDRESS, base, camel, sub
from util.aws import queue_name
from util.doctor.alarms import SQS, Alarm, alarms, oldest_message_seconds
from util.resources import DEAD_LETTER_SUFFIX, worker_queues
from util.util_config import Config

ALARMS = "Alarms"  # the condition of every resource here
EMAIL, OLDEST, TOPIC = "AlarmEmail", "AlarmOldestMessageSeconds", "AlarmTopic"
CONDITIONS = {ALARMS: {"Fn::Not": [{"Fn::Equals": [{"Ref": EMAIL}, ""]}]}}


def parameters(config: Config) -> dict[str, Any]:
    return {
        EMAIL: {
            "Type": "String",
            "Default": "",
            "AllowedPattern": f"^({ADDRESS.strip('^$')})?$",
            "Description": "address the alarms e-mail (SNS sends it a link to click first); "
            "empty: no alarms",
        },
        OLDEST: {
            "Type": "Number",
            "Default": str(oldest_message_seconds(config)),
            "MinValue": 60,
            "Description": "alarm when a worker queue's oldest message is older (seconds; "
            "the default: the handler time limit plus the longest retry wait)",
        },
    }


def logical_id(alarm: Alarm) -> str:
    """``AlarmDeadLettersArchive``, ``AlarmSweepLost``, ``AlarmUnexpectedErrorsThaw``."""
    subject = alarm.subject
    return f"Alarm{alarm.kind}" + (
        base(subject, "Queue") if subject.startswith("${") else camel(subject)
    )


def resources(config: Config) -> dict[str, Any]:
    # A QueueName dimension names the queue resource itself: the alarm watches what is made.
    queues = {}
    for queue in worker_queues(config):
        stem = base(queue, "Queue")
        queues[queue_name(queue)] = f"Queue{stem}"
        queues[queue_name(queue) + DEAD_LETTER_SUFFIX] = f"DeadLetterQueue{stem}"
    made: dict[str, Any] = {
        TOPIC: {
            "Type": "AWS::SNS::Topic",
            "Properties": {"Subscription": [{"Protocol": "email", "Endpoint": {"Ref": EMAIL}}]},
        }
    }
    listed = alarms(config, f"${{{OLDEST}}}")
    for alarm in listed:
        properties = sub(alarm.arguments())
        if alarm.namespace == SQS:
            properties["Dimensions"] = [
                {"Name": "QueueName", "Value": {"Fn::GetAtt": [queues[value], "QueueName"]}}
                for _, value in alarm.dimensions
            ]
        made[logical_id(alarm)] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {**properties, "AlarmActions": [{"Ref": TOPIC}]},
        }
    made["Dashboard"] = {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {"DashboardBody": {"Fn::Sub": dashboard(listed)}},
    }
    return {name: {"Type": r.pop("Type"), "Condition": ALARMS, **r} for name, r in made.items()}


def dashboard(listed: list[Alarm]) -> str:
    """The dashboard's body (for Fn::Sub): the alarms' states, then each kind's metrics."""
    arns = [f"${{{logical_id(a)}.Arn}}" for a in listed]
    widgets: list[dict[str, Any]] = [
        {
            "type": "alarm",
            "width": 24,
            "height": 4,
            "properties": {"title": "GAS alarms", "alarms": arns},
        }
    ]
    for kind in dict.fromkeys(a.kind for a in listed):
        of_kind = [a for a in listed if a.kind == kind]
        widgets.append(
            {
                "type": "metric",
                "width": 12,
                "height": 6,
                "properties": {
                    "title": kind,
                    "region": "${AWS::Region}",
                    "metrics": [
                        [
                            a.namespace,
                            a.metric,
                            *[x for d in a.dimensions for x in d],
                            {"stat": a.statistic, "period": a.period},
                        ]
                        for a in of_kind
                    ],
                },
            }
        )
    return json.dumps({"widgets": widgets})


def outputs() -> dict[str, Any]:
    return {
        TOPIC: {
            "Condition": ALARMS,
            "Description": "the topic the alarms notify",
            "Value": {"Ref": TOPIC},
        }
    }
