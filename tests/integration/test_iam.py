"""Each utility under IAM enforcement, with only the credentials of its deploy/iam policy.

The local stack creates its resources unchecked; the test then creates one IAM user per
utility with that utility's policy (deploy/iam/<utility>.json, or <utility>.s3-backend.json
for ``archive_backend = s3``, rendered for the stack's account and region) and an
administrator for its own set-up and look-ups, and switches moto's enforcement on
(localaws/iam.py). From then on every request is authorised against the caller's
policies, as AWS does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploy.iam import HERE, TEMPLATES, UTILITIES, render
from localaws import iam as local_iam
from localaws.ses import sent_emails
from localaws.stack import REGION
from tests.conftest import (
    ROOT,
    Server,
    UtilityProcess,
    dead_letter_reasons,
    job,
    put_job,
    result_bytes,
    result_exists,
    run_once,
    set_role,
    wait_for,
)
from util.archives.layout import MIB
from util.aws import Aws
from util.schema import ARCHIVE_ID, NOTIFIED_TIME


@dataclass
class Enforced:
    """The stack as its administrator sees it, and each utility's (and "admin"'s) credentials."""

    admin: Server
    credentials: dict[str, dict[str, str]]

    def client(self, utility: str, service: str) -> Any:
        """A client acting as `utility`."""
        keys = self.credentials[utility]
        return boto3.session.Session(
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client(service)

    def run_once(self, utility: str, tmp_path: Path, **settings: str) -> UtilityProcess:
        worker = run_once(utility, tmp_path, env=self.credentials[utility], **settings)
        assert "not authorized" not in worker.log, worker.log
        return worker


BACKENDS = pytest.mark.parametrize(
    "stack_settings", [{}, {"GAS_GAS_ARCHIVE_BACKEND": "s3"}], ids=["vault", "s3"]
)


def shipped_policy(utility: str, backend: str, account: str) -> dict[str, Any]:
    """deploy/iam's policy of `utility` for the archive back end, rendered."""
    name = (
        f"{utility}.s3-backend"
        if f"{utility}.s3-backend" in TEMPLATES and backend == "s3"
        else utility
    )
    return json.loads(render((HERE / f"{name}.json").read_text(), account, REGION))


@pytest.fixture
def enforced(server: Server) -> Enforced:
    account, backend = server.aws.account_id(), server.config.gas.archive_backend
    credentials = {
        utility: local_iam.grant(
            server.aws, f"gas-{utility}", shipped_policy(utility, backend, account)
        )
        for utility in UTILITIES
    }
    admin = credentials["admin"] = local_iam.grant(server.aws, "gas-admin", local_iam.ADMINISTRATOR)
    local_iam.enforce(server.env["AWS_ENDPOINT_URL"])
    session = boto3.session.Session(
        aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
    return Enforced(
        Server(server.config, Aws(server.config, session), server.process, server.env), credentials
    )


def denied(call: Any, **parameters: Any) -> str:
    """The message of the AccessDenied a call must fail with."""
    with pytest.raises(ClientError) as caught:
        call(**parameters)
    error = caught.value.response["Error"]
    assert error["Code"] in ("AccessDenied", "AccessDeniedException"), error
    return error["Message"]


def send(stack: Server, queue: str, body: str | dict) -> None:
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url(queue),
        MessageBody=(body if isinstance(body, str) else json.dumps(body)),
    )


def test_enforcement_is_on(enforced: Enforced) -> None:
    # The stack's own unprivileged key, which worked while the stack was set up, is no
    # IAM user's: every request made with it is now refused.
    with pytest.raises(ClientError) as caught:
        boto3.client("sqs", region_name=REGION).list_queues()
    assert caught.value.response["Error"]["Code"] == "InvalidClientTokenId"


@BACKENDS
def test_archive_works_with_its_policy_alone(enforced: Enforced, tmp_path: Path) -> None:
    stack, config = enforced.admin, enforced.admin.config
    # Given a free user's result, one still in its grace period, a premium user's job
    # already archived (a redelivery: it finishes), and a poison message
    put_job(stack, job_id="j1")
    put_job(stack, job_id="j2", complete_time=time.time())
    put_job(stack, job_id="jb", user_id="u-bob", **{ARCHIVE_ID: "archived-before"})
    for body in (
        {"job_id": "j1", "user_id": "u-alice"},
        {"job_id": "j2", "user_id": "u-alice"},
        {"job_id": "jb", "user_id": "u-bob"},
        "{not json",
    ):
        send(stack, config.archive.queue, body)
    # When archive drains its queue with its own credentials
    worker = enforced.run_once("archive", tmp_path)
    # Then the result is in the vault, not in S3; the early one waits for the end of its
    # grace; bob's redelivery is done; the poison is in the dead-letter queue
    assert ARCHIVE_ID in job(stack, "j1") and not result_exists(stack, "j1"), worker.log
    assert "job=j2 receives=1 outcome=defer" in worker.log
    assert "hidden instead" not in worker.log  # its copy was sent back to the queue
    assert "job=jb receives=1 outcome=done" in worker.log
    assert dead_letter_reasons(stack, config.archive.queue, 1)[0].startswith("body is not JSON")
    # And what archive has no business doing is refused
    topic = stack.aws.topic_arn(config.gas.job_results_topic)
    assert "sns:Publish" in denied(
        enforced.client("archive", "sns").publish, TopicArn=topic, Message="{}"
    )
    denied(
        enforced.client("archive", "s3").put_object,
        Bucket=config.gas.results_bucket,
        Key="gas/u-alice/x",
        Body=b"forged",
    )
    assert "sqs:SendMessage" in denied(
        enforced.client("archive", "sqs").send_message,
        QueueUrl=stack.queue_url(config.restore.queue),
        MessageBody="{}",
    )
    assert "table/gas-users" in denied(
        enforced.client("archive", "dynamodb").put_item,
        TableName=config.gas.users_table,
        Item={"user_id": {"S": "u-alice"}, "role": {"S": "premium_user"}},
    )


@BACKENDS
def test_restore_and_thaw_work_with_their_policies_alone(
    enforced: Enforced, tmp_path: Path
) -> None:
    stack, config = enforced.admin, enforced.admin.config
    # Given a free user's 9 MiB result archived by archive, in 1 MiB parts
    original = put_job(stack, job_id="j1", size=9 * MIB + 5)
    send(stack, config.archive.queue, {"job_id": "j1", "user_id": "u-alice"})
    enforced.run_once("archive", tmp_path, archive_part_size_mib="1")
    assert not result_exists(stack, "j1")
    # When the user upgrades, restore starts the retrieval and thaw brings the file back,
    # each with its own credentials
    set_role(stack, "u-alice", "premium_user")
    send(stack, config.restore.queue, {"user_id": "u-alice"})
    enforced.run_once("restore", tmp_path)
    thaw = UtilityProcess(
        "thaw", tmp_path / "thaw.log", env=enforced.credentials["thaw"], thaw_part_size_mib="8"
    )
    wait_for(lambda: ARCHIVE_ID not in job(stack, "j1"), timeout=60, what="the result thawed")
    assert thaw.stop() == 0, thaw.log
    # Then the file is back (vault: two 8 MiB ranges, an S3 multipart upload), byte-identical
    assert result_bytes(stack, "j1") == original
    assert "reason='thawed'" in thaw.log and "not authorized" not in thaw.log, thaw.log
    # And neither can do what the other (or notify) does
    denied(
        enforced.client("restore", "s3").get_object,
        Bucket=config.gas.results_bucket,
        Key=job(stack, "j1")["s3_key_result_file"],
    )
    assert "user_id_index" in denied(
        enforced.client("thaw", "dynamodb").query,
        TableName=config.gas.annotations_table,
        IndexName="user_id_index",
        KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "u-alice"}},
    )
    assert "sqs:SendMessage" in denied(
        enforced.client("thaw", "sqs").send_message,
        QueueUrl=stack.queue_url(config.notify.queue),
        MessageBody="{}",
    )


def test_notify_works_with_its_policy_alone(enforced: Enforced, tmp_path: Path) -> None:
    stack, config = enforced.admin, enforced.admin.config
    # Given a finished job published on the job-results topic, as the annotator does
    put_job(stack, job_id="j1")
    stack.client("sns").publish(
        TopicArn=stack.aws.topic_arn(config.gas.job_results_topic),
        Message=json.dumps({"job_id": "j1", "user_id": "u-alice", "job_status": "COMPLETED"}),
    )
    # When notify drains its queue with its own credentials
    enforced.run_once("notify", tmp_path)
    # Then the user got the e-mail, and the job says so
    assert [m["to"] for m in sent_emails(stack.env["AWS_ENDPOINT_URL"])] == [["alice@example.com"]]
    assert NOTIFIED_TIME in job(stack, "j1")
    # And notify can read no result, and send as nobody but its sender
    denied(
        enforced.client("notify", "s3").get_object,
        Bucket=config.gas.results_bucket,
        Key=job(stack, "j1")["s3_key_result_file"],
    )
    assert "identity/support@gas.example.com" in denied(
        enforced.client("notify", "ses").send_email,
        Source="support@gas.example.com",
        Destination={"ToAddresses": ["alice@example.com"]},
        Message={"Subject": {"Data": "x"}, "Body": {"Text": {"Data": "x"}}},
    )


# One job per submission; and due jobs sent together (BatchWriteItem, PublishBatch).
@pytest.mark.parametrize("batching", [[], ["--batch-ms", "500"]], ids=["single", "batched"])
def test_ann_load_works_with_its_policy_alone(
    enforced: Enforced, tmp_path: Path, batching: list[str]
) -> None:
    stack, config = enforced.admin, enforced.admin.config
    # Given the simulated annotator fleet, which is not ours to restrict
    annotator = subprocess.Popen(
        [sys.executable, "-m", "localaws", "annotator", "--concurrency", "5", "--seconds", "0"],
        cwd=ROOT,
        env={**os.environ, **enforced.credentials["admin"], "GAS_WORKER_WAIT_SECONDS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "annotator.log", "w"),
    )
    ann_load_env = {**os.environ, **enforced.credentials["ann_load"]}
    try:
        # When ann_load submits 5 jobs with its own credentials, then cleans up after them
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "util.ann_load",
                "--rate",
                "5",
                "--jobs",
                "5",
                "--drain",
                "30",
                "--out",
                str(tmp_path / "out"),
                *batching,
            ],
            cwd=ROOT,
            env=ann_load_env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        cleanup = subprocess.run(
            [sys.executable, "-m", "util.ann_load", "--cleanup"],
            cwd=ROOT,
            env=ann_load_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        annotator.send_signal(signal.SIGTERM)
        annotator.wait(timeout=30)
    # Then every job completed, its temporary queue is gone, and so is every synthetic job
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["jobs"]["completed"] == 5, summary
    assert summary["backlog"]["max"] is not None, "the job-requests queue was never sampled"
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert "removed 5 jobs, 15 objects" in cleanup.stdout
    assert stack.client("sqs").list_queues(QueueNamePrefix="ann-load-").get("QueueUrls") is None
    output = run.stdout + run.stderr + cleanup.stdout + cleanup.stderr
    assert "not authorized" not in output and "AccessDenied" not in output, output
    # And ann_load may neither read users' results nor announce results itself
    denied(
        enforced.client("ann_load", "s3").get_object,
        Bucket=config.gas.results_bucket,
        Key="gas/u-alice/j1~sample.annot.vcf",
    )
    assert "sns:Publish" in denied(
        enforced.client("ann_load", "sns").publish,
        TopicArn=stack.aws.topic_arn(config.gas.job_results_topic),
        Message="{}",
    )


@pytest.mark.parametrize(
    "stack_settings",
    [{"GAS_LOCAL_STANDARD_SECONDS": "0"}, {"GAS_GAS_ARCHIVE_BACKEND": "s3"}],
    ids=["vault", "s3"],
)
def test_reconcile_works_with_its_policy_alone(enforced: Enforced, tmp_path: Path) -> None:
    stack, config = enforced.admin, enforced.admin.config
    # Given a job whose archive message was never sent, one archived, with a stale claim, and
    # an orphan archive
    put_job(stack, job_id="j1", complete_time=time.time() - 10_000)
    put_job(stack, job_id="j2")
    send(stack, config.archive.queue, {"job_id": "j2", "user_id": "u-alice"})
    enforced.run_once("archive", tmp_path, archive_grace_seconds="0")
    stack.client("dynamodb").update_item(
        TableName=config.gas.annotations_table,
        Key={"job_id": {"S": "j2"}},
        UpdateExpression="SET restore_job_id = :c, restore_expires = :e",
        ExpressionAttributeValues={":c": {"S": "claim:dead"}, ":e": {"N": "1"}},
    )
    if config.gas.archive_backend == "s3":
        stack.client("s3").put_object(
            Bucket=config.gas.archive_bucket, Key=f"{config.gas.archive_prefix}gone/0a", Body=b"x"
        )
    else:
        stack.client("glacier").upload_archive(
            vaultName=config.gas.vault, body=b"x", archiveDescription='{"job_id": "gone"}'
        )
    # When reconcile repairs with its own credentials (twice: the vault's first pass only
    # starts an inventory)
    env = {
        **os.environ,
        **enforced.credentials["reconcile"],
        "GAS_RECONCILE_ORPHAN_AGE_SECONDS": "0",
    }
    passes = [
        subprocess.run(
            [sys.executable, "-m", "util.reconcile", "--repair"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]
    # Then every finding is repaired, nothing refused
    for done in passes:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "AccessDenied" not in done.stderr and "not authorized" not in done.stderr
    output = "".join(p.stdout for p in passes)
    for kind in ("archive-not-requested", "stale-claim", "orphan-archive"):
        assert kind in output, output
    assert "restore_job_id" not in job(stack, "j2")
    # And it may not touch a result
    denied(
        enforced.client("reconcile", "s3").delete_object,
        Bucket=config.gas.results_bucket,
        Key=job(stack, "j1")["s3_key_result_file"],
    )


def test_a_worker_started_with_another_utilitys_credentials_stops_at_once(
    enforced: Enforced, tmp_path: Path
) -> None:
    # When archive is started with notify's credentials
    worker = UtilityProcess(
        "archive", tmp_path / "archive.log", "--once", env=enforced.credentials["notify"]
    )
    # Then it cannot even find its queue: exit code 1, naming the refused action
    assert worker.wait(timeout=60) == 1, worker.log
    assert "not authorized to perform: sqs:GetQueueUrl" in worker.log, worker.log
