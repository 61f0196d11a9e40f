"""util/doctor: what a bucket's lifecycle rules do for every key (S3's answers, as plain data).

The doctor's checks against a whole stack are in tests/integration/test_doctor_process.py;
these are the rules moto does not keep as S3 does (it drops NewerNoncurrentVersions).
"""

from __future__ import annotations

from typing import Any

import pytest

from util.doctor.doctor import lifecycle_facts

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
