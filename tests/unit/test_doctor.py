"""util/doctor's judgements that a whole stack cannot show (tests/integration/test_doctor_process.py
runs the doctor against one): lifecycle rules moto does not keep as S3 does (it drops
NewerNoncurrentVersions), and the policy statements a role's check reads where IAM's
simulation is not available.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from util.aws import Aws
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
