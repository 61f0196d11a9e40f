"""The "AWS" a contract test runs against, written once for two kinds of account: the local
stack (`local_stack`, with `LIKE_AWS` or `FAST` settings; `enforced` for IAM), or with
``GAS_TEST_AWS=1`` a disposable stack in a real account (`aws_account`). What each makes and
deletes, and why: docs/testing.md, "The contract suite".
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.client import BaseClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from localaws import iam as local_iam
from localaws.stack import CREDENTIALS, REGION, launch
from tests.conftest import wait_for
from util.resources import utility_config_files
from util.util_config import Config, load

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation" / "gas.yaml"
AWS_RUN = os.environ.get("GAS_TEST_AWS") == "1"

# The default local stack: the S3 back end's resources (the archive bucket announcing restores
# on the thaw topic, as the AWS run's stack does) and AWS's slowness where a row depends on it.
LIKE_AWS = {
    "GAS_GAS_ARCHIVE_BACKEND": "s3",
    "GAS_LOCAL_EXPEDITED_SECONDS": "1",  # AWS: 1-5 minutes
    "GAS_LOCAL_STANDARD_SECONDS": "3600",  # AWS: 3-5 hours (12 for DEEP_ARCHIVE)
    "GAS_LOCAL_BULK_SECONDS": "3600",  # AWS: 5-12 hours
    "GAS_LOCAL_INVENTORY_DELAY_SECONDS": "86400",  # AWS: a new vault has none for up to a day
}
# What AWS cannot be made to do on demand, or takes a day to do: one server for those rows.
FAST = {
    **LIKE_AWS,
    "GAS_LOCAL_EXPEDITED_CAPACITY": "false",
    "GAS_LOCAL_STANDARD_SECONDS": "1",
    "GAS_LOCAL_DAY_SECONDS": "3",
    "GAS_LOCAL_INVENTORY_DELAY_SECONDS": "1",
    "GAS_LOCAL_INDEX_LAG_SECONDS": "2",
    "GAS_LOCAL_SES_SANDBOX": "true",
}
# Codes of a request refused by IAM (or by KMS for S3): a HEAD has no body, only its status.
DENIED = {"AccessDenied", "AccessDeniedException", "403", "Forbidden"}


def unique(prefix: str = "contract") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def local_only(why: str) -> pytest.MarkDecorator:
    """A row AWS cannot be made to show within a run: it runs on the local stack only."""
    return pytest.mark.skipif(AWS_RUN, reason=f"local stack only: {why}")


def local_gap(why: str) -> pytest.MarkDecorator:
    """A documented behaviour the local stack does not reproduce: locally the test must fail
    (strict xfail, so the row's "not emulated" is checked too); on AWS it must pass."""
    return pytest.mark.xfail(not AWS_RUN, strict=True, reason=f"not emulated: {why}")


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def status(exc_or_response: ClientError | dict[str, Any]) -> int:
    response = (
        exc_or_response.response if isinstance(exc_or_response, ClientError) else exc_or_response
    )
    return int(response["ResponseMetadata"]["HTTPStatusCode"])


@dataclass
class Account:
    """Clients and resource names of one account: the local stack or a real one."""

    kind: str  # "local" or "aws"
    config: Config  # the resources' names, as the workers read them
    session: boto3.session.Session
    endpoint: str | None = None  # the local stack's URL
    vault: str | None = None  # a vault the tests may use, None when the account has none
    no_vault: str = ""  # why there is none
    waits: float = 30  # seconds to allow for an Expedited restore or retrieval
    cleanups: list[Callable[[], Any]] = field(default_factory=list)
    _clients: dict[tuple[str, int], BaseClient] = field(default_factory=dict)
    _account_id: str = ""

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def client(self, service: str, attempts: int = 3) -> BaseClient:
        """A client of the account; `attempts=1` to see AWS's first answer, a 503 included."""
        if (service, attempts) not in self._clients:
            self._clients[service, attempts] = self.session.client(
                service,
                endpoint_url=self.endpoint,
                config=BotoConfig(retries={"mode": "standard", "total_max_attempts": attempts}),
            )
        return self._clients[service, attempts]

    def account_id(self) -> str:
        if not self._account_id:
            self._account_id = str(self.client("sts").get_caller_identity()["Account"])
        return self._account_id

    def topic_arn(self, name_or_arn: str) -> str:
        """A topic's ARN (the stack's outputs give ARNs, the local stack's settings names)."""
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        return f"arn:aws:sns:{self.session.region_name}:{self.account_id()}:{name_or_arn}"

    def queue_url(self, name: str) -> str:
        return str(self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    def queue(self) -> str:
        """A queue of the test's own, deleted at the end of the session: its URL."""
        url = str(self.client("sqs").create_queue(QueueName=unique())["QueueUrl"])
        self.cleanups.append(lambda: self.client("sqs").delete_queue(QueueUrl=url))
        return url

    def queue_arn(self, url: str) -> str:
        return str(
            self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
        )

    def bucket(self) -> str:
        """A bucket of the test's own, emptied and deleted at the end of the session."""
        name = unique("gas-contract")
        s3 = self.client("s3")
        if self.session.region_name == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(
                Bucket=name,
                CreateBucketConfiguration={"LocationConstraint": self.session.region_name},
            )
        self.cleanups.append(lambda: (empty_bucket(s3, name), s3.delete_bucket(Bucket=name)))
        return name

    def principal(self, policy: dict[str, Any]) -> Account:
        """The account as a principal allowed exactly `policy` (`enforced` or AWS only)."""
        raise NotImplementedError("IAM is checked only by the `enforced` stack and on AWS")


def empty_bucket(s3: BaseClient, bucket: str) -> None:
    """Delete every object, version and unfinished upload of a bucket."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


# -- the local stack ---------------------------------------------------------------------------


@dataclass
class LocalAccount(Account):
    _users: int = 0

    def principal(self, policy: dict[str, Any]) -> Account:
        """An IAM user of the stack with `policy` inline (the stack must be `enforced`)."""
        self._users += 1
        keys = local_iam.grant(self, f"contract-{self._users}", policy)  # self has .client
        return Account("local", self.config, local_session(keys), self.endpoint, self.vault)


def local_session(keys: dict[str, str] = CREDENTIALS) -> boto3.session.Session:
    """A session of the local stack with these access keys (the stack's own by default)."""
    return boto3.session.Session(
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )


@contextmanager
def local_stack(settings: dict[str, str]) -> Iterator[LocalAccount]:
    """A `python -m util.local serve` with `settings` (``GAS_*``), stopped after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
    process, exports = launch(env={**env, **CREDENTIALS, **settings})
    config = load(None, utility_config_files(), environ=settings)
    endpoint = exports["AWS_ENDPOINT_URL"]
    account = LocalAccount("local", config, local_session(), endpoint, config.gas.vault)
    try:
        yield account
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def enforced(account: LocalAccount) -> LocalAccount:
    """The stack with IAM checked from now on, as its administrator (an IAM user)."""
    assert account.endpoint is not None
    keys = local_iam.grant(account, "contract-admin", local_iam.ADMINISTRATOR)
    local_iam.enforce(account.endpoint)
    return LocalAccount(
        "local", account.config, local_session(keys), account.endpoint, account.vault
    )


# -- a real account ----------------------------------------------------------------------------

# The test principal's role: the session policies of `principal` narrow it to what a test grants.
PRINCIPAL_SERVICES = ["s3", "kms", "sqs", "sns", "dynamodb", "glacier", "ses", "sts"]
STACK_WAIT = {"Delay": 10, "MaxAttempts": 120}  # CloudFormation: up to 20 minutes


@dataclass
class AwsAccount(Account):
    role_arn: str | None = None
    kms_key: str | None = None

    def principal(self, policy: dict[str, Any]) -> Account:
        """A session of the suite's role narrowed by `policy` (a session policy: in force at
        once, where a new IAM policy takes seconds to spread)."""
        assert self.role_arn is not None
        credentials = self.client("sts").assume_role(
            RoleArn=self.role_arn,
            RoleSessionName=unique("principal"),
            Policy=json.dumps(policy),
            DurationSeconds=900,
        )["Credentials"]
        session = boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self.session.region_name,
        )
        return Account("aws", self.config, session, None, self.vault, self.no_vault, self.waits)


def stack_parameters(prefix: str) -> dict[str, str]:
    """gas.yaml's parameters for a disposable stack: every name unique to this run."""
    names = {
        "GasAnnotationsTable": "annotations",
        "GasUsersTable": "users",
        "GasInputsBucket": "inputs",
        "GasResultsBucket": "results",
        "GasVault": "vault",
        "GasArchiveBucket": "archive",
        "GasJobRequestsTopic": "job-requests",
        "GasJobRequestsQueue": "job-requests",
        "GasJobResultsTopic": "job-results",
        "GasThawTopic": "thaw",
        "ArchiveQueue": "archive",
        "RestoreQueue": "restore",
        "ThawQueue": "thaw",
        "NotifyQueue": "notify",
    }
    return {
        **{parameter: f"{prefix}-{name}" for parameter, name in names.items()},
        "GasArchiveBackend": "s3",  # the archive bucket and its restore events
        "CreateTables": "true",
        # example.com takes no mail (RFC 2606): the identity stays unverified.
        "NotifySender": f"{prefix}@example.com",
    }


@contextmanager
def aws_account() -> Iterator[AwsAccount]:
    """A disposable GAS stack in the account of the standard credential chain, and the rest of
    the suite's resources; everything deleted after, even when a test or a creation fails."""
    session = boto3.session.Session()
    if session.get_credentials() is None or not session.region_name:
        raise pytest.UsageError("GAS_TEST_AWS=1 needs credentials and a region")
    prefix = f"gas-contract-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    parameters = stack_parameters(prefix)
    cleanups: list[Callable[[], Any]] = []
    with ExitStack() as teardown:
        teardown.callback(run_cleanups, cleanups)
        outputs = create_stack(session, prefix, parameters, teardown)
        config = load(None, utility_config_files(), environ=outputs)
        account = AwsAccount("aws", config, session, waits=900, cleanups=cleanups)
        account.vault, account.no_vault = create_vault(account, parameters["GasVault"])
        account.role_arn = create_role(account, prefix)
        account.kms_key = create_key(account, prefix)
        yield account


def run_cleanups(cleanups: list[Callable[[], Any]]) -> None:
    """Every cleanup, newest first; one that fails is reported and the others still run."""
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except Exception as exc:  # noqa: BLE001 - report, and go on deleting
            print(f"contract suite: cleanup failed: {exc}", file=sys.stderr)


def create_stack(
    session: boto3.session.Session, name: str, parameters: dict[str, str], teardown: ExitStack
) -> dict[str, str]:
    """Create the stack from gas.yaml (compacted to JSON, as CloudFormation takes a template
    inline up to 51,200 bytes); its outputs as ``GAS_*`` settings. It is deleted, its buckets
    emptied first, even if its creation fails."""
    cloudformation = session.client("cloudformation")
    body = json.dumps(yaml.safe_load(TEMPLATE.read_text()), separators=(",", ":"))
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    teardown.callback(delete_stack, session, name, parameters)
    try:
        cloudformation.get_waiter("stack_create_complete").wait(
            StackName=name, WaiterConfig=STACK_WAIT
        )
    except Exception:
        events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
        reasons = [
            e.get("ResourceStatusReason", "") for e in events if "FAILED" in e["ResourceStatus"]
        ]
        raise RuntimeError(f"stack {name} was not created: {reasons}") from None
    [stack] = cloudformation.describe_stacks(StackName=name)["Stacks"]
    return {
        o["Description"]: o["OutputValue"]
        for o in stack.get("Outputs", [])
        if o["Description"].startswith("GAS_")
    }


def delete_stack(session: boto3.session.Session, name: str, parameters: dict[str, str]) -> None:
    s3 = session.client("s3")
    for parameter in ("GasInputsBucket", "GasResultsBucket", "GasArchiveBucket"):
        try:
            empty_bucket(s3, parameters[parameter])
        except ClientError as exc:
            if error_code(exc) != "NoSuchBucket":
                raise
    cloudformation = session.client("cloudformation")
    cloudformation.delete_stack(StackName=name)
    cloudformation.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig=STACK_WAIT)


def create_vault(account: AwsAccount, name: str) -> tuple[str | None, str]:
    """A vault made by API (CloudFormation has no vault type), or why there is none. Vaults
    left by earlier runs are deleted first where Glacier allows it by now."""
    glacier = account.client("glacier")
    try:
        glacier.create_vault(vaultName=name)
    except ClientError as exc:
        return None, f"this account has no Glacier vault API ({error_code(exc)})"
    account.cleanups.append(lambda: delete_vault(account, name))
    for vault in glacier.list_vaults()["VaultList"]:
        if vault["VaultName"].startswith("gas-contract-") and vault["VaultName"] != name:
            try:
                glacier.delete_vault(vaultName=vault["VaultName"])
            except ClientError:
                pass  # not empty as of its last inventory yet
    return name, ""


def delete_vault(account: AwsAccount, name: str) -> None:
    """Glacier deletes a vault only once an inventory shows it empty: one written to just now
    stays until the next (about a day); a later run deletes it (`create_vault`)."""
    try:
        account.client("glacier").delete_vault(vaultName=name)
    except ClientError as exc:
        print(
            f"contract suite: vault {name} kept ({error_code(exc)}): Glacier deletes it once "
            "an inventory shows it empty, about a day from now; the next run does, or "
            f"`aws glacier delete-vault --account-id - --vault-name {name}`",
            file=sys.stderr,
        )


def create_role(account: AwsAccount, prefix: str) -> str:
    """The role `principal` assumes: the account may assume it, and it may use the services
    the tests call; each session narrows it with the policy under test."""
    iam = account.client("iam")
    name = f"{prefix}-principal"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account.account_id()}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    arn = str(
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    )
    account.cleanups.append(lambda: iam.delete_role(RoleName=name))
    services = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": [f"{s}:*" for s in PRINCIPAL_SERVICES], "Resource": "*"}
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(services))
    account.cleanups.append(lambda: iam.delete_role_policy(RoleName=name, PolicyName=name))
    # IAM is eventually consistent: the role is usable once a session of it can list a bucket.
    account.role_arn = arn
    listing = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
    }

    def usable() -> bool:
        try:
            s3 = account.principal(listing).client("s3")
            s3.list_objects_v2(Bucket=account.config.gas.results_bucket, MaxKeys=1)
            return True
        except ClientError:
            return False

    wait_for(usable, timeout=120, what=f"role {name} to be usable", every=2)
    return arn


def create_key(account: AwsAccount, prefix: str) -> str:
    """A customer managed KMS key (its default key policy leaves its use to IAM policies),
    scheduled for deletion after the run (7 days, KMS's shortest wait)."""
    kms = account.client("kms")
    key = kms.create_key(Description=f"{prefix}: GAS contract suite")["KeyMetadata"]
    account.cleanups.append(
        lambda: kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    )
    return str(key["Arn"])
