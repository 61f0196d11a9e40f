"""util/doctor's judgements that a whole stack cannot show (tests/integration/test_doctor_process.py
runs the doctor against one): lifecycle rules moto does not keep as S3 does (it drops
NewerNoncurrentVersions), and the policy statements a role's check reads where IAM's
simulation is not available; and the alarms' checks, against the local stack in process.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from localaws.stack import ALARM_EMAIL, ALARM_TOPIC
from tests.conftest import Stack
from util.aws import Aws
from util.doctor.alarms import alarm_checks, alarms
from util.doctor.buckets import lifecycle_facts
from util.doctor.iam import RoleDecisions
from util.resources import utility_config_files
from util.util_config import load

NONCURRENT = {"NoncurrentVersionExpiration": {"NoncurrentDays": 7}}
MARKERS = {"Expiration": {"ExpiredObjectDeleteMarker": True}}


def rule(filter_: dict[str, Any] | None = None, status: str = "Enabled", **actions: Any) -> dict:
    return {"ID": "r", "Status": status, "Filter": filter_ or {}, **actions}


def test_a_rule_for_every_key_counts() -> None:
    facts = lifecycle_facts([rule({"Prefix": ""}, **NONCURRENT, **MARKERS)])
    assert facts["NoncurrentVersionDays"] == [7] and facts["ExpiresDeleteMarkers"]


@pytest.mark.parametrize(
    "narrowed",
    [
        rule({"Prefix": "gas/"}, **NONCURRENT, **MARKERS),
        rule({"Tag": {"Key": "k", "Value": "v"}}, **NONCURRENT, **MARKERS),
        rule({"And": {"Prefix": "", "ObjectSizeGreaterThan": 1024}}, **NONCURRENT, **MARKERS),
        rule(status="Disabled", **NONCURRENT, **MARKERS),
        {"ID": "legacy", "Status": "Enabled", "Prefix": "gas/", **NONCURRENT, **MARKERS},
    ],
    ids=["prefix", "tag", "size", "disabled", "legacy-prefix"],
)
def test_a_rule_for_some_keys_or_disabled_does_not(narrowed: dict) -> None:
    assert lifecycle_facts([narrowed]) == {
        "AbortIncompleteUploadDays": [],
        "NoncurrentVersionDays": [],
        "ExpiresDeleteMarkers": False,
    }


def test_a_rule_that_keeps_newer_noncurrent_versions_expires_none_of_a_deleted_objects() -> None:
    # S3 keeps that many noncurrent versions whatever their age: a deleted result has one.
    keeps = {"NoncurrentVersionExpiration": {"NoncurrentDays": 7, "NewerNoncurrentVersions": 3}}
    assert lifecycle_facts([rule(**keeps, **MARKERS)])["NoncurrentVersionDays"] == []


KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
USE = ["kms:Decrypt", "kms:GenerateDataKey"]


@pytest.fixture
def aws(aws_env: None) -> Iterator[Aws]:
    with mock_aws():
        yield Aws(load(None, utility_config_files()))


def role(aws: Aws, *statements: dict[str, Any]) -> str:
    """A role whose inline policy has `statements`."""
    iam = aws.client("iam")
    arn = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    iam.put_role_policy(RoleName="r", PolicyName="p", PolicyDocument=json.dumps(document))
    return arn


def test_a_deny_in_an_attached_policy_wins_over_an_inline_allow(aws: Aws) -> None:
    arn = role(aws, {"Effect": "Allow", "Action": "kms:*", "Resource": "*"})
    iam = aws.client("iam")
    deny = {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": KEY}
    managed = iam.create_policy(
        PolicyName="no-decrypt",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [deny]}),
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="r", PolicyArn=managed)
    decisions = RoleDecisions(aws, arn)
    assert decisions.denied(USE, [KEY]) == [("kms:Decrypt", KEY)]
    assert decisions.how == RoleDecisions.READ  # moto offers no simulation


def test_not_action_excludes_and_a_deny_with_conditions_is_not_taken(aws: Aws) -> None:
    arn = role(
        aws,
        {"Effect": "Allow", "NotAction": "kms:Decrypt", "Resource": "arn:aws:kms:*"},
        {
            "Effect": "Deny",
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )
    assert RoleDecisions(aws, arn).denied(USE, [KEY]) == [("kms:Decrypt", KEY)]


def test_an_allow_for_another_key_does_not_cover_this_one(aws: Aws) -> None:
    arn = role(aws, {"Effect": "Allow", "Action": USE, "Resource": KEY.replace("1234abcd", "ffff")})
    assert RoleDecisions(aws, arn).denied(USE, [KEY]) == [(a, KEY) for a in USE]


# -- the alarms (util/doctor/alarms.py), against the local stack, which makes them ----------

TOPIC = f"arn:aws:sns:us-east-1:123456789012:{ALARM_TOPIC}"


def alarm_lines(stack: Stack) -> list[str]:
    return [c.line() for c in alarm_checks(stack.aws, stack.config)]


def test_the_local_stacks_alarms_exist_and_page_someone(stack: Stack) -> None:
    assert alarm_lines(stack) == [
        f"✔ alarms: all {len(alarms(stack.config))} exist and notify {TOPIC}",
        f"✔ alarm topic {TOPIC}: pages {ALARM_EMAIL}",
    ]


def test_a_missing_alarm_is_named_with_the_command_that_makes_it(stack: Stack) -> None:
    # Given a stack that lost one alarm
    cloudwatch = stack.client("cloudwatch")
    cloudwatch.delete_alarms(AlarmNames=["gas-thaw-dlq-not-empty"])
    # When the doctor looks, then it names it, and its fix is the command that makes it
    [line, topic] = alarm_lines(stack)
    what, _, fix = line.partition(" — fix: ")
    assert what == "✘ alarm gas-thaw-dlq-not-empty: missing"
    assert topic.startswith("✔ alarm topic")
    command = shlex.split(fix)
    assert command[:4] == ["aws", "cloudwatch", "put-metric-alarm", "--cli-input-json"]
    cloudwatch.put_metric_alarm(**json.loads(command[4]))
    # And once it is run, all is well again
    assert alarm_lines(stack)[0].startswith("✔ alarms: all")


def test_an_alarm_watching_another_queue_is_wrong(stack: Stack) -> None:
    [alarm] = [a for a in alarms(stack.config) if a.name == "gas-archive-dlq-not-empty"]
    arguments = {**alarm.arguments(), "Dimensions": [{"Name": "QueueName", "Value": "gas-x"}]}
    stack.client("cloudwatch").put_metric_alarm(**arguments, AlarmActions=[TOPIC])
    assert alarm_lines(stack)[0].startswith(
        "✘ alarm gas-archive-dlq-not-empty: watches ('AWS/SQS', "
        "'ApproximateNumberOfMessagesVisible', [('QueueName', 'gas-x')], 'Maximum'), not "
    )


def test_an_alarm_that_notifies_no_one_is_wrong(stack: Stack) -> None:
    [alarm] = [a for a in alarms(stack.config) if a.name == "GAS-notify-unexpected-errors"]
    stack.client("cloudwatch").put_metric_alarm(**alarm.arguments())
    [line, _] = alarm_lines(stack)
    assert line.startswith("✘ alarm GAS-notify-unexpected-errors: notifies no one — fix: ")
    assert TOPIC in line  # the command names the topic the other alarms notify


def test_no_alarm_at_all_says_to_deploy_them(stack: Stack) -> None:
    stack.client("cloudwatch").delete_alarms(AlarmNames=[a.name for a in alarms(stack.config)])
    assert alarm_lines(stack) == [
        f"✘ alarms: none of the {len(alarms(stack.config))} exist: nothing pages anyone — "
        "fix: deploy deploy/cloudformation/gas.yaml with AlarmEmail=<your address> "
        "(docs/deploy.md#alarms)"
    ]


def test_an_alarm_topic_without_a_subscription_pages_no_one(stack: Stack) -> None:
    sns = stack.client("sns")
    for subscription in sns.list_subscriptions_by_topic(TopicArn=TOPIC)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    assert alarm_lines(stack)[1] == (
        f"✘ alarm topic {TOPIC}: no subscription: nobody is paged — fix: aws sns subscribe "
        f"--topic-arn {TOPIC} --protocol email --notification-endpoint <your address>, "
        "then click the link"
    )
