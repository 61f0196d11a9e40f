"""`python -m util.doctor` as a real process against the local stack server, whole and broken."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable

import pytest

from deploy.iam import Arns, kms_statement, policy
from localaws.stack import REGION
from tests.conftest import ROOT, Server
from util.resources import ABORT_INCOMPLETE_UPLOADS_RULE, lifecycle_rule

ACCOUNT = "123456789012"  # moto's
BACKENDS = pytest.mark.parametrize(
    "stack_settings", [{}, {"GAS_GAS_ARCHIVE_BACKEND": "s3"}], ids=["vault", "s3"]
)


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "util.doctor", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def failures(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("✘")]


@BACKENDS
def test_the_local_stack_is_all_well(server: Server) -> None:
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert failures(result) == []
    assert all(line[0] in "✔-" for line in lines[:-1]) and lines[-1].endswith("all fine")
    # What moto cannot answer is said to be unchecked, not passed
    assert "- SES sandbox: skipped (not available: 404)" in lines
    backend_lines = (
        ["✔ vault gas-archive: exists"]
        if server.config.gas.archive_backend == "vault"
        else [
            "✔ bucket gas-archive-objects: announces restores on gas-thaw",
            "✔ bucket gas-archive-objects: incomplete uploads aborted after 1 day(s)",
            "✔ bucket gas-archive-objects: not versioned: a delete frees the bytes",
        ]
    )
    assert "✔ bucket gas-results: incomplete uploads aborted after 1 day(s)" in lines
    assert "✔ bucket gas-results: not versioned: a delete frees the bytes" in lines
    assert set(backend_lines) <= set(lines)


def remove_redrive_policy(server: Server) -> None:
    server.client("sqs").set_queue_attributes(
        QueueUrl=server.queue_url("gas-archive"), Attributes={"RedrivePolicy": ""}
    )


def delete_dead_letter_queue(server: Server) -> None:
    server.client("sqs").delete_queue(QueueUrl=server.queue_url("gas-restore-dlq"))


def delete_vault(server: Server) -> None:
    server.client("glacier").delete_vault(vaultName="gas-archive")


def remove_subscription(server: Server) -> None:
    sns = server.client("sns")
    topic = server.aws.topic_arn("gas-job-results")
    for subscription in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])


def remove_queue_policy(server: Server) -> None:
    server.client("sqs").set_queue_attributes(
        QueueUrl=server.queue_url("gas-thaw"), Attributes={"Policy": ""}
    )


def remove_notification(server: Server) -> None:
    server.client("s3").put_bucket_notification_configuration(
        Bucket="gas-archive-objects", NotificationConfiguration={}
    )


def unverify_sender(server: Server) -> None:
    server.client("ses").delete_identity(Identity="noreply@gas.example.com")


def remove_lifecycle_rule(server: Server) -> None:
    server.client("s3").delete_bucket_lifecycle(Bucket="gas-results")


def remove_archive_lifecycle_rule(server: Server) -> None:
    server.client("s3").delete_bucket_lifecycle(Bucket="gas-archive-objects")


@pytest.mark.parametrize(
    "stack_settings, damage, failure",
    [
        (
            {},
            remove_redrive_policy,
            "✘ queue gas-archive: no dead-letter queue — fix: create gas-archive-dlq and set "
            "gas-archive's RedrivePolicy to it, maxReceiveCount 3-20",
        ),
        (
            {},
            delete_dead_letter_queue,
            "✘ queue gas-restore: no dead-letter queue — fix: create gas-restore-dlq",
        ),
        (
            {},
            delete_vault,
            "✘ vault gas-archive: missing — fix: aws glacier create-vault --account-id - "
            "--vault-name gas-archive",
        ),
        (
            {},
            remove_subscription,
            "✘ topic gas-job-results -> queue gas-notify: no subscription — fix: aws sns subscribe "
            "--topic-arn arn:aws:sns:us-east-1:123456789012:gas-job-results --protocol sqs "
            "--notification-endpoint arn:aws:sqs:us-east-1:123456789012:gas-notify",
        ),
        (
            {},
            remove_queue_policy,
            "✘ queue gas-thaw: its policy does not let topic gas-thaw deliver — fix: allow "
            "sns.amazonaws.com sqs:SendMessage with aws:SourceArn "
            "arn:aws:sns:us-east-1:123456789012:gas-thaw in its access policy",
        ),
        (
            {"GAS_GAS_ARCHIVE_BACKEND": "s3"},
            remove_notification,
            "✘ bucket gas-archive-objects: does not announce restores on gas-thaw — fix: add a "
            "notification of s3:ObjectRestore:Completed to the topic",
        ),
        (
            {},
            unverify_sender,
            "✘ SES sender noreply@gas.example.com: not verified — fix: aws ses verify-email-identity "
            "--email-address noreply@gas.example.com, then click the link",
        ),
        (
            {},
            remove_lifecycle_rule,
            "✘ bucket gas-results: no rule aborting incomplete multipart uploads: a killed "
            "worker's parts are billed forever — fix: add abort-incomplete-uploads: aws s3api "
            "put-bucket-lifecycle-configuration --bucket gas-results --lifecycle-configuration ",
        ),
        (
            {"GAS_GAS_ARCHIVE_BACKEND": "s3"},
            remove_archive_lifecycle_rule,
            "✘ bucket gas-archive-objects: no rule aborting incomplete multipart uploads: a "
            "killed worker's parts are billed forever — fix: add abort-incomplete-uploads: aws "
            "s3api put-bucket-lifecycle-configuration --bucket gas-archive-objects ",
        ),
    ],
    ids=[
        "redrive-policy",
        "dead-letter-queue",
        "vault",
        "subscription",
        "queue-policy",
        "notification",
        "sender",
        "lifecycle",
        "archive-lifecycle",
    ],
)
def test_a_broken_copy_gets_one_failure_naming_its_fix(
    server: Server, damage: Callable[[Server], None], failure: str
) -> None:
    # Given a local stack with one thing broken on purpose
    damage(server)
    # When the doctor looks at it
    result = doctor()
    # Then it exits non-zero with exactly that one failure, and the fix for it
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(failures(result)) == 1, result.stdout
    assert failures(result)[0].startswith(failure), result.stdout
    assert result.stdout.splitlines()[-1].endswith("1 to fix")


def apply_lifecycle_fix(server: Server, line: str) -> dict:
    """Do what a ✘ line's `aws s3api put-bucket-lifecycle-configuration` says; its rules."""
    command = shlex.split(line[line.index("aws s3api ") :])
    configuration = json.loads(command[command.index("--lifecycle-configuration") + 1])
    server.client("s3").put_bucket_lifecycle_configuration(
        Bucket=command[command.index("--bucket") + 1], LifecycleConfiguration=configuration
    )
    return configuration


def test_a_rule_for_some_keys_only_is_not_enough_and_the_fix_keeps_the_others(
    server: Server,
) -> None:
    # Given a results bucket whose only abort rule covers one prefix, beside a rule of its own
    others = [
        {
            "ID": "abort-some",
            "Status": "Enabled",
            "Filter": {"Prefix": "gas/"},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3},
        },
        {
            "ID": "expire-logs",
            "Status": "Enabled",
            "Filter": {"Prefix": "logs/"},
            "Expiration": {"Days": 30},
        },
    ]
    server.client("s3").put_bucket_lifecycle_configuration(
        Bucket="gas-results", LifecycleConfiguration={"Rules": others}
    )
    # When the doctor looks at it
    result = doctor()
    # Then the bucket has no rule for every key, and the fix keeps the rules it has
    [line] = failures(result)
    assert line.startswith("✘ bucket gas-results: no rule aborting incomplete multipart uploads"), (
        result.stdout
    )
    assert "keeping its 2 other rule(s) (the call replaces the whole configuration)" in line
    fixed = apply_lifecycle_fix(server, line)
    assert [r["ID"] for r in fixed["Rules"]] == [
        "abort-some",
        "expire-logs",
        "abort-incomplete-uploads",
    ]
    # And once it is done, the doctor finds the bucket well
    again = doctor()
    assert again.returncode == 0, again.stdout
    assert "✔ bucket gas-results: incomplete uploads aborted after 1 day(s)" in again.stdout


def version(server: Server, bucket: str, status: str) -> None:
    server.client("s3").put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": status}
    )


@pytest.mark.parametrize(
    "stack_settings, bucket, status",
    [
        ({}, "gas-results", "Enabled"),
        ({"GAS_GAS_ARCHIVE_BACKEND": "s3"}, "gas-archive-objects", "Suspended"),
    ],
    ids=["results-enabled", "archive-suspended"],
)
def test_a_versioned_bucket_needs_a_rule_expiring_what_deletes_leave(
    server: Server, bucket: str, status: str
) -> None:
    # Given a bucket the organisation keeps versioned: a delete leaves the bytes behind, as a
    # noncurrent version (suspended: the versions made while it was enabled)
    version(server, bucket, status)
    # When the doctor looks at it
    result = doctor()
    # Then it says so, and how to expire them
    [line] = failures(result)
    assert line.startswith(
        f"✘ bucket {bucket}: versioning {status} and no rule expiring noncurrent versions and "
        "expired delete markers: what the utilities delete stays, billed — fix: add "
        "expire-noncurrent-versions, keeping its 1 other rule(s) (the call replaces the whole "
        "configuration): aws s3api put-bucket-lifecycle-configuration "
    ), result.stdout
    fixed = apply_lifecycle_fix(server, line)
    assert fixed["Rules"][-1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    # And once the rule is there, it says how long a deleted object's bytes stay billed
    again = doctor()
    assert again.returncode == 0, again.stdout
    assert (
        f"✔ bucket {bucket}: versioning {status}: noncurrent versions expire after 1 day(s), "
        "and expired delete markers: what the utilities delete is billed 1 day(s) longer"
    ) in again.stdout.splitlines()


def test_a_versioned_bucket_whose_rule_leaves_delete_markers_needs_the_rule(
    server: Server,
) -> None:
    # Given a versioned results bucket whose rule expires noncurrent versions only
    version(server, "gas-results", "Enabled")
    server.client("s3").put_bucket_lifecycle_configuration(
        Bucket="gas-results",
        LifecycleConfiguration={
            "Rules": [
                lifecycle_rule(ABORT_INCOMPLETE_UPLOADS_RULE),
                {
                    "ID": "noncurrent-30",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                },
            ]
        },
    )
    # When the doctor looks at it, then the bucket's two rules are kept beside the one it lacks
    [line] = failures(doctor())
    assert "no rule expiring noncurrent versions and expired delete markers" in line
    assert [r["ID"] for r in apply_lifecycle_fix(server, line)["Rules"]] == [
        "abort-incomplete-uploads",
        "noncurrent-30",
        "expire-noncurrent-versions",
    ]
    # And the bytes are billed as long as the soonest rule says
    assert (
        "✔ bucket gas-results: versioning Enabled: noncurrent versions expire after 1 day(s), "
        "and expired delete markers: what the utilities delete is billed 1 day(s) longer"
    ) in doctor().stdout.splitlines()


@pytest.mark.parametrize(
    "stack_settings, bucket",
    [({}, "gas-results"), ({"GAS_GAS_ARCHIVE_BACKEND": "s3"}, "gas-archive-objects")],
    ids=["results", "archive"],
)
def test_object_lock_with_a_default_retention_is_refused(server: Server, bucket: str) -> None:
    # Given a bucket with Object Lock (on a versioned bucket) and a default retention: what
    # archive (or thaw, reconcile) deletes gets a delete marker, its locked version stays
    s3 = server.client("s3")
    version(server, bucket, "Enabled")
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}},
        },
    )
    # When the doctor looks at it
    lines = failures(doctor())
    # Then it refuses the retention, with its fix, and asks for the versions' rule
    assert (
        f"✘ bucket {bucket}: Object Lock with default retention GOVERNANCE 30 day(s): what the "
        "utilities delete stays, locked and billed, until its retention ends — fix: remove the "
        "default retention (Object Lock itself cannot be turned off), or use a bucket without "
        f"it: aws s3api put-object-lock-configuration --bucket {bucket} "
        """--object-lock-configuration '{"ObjectLockEnabled": "Enabled"}'"""
    ) in lines
    [versions] = [line for line in lines if "no rule expiring noncurrent versions" in line]
    assert len(lines) == 2, lines
    # And with Object Lock left on but no default retention, and the rule, all is well
    s3.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
    )
    apply_lifecycle_fix(server, versions)
    again = doctor()
    assert again.returncode == 0, again.stdout


def encrypt(server: Server, bucket: str, key: str) -> None:
    """Make `key` the bucket's default encryption (SSE-KMS)."""
    server.client("s3").put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key,
                    }
                }
            ]
        },
    )


def utility_role(server: Server, utility: str) -> str:
    """A role holding `utility`'s deploy/iam policy for the stack's account and region."""
    iam = server.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=f"gas-{utility}", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=f"gas-{utility}",
        PolicyName=f"gas-{utility}",
        PolicyDocument=json.dumps(policy(utility, server.config, Arns(ACCOUNT, REGION))),
    )
    return role["Role"]["Arn"]


@pytest.mark.parametrize("stack_settings", [{"GAS_GAS_ARCHIVE_BACKEND": "s3"}], ids=["s3"])
def test_a_customer_managed_key_the_roles_may_not_use_is_named_with_them(server: Server) -> None:
    # Given buckets encrypted by default with customer-managed KMS keys: the results bucket's
    # named by its id, the archive bucket's a key of another account (which the doctor may not
    # describe); the inputs bucket with the AWS managed aws/s3 key, which needs no grant
    key = server.client("kms").create_key(Description="acme-s3")["KeyMetadata"]
    foreign = "arn:aws:kms:us-east-1:210987654321:key/0000abcd-12ab-34cd-56ef-1234567890ab"
    encrypt(server, "gas-results", key["KeyId"])
    encrypt(server, "gas-archive-objects", foreign)
    encrypt(server, "gas-inputs", "alias/aws/s3")
    # When the doctor looks without roles, then it says which roles it would check
    unchecked = doctor()
    assert unchecked.returncode == 0, unchecked.stdout
    assert (
        f"- bucket gas-results: KMS key {key['Arn']}: not checked (give --role UTILITY=ARN of "
        "archive, thaw, reconcile)"
    ) in unchecked.stdout.splitlines()
    # Given roles of archive and thaw with their deploy/iam policies, which grant no key
    roles = {u: utility_role(server, u) for u in ("archive", "thaw")}
    given = [f"--role={u}={arn}" for u, arn in roles.items()]
    # When the doctor checks them
    result = doctor(*given)
    # Then each bucket names its key and the roles that may not use it, with the fix
    lines = failures(result)
    assert [line.split(" — fix: ")[0] for line in lines] == [
        f"✘ bucket gas-results: KMS key {key['Arn']}: archive ({roles['archive']}) may not "
        f"kms:Decrypt; thaw ({roles['thaw']}) may not kms:Decrypt, kms:GenerateDataKey (not "
        "checked: reconcile: give --role) (read from its policies: IAM's simulation is not "
        "available)",
        f"✘ bucket gas-archive-objects: KMS key {foreign}: archive ({roles['archive']}) may not "
        f"kms:Decrypt, kms:GenerateDataKey; thaw ({roles['thaw']}) may not kms:Decrypt (not "
        "checked: restore, reconcile: give --role) (read from its policies: IAM's simulation is "
        "not available)",
    ], result.stdout
    assert (
        lines[0]
        .split(" — fix: ")[1]
        .startswith(
            f"allow them on the key in those roles' policies: the template's KmsKeyArn={key['Arn']}, "
            f"or python -m deploy.iam render UTILITY --kms-key {key['Arn']}"
        )
    )
    assert "gas-inputs: KMS" not in result.stdout
    # When each role is given the key's use as deploy.iam renders it, for both keys
    iam = server.client("iam")
    for utility in roles:
        statements = [
            {**kms_statement(utility, server.config, Arns(ACCOUNT, REGION), k), "Sid": f"Key{i}"}
            for i, k in enumerate((key["Arn"], foreign))
        ]
        iam.put_role_policy(
            RoleName=f"gas-{utility}",
            PolicyName="gas-kms",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
    # Then the doctor finds them able to
    fixed = doctor(*given)
    assert fixed.returncode == 0, fixed.stdout
    assert (
        f"✔ bucket gas-results: KMS key {key['Arn']}: archive, thaw may use it (not checked: "
        "reconcile: give --role) (read from its policies: IAM's simulation is not available)"
    ) in fixed.stdout.splitlines()


def test_a_bad_setting_exits_2_naming_it(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "util.doctor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "GAS_GAS_ARCHIVE_BACKEND": "tape"},
    )
    assert result.returncode == 2 and "archive_backend" in result.stderr


def test_a_role_is_checked_by_its_policies_where_it_cannot_be_simulated(server: Server) -> None:
    # Given a notify role whose policy lacks the statement that lets it consume its queue, and
    # a role the account does not have (moto offers no IAM simulation: its policies are read)
    role = utility_role(server, "notify")
    document = policy("notify", server.config, Arns(ACCOUNT, REGION))
    document["Statement"] = [s for s in document["Statement"] if s["Sid"] != "ConsumeQueue"]
    server.client("iam").put_role_policy(
        RoleName="gas-notify", PolicyName="gas-notify", PolicyDocument=json.dumps(document)
    )
    absent = "arn:aws:iam::123456789012:role/gas-nobody"
    # When the doctor checks both
    result = doctor(f"--role=notify={role}", f"--role=thaw={absent}")
    # Then the role is denied what its policy lacks, and the other one is not checked
    [line] = failures(result)
    assert line.startswith(
        f"✘ IAM notify ({role}): denied sqs:ChangeMessageVisibility on "
        "arn:aws:sqs:us-east-1:123456789012:gas-notify; sqs:DeleteMessage on"
    ), result.stdout
    assert "(read from its policies: IAM's simulation is not available)" in line
    assert "- IAM thaw: skipped (not available: NoSuchEntity)" in result.stdout.splitlines()
