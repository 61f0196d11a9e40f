"""The doctor's buckets: what a bucket's lifecycle rules do for every key, its versioning,
Object Lock default retention and default encryption (`read_bucket`), and the checks that
nothing the utilities delete from a bucket they write stays billed (`bucket_checks`), each
failure with the command that fixes it (docs/deploy.md).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from util.aws import Aws
from util.doctor.common import UNAVAILABLE, Check, probe
from util.resources import (
    ABORT_INCOMPLETE_UPLOADS_RULE,
    NONCURRENT_VERSIONS_RULE,
    RESTORE_COMPLETED,
    applies_to_every_key,
    lifecycle_rule,
)


def read_bucket(aws: Aws, bucket: str) -> dict[str, Any]:
    """A bucket that exists as the checks look at it (and the template test compares)."""
    s3 = aws.client("s3")
    return {
        **lifecycle_facts(_lifecycle_rules(s3, bucket)),
        "Versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status", ""),
        "DefaultRetention": _default_retention(s3, bucket),
        **_encryption(aws, bucket),
        "RestoreNotices": sorted(
            c["TopicArn"]
            for c in s3.get_bucket_notification_configuration(Bucket=bucket).get(
                "TopicConfigurations", []
            )
            if RESTORE_COMPLETED in c["Events"]
        ),
    }


def lifecycle_facts(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """What a bucket's lifecycle rules (S3's answer) do for every key: the days after which
    incomplete uploads are aborted and noncurrent versions expire, whether expired delete
    markers go. A rule keeping NewerNoncurrentVersions never expires a deleted object's one."""
    every = [r for r in rules if applies_to_every_key(r)]
    return {
        "AbortIncompleteUploadDays": sorted(
            r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            for r in every
            if "AbortIncompleteMultipartUpload" in r
        ),
        "NoncurrentVersionDays": sorted(
            r["NoncurrentVersionExpiration"]["NoncurrentDays"]
            for r in every
            if "NoncurrentDays" in r.get("NoncurrentVersionExpiration", {})
            and "NewerNoncurrentVersions" not in r["NoncurrentVersionExpiration"]
        ),
        "ExpiresDeleteMarkers": any(
            r.get("Expiration", {}).get("ExpiredObjectDeleteMarker") for r in every
        ),
    }


def default_retention(rule: dict[str, Any] | None) -> str:
    """An Object Lock default retention (``Rule.DefaultRetention``) as text, "" for none."""
    if not rule:
        return ""
    period = f"{rule['Days']} day(s)" if rule.get("Days") else f"{rule['Years']} year(s)"
    return f"{rule['Mode']} {period}"


def _default_retention(s3: Any, bucket: str) -> str:
    try:
        lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ObjectLockConfigurationNotFoundError":
            return ""
        raise
    return default_retention(lock.get("Rule", {}).get("DefaultRetention"))


def _encryption(aws: Aws, bucket: str) -> dict[str, str]:
    """A bucket's default encryption, and the ARN of its KMS key if customer-managed ("" for
    SSE-S3 or the AWS managed key aws/s3, which no policy of a role has to grant)."""
    try:
        rules = aws.client("s3").get_bucket_encryption(Bucket=bucket)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ServerSideEncryptionConfigurationNotFoundError":
            rules = []  # moto's answer for a bucket given none; S3 has SSE-S3 by default
        else:
            raise
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    key = default.get("KMSMasterKeyID", "")
    if not key or key.endswith("alias/aws/s3"):
        return {"Encryption": default.get("SSEAlgorithm", "AES256"), "KmsKey": ""}
    try:  # an id or alias becomes the key's ARN, which IAM policies name
        metadata = probe(aws, "kms").describe_key(KeyId=key)["KeyMetadata"]
    except UNAVAILABLE:  # another account's key, say: as the bucket names it
        return {"Encryption": default["SSEAlgorithm"], "KmsKey": key}
    managed = metadata["KeyManager"] == "AWS"
    return {"Encryption": default["SSEAlgorithm"], "KmsKey": "" if managed else metadata["Arn"]}


def _lifecycle_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        rules: list[dict[str, Any]] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return []
        raise
    return rules


def bucket_checks(aws: Aws, name: str, bucket: dict[str, Any]) -> Iterator[Check]:
    """A bucket workers upload to and delete from: nothing billed may stay behind.

    Archive deletes a result once archived, thaw and reconcile an archive: in a versioned
    bucket that leaves the bytes, as a noncurrent version, and Object Lock keeps a locked one
    whatever the lifecycle says (docs/deploy.md)."""
    days = bucket["AbortIncompleteUploadDays"]
    status = bucket["Versioning"]  # "", Enabled, or Suspended (versions made while enabled)
    expiring = bucket["NoncurrentVersionDays"] and bucket["ExpiresDeleteMarkers"]
    missing = [ABORT_INCOMPLETE_UPLOADS_RULE] if not days else []
    missing += [NONCURRENT_VERSIONS_RULE] if status and not expiring else []
    fix = _lifecycle_fix(aws, name, missing) if missing else ""  # one command adds them all
    if days:
        yield Check(True, f"bucket {name}: incomplete uploads aborted after {days[0]} day(s)")
    else:
        yield Check(
            False,
            f"bucket {name}: no rule aborting incomplete multipart uploads: a killed worker's "
            "parts are billed forever",
            fix,
        )
    if not status:
        yield Check(True, f"bucket {name}: not versioned: a delete frees the bytes")
    elif expiring:
        noncurrent = bucket["NoncurrentVersionDays"][0]
        yield Check(
            True,
            f"bucket {name}: versioning {status}: noncurrent versions expire after "
            f"{noncurrent} day(s), and expired delete markers: what the utilities delete is "
            f"billed {noncurrent} day(s) longer",
        )
    else:
        yield Check(
            False,
            f"bucket {name}: versioning {status} and no rule expiring noncurrent versions and "
            "expired delete markers: what the utilities delete stays, billed",
            fix,
        )
    if bucket["DefaultRetention"]:
        unlocked = json.dumps({"ObjectLockEnabled": "Enabled"})
        yield Check(
            False,
            f"bucket {name}: Object Lock with default retention {bucket['DefaultRetention']}: "
            "what the utilities delete stays, locked and billed, until its retention ends",
            "remove the default retention (Object Lock itself cannot be turned off), or use a "
            f"bucket without it: aws s3api put-object-lock-configuration --bucket {name} "
            f"--object-lock-configuration {shlex.quote(unlocked)}",
        )


def _lifecycle_fix(aws: Aws, bucket: str, missing: list[str]) -> str:
    """The command adding the `missing` rules (util/resources.py) to a bucket's lifecycle.

    PutBucketLifecycleConfiguration replaces the whole configuration: the command carries the
    bucket's other rules too (one of the same ID is replaced)."""
    kept = [r for r in _lifecycle_rules(aws.client("s3"), bucket) if r.get("ID") not in missing]
    document = json.dumps(
        {"Rules": [*kept, *map(lifecycle_rule, missing)]},
        default=lambda value: value.isoformat(),  # a rule's Date
    )
    keeping = (
        f", keeping its {len(kept)} other rule(s) (the call replaces the whole configuration)"
        if kept
        else ""
    )
    return (
        f"add {', '.join(missing)}{keeping}: aws s3api put-bucket-lifecycle-configuration "
        f"--bucket {bucket} --lifecycle-configuration {shlex.quote(document)}"
    )
