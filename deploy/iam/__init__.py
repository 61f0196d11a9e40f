"""Least-privilege IAM policies of the GAS utilities, made from the configuration they run with.

Each policy allows exactly the AWS actions its utility calls (read from the code: util/worker.py,
util/helpers.py, util/backends.py, util/glacier.py and the utility's own module), on exactly
the resources its configuration names. `policy` builds one for a loaded configuration; the
JSON files beside this module are the policies of the default configuration, with
``${AccountId}`` and ``${Region}`` left for `render` (or sed) to fill in; a test keeps them
equal to what `policy` makes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from util.ann_load import CONFIG_FILE as ANN_LOAD_CONFIG_FILE
from util.ann_load_aws import TEMP_QUEUE_PREFIX as ANN_LOAD_QUEUE_PREFIX
from util.archives import backend_class
from util.resources import DEAD_LETTER_SUFFIX
from util.schema import USER_INDEX
from util.util_config import Config, load

HERE = Path(__file__).resolve().parent
ACCOUNT, REGION = "${AccountId}", "${Region}"
WORKERS = ("archive", "restore", "thaw", "notify")
UTILITIES = (*WORKERS, "reconcile", "ann_load")


@dataclass(frozen=True)
class Arns:
    """ARNs of the resources a configuration names, in one account and region."""

    account: str = ACCOUNT
    region: str = REGION

    def _arn(
        self, service: str, resource: str, region: str | None = None, account: str | None = None
    ) -> str:
        region = self.region if region is None else region
        return f"arn:aws:{service}:{region}:{account or self.account}:{resource}"

    def queue(self, name_or_url: str, suffix: str = "") -> str:
        if name_or_url.startswith(("https://", "http://")):
            account, name = urlparse(name_or_url).path.rstrip("/").split("/")[-2:]
            return self._arn("sqs", name + suffix, account=account)
        return self._arn("sqs", name_or_url + suffix)

    def topic(self, name_or_arn: str) -> str:
        return name_or_arn if name_or_arn.startswith("arn:") else self._arn("sns", name_or_arn)

    def table(self, name: str) -> str:
        return self._arn("dynamodb", f"table/{name}")

    def vault(self, name: str) -> str:
        return self._arn("glacier", f"vaults/{name}")

    def identities(self, sender: str) -> list[str]:
        """SES checks the sender's address identity, or its domain's if that is what is verified."""
        address = parseaddr(sender)[1]
        return [
            self._arn("ses", f"identity/{address}"),
            self._arn("ses", f"identity/{address.rpartition('@')[2]}"),
        ]

    @staticmethod
    def bucket(name: str) -> str:
        return f"arn:aws:s3:::{name}"

    @staticmethod
    def objects(bucket: str, prefix: str = "") -> str:
        return f"arn:aws:s3:::{bucket}/{prefix}*"


Statement = dict[str, Any]


def allow(
    sid: str,
    actions: list[str],
    resources: str | list[str],
    condition: dict[str, Any] | None = None,
) -> Statement:
    statement: Statement = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": resources,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def _queue_worker(arns: Arns, queue: str) -> list[Statement]:
    """util/worker.py: long-poll the queue, settle messages (a retry or a defer sends the
    message back to it as a fresh copy), dead-letter the invalid ones (the runtime finds the
    dead-letter queue in the queue's RedrivePolicy)."""
    return [
        allow(
            "ConsumeQueue",
            [
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:SendMessage",
            ],
            arns.queue(queue),
        ),
        allow(
            "DeadLetterQueue",
            ["sqs:GetQueueUrl", "sqs:SendMessage"],
            arns.queue(queue, DEAD_LETTER_SUFFIX),
        ),
    ]


# GetCallerIdentity turns a topic name into an ARN (util/helpers.py, Aws.topic_arn). AWS
# needs no permission for it; it is listed so that the policy names every call.
_CALLER_IDENTITY = allow("CallerIdentity", ["sts:GetCallerIdentity"], "*")


def _annotations(config: Config, arns: Arns, actions: list[str]) -> Statement:
    return allow(
        "Annotations", [f"dynamodb:{a}" for a in actions], arns.table(config.gas.annotations_table)
    )


def _users(config: Config, arns: Arns, actions: tuple[str, ...] = ("GetItem",)) -> Statement:
    return allow("Users", [f"dynamodb:{a}" for a in actions], arns.table(config.gas.users_table))


def _archive_objects(config: Config, arns: Arns, actions: list[str]) -> Statement:
    return allow(
        "ArchiveObjects",
        [f"s3:{a}" for a in actions],
        arns.objects(config.gas.archive_bucket, config.gas.archive_prefix),
    )


def _list_archive(config: Config, arns: Arns) -> Statement:
    # Not called: without it S3 answers HeadObject of a missing archive object with 403
    # instead of 404, and "no such archive" could not be told from a real failure.
    return allow("ListArchive", ["s3:ListBucket"], arns.bucket(config.gas.archive_bucket))


def archive(config: Config, arns: Arns) -> list[Statement]:
    gas = config.gas
    statements = [
        *_queue_worker(arns, config.archive.queue),
        # The job and its user in one BatchGetItem (GetItem: what DynamoDB left unprocessed);
        # the archive recorded in a transaction with a ConditionCheck that the user is free.
        _annotations(config, arns, ["BatchGetItem", "GetItem", "UpdateItem"]),
        _users(config, arns, ("BatchGetItem", "GetItem", "ConditionCheckItem")),
        # Read (HeadObject, ranged GetObject or a server-side copy's source), then delete
        # while it has the archived ETag (a conditional delete needs GetObject too).
        allow("Results", ["s3:GetObject", "s3:DeleteObject"], arns.objects(gas.results_bucket)),
        # Not called: without it S3 answers a missing result with 403 instead of 404, and
        # archive could not tell "already archived by another copy" from a real failure.
        allow("ListResults", ["s3:ListBucket"], arns.bucket(gas.results_bucket)),
    ]
    if backend_class(config).IN_BUCKET:
        # HeadObject (made already?), a (multipart) copy into the archive class; an orphan of
        # a lost race is deleted.
        statements += [
            _archive_objects(
                config, arns, ["GetObject", "PutObject", "AbortMultipartUpload", "DeleteObject"]
            ),
            _list_archive(config, arns),
        ]
    else:
        statements.append(
            allow(
                "Vault",
                [
                    "glacier:InitiateMultipartUpload",
                    "glacier:UploadMultipartPart",
                    "glacier:CompleteMultipartUpload",
                    "glacier:AbortMultipartUpload",
                    "glacier:DeleteArchive",
                ],
                arns.vault(gas.vault),
            )
        )
    return statements


def restore(config: Config, arns: Arns) -> list[Statement]:
    gas = config.gas
    statements = [
        *_queue_worker(arns, config.restore.queue),
        _users(config, arns),
        # Claim, record and release each retrieval on its item.
        _annotations(config, arns, ["GetItem", "UpdateItem"]),
        allow(
            "UserIndex",
            ["dynamodb:Query"],
            f"{arns.table(gas.annotations_table)}/index/{USER_INDEX}",
        ),
    ]
    if backend_class(config).IN_BUCKET:
        statements += [
            # HeadObject: DEEP_ARCHIVE has no Expedited tier.
            _archive_objects(config, arns, ["GetObject", "RestoreObject"]),
            # RestoreObject's 200 (restored already): announce it, as S3 does not.
            allow("ThawTopic", ["sns:Publish"], arns.topic(gas.thaw_topic)),
            _CALLER_IDENTITY,
        ]
    else:
        # ListJobs: before InitiateJob is sent again, or after it got no answer, whether an
        # earlier send started the job.
        statements += [
            allow("Vault", ["glacier:InitiateJob", "glacier:ListJobs"], arns.vault(gas.vault)),
            _CALLER_IDENTITY,
        ]
    return statements


def thaw(config: Config, arns: Arns) -> list[Statement]:
    gas = config.gas
    statements = [
        *_queue_worker(arns, config.thaw.queue),
        _annotations(config, arns, ["GetItem", "UpdateItem"]),
    ]
    if backend_class(config).IN_BUCKET:
        statements += [
            # Copy back (multipart above one part), compare ETags, delete a copy that differs.
            allow(
                "Results",
                ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
                arns.objects(gas.results_bucket),
            ),
            # HeadObject (restored?), the copy's source, delete; RestoreObject starts an
            # expired or failed restore again, announced on the thaw topic if S3 will not.
            _archive_objects(config, arns, ["GetObject", "DeleteObject", "RestoreObject"]),
            _list_archive(config, arns),
            allow("ThawTopic", ["sns:Publish"], arns.topic(gas.thaw_topic)),
            _CALLER_IDENTITY,
        ]
    else:
        statements += [
            # The job output, streamed into a multipart upload at the original key.
            allow(
                "Results",
                ["s3:PutObject", "s3:AbortMultipartUpload"],
                arns.objects(gas.results_bucket),
            ),
            # DescribeJob and GetJobOutput; InitiateJob (and ListJobs, after one that got no
            # answer) starts a failed retrieval again.
            allow(
                "Vault",
                [
                    "glacier:DescribeJob",
                    "glacier:GetJobOutput",
                    "glacier:InitiateJob",
                    "glacier:ListJobs",
                    "glacier:DeleteArchive",
                ],
                arns.vault(gas.vault),
            ),
            _CALLER_IDENTITY,
        ]
    return statements


def notify(config: Config, arns: Arns) -> list[Statement]:
    return [
        *_queue_worker(arns, config.notify.queue),
        # Read the job with its user (one BatchGetItem), claim the sending, record it.
        _annotations(config, arns, ["BatchGetItem", "GetItem", "UpdateItem"]),
        _users(config, arns, ("BatchGetItem", "GetItem")),
        # As the configured sender only, whichever of its identities SES checks.
        allow(
            "SendEmail",
            ["ses:SendEmail"],
            arns.identities(config.notify.sender),
            {"StringEquals": {"ses:FromAddress": parseaddr(config.notify.sender)[1]}},
        ),
    ]


def reconcile(config: Config, arns: Arns) -> list[Statement]:
    """util/reconcile: read everything, send the utilities their messages, delete orphan
    archives, clear stale claims; leave its report in the results bucket."""
    gas = config.gas
    statements = [
        # Scan; read a candidate again; clear a stale claim (conditional UpdateItem).
        _annotations(config, arns, ["Scan", "GetItem", "UpdateItem"]),
        allow("Users", ["dynamodb:Scan"], arns.table(gas.users_table)),
        # List the results (and HeadObject a candidate); read and write its own report.
        allow("ListResults", ["s3:ListBucket"], arns.bucket(gas.results_bucket)),
        allow("Results", ["s3:GetObject"], arns.objects(gas.results_bucket)),
        allow(
            "Report",
            ["s3:PutObject"],
            arns.objects(gas.results_bucket, config.reconcile.report_key),
        ),
        # The archive queue's visibility timeout, the restore queue's messages (a restore
        # message may be on its way); the archive and restore messages.
        allow(
            "ArchiveQueue",
            ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"],
            arns.queue(config.archive.queue),
        ),
        allow(
            "RestoreQueue",
            ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"],
            arns.queue(config.restore.queue),
        ),
    ]
    if backend_class(config).IN_BUCKET:
        # List the archive prefix, HeadObject an orphan again, delete it.
        statements += [
            _archive_objects(config, arns, ["GetObject", "DeleteObject"]),
            allow(
                "ListArchive",
                ["s3:ListBucket"],
                arns.bucket(gas.archive_bucket),
                {"StringLike": {"s3:prefix": [f"{gas.archive_prefix}*"]}},
            ),
        ]
    else:
        # Start an inventory, find and read the latest, delete an orphan.
        statements.append(
            allow(
                "Vault",
                [
                    "glacier:InitiateJob",
                    "glacier:ListJobs",
                    "glacier:GetJobOutput",
                    "glacier:DeleteArchive",
                ],
                arns.vault(gas.vault),
            )
        )
    return statements


def ann_load(config: Config, arns: Arns) -> list[Statement]:
    gas = config.gas
    synthetic = f"{config.ann_load.prefix}/"
    statements = [
        # Submit as the web app does: input object, PENDING item, job request.
        allow("Inputs", ["s3:PutObject"], arns.objects(gas.inputs_bucket, synthetic)),
        # Due jobs' items go in one BatchWriteItem; one job alone in a PutItem.
        allow(
            "Annotations",
            ["dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:Scan", "dynamodb:DeleteItem"],
            arns.table(gas.annotations_table),
        ),
        _users(config, arns),
        allow("JobRequests", ["sns:Publish"], arns.topic(gas.job_requests_topic)),
        allow(
            "Backlog",
            ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
            arns.queue(gas.job_requests_queue),
        ),
        # A temporary queue of its own on the job-results topic, removed at the end (and
        # those of killed runs, with --cleanup).
        allow(
            "ResultsTopic",
            ["sns:Subscribe", "sns:ListSubscriptionsByTopic"],
            arns.topic(gas.job_results_topic),
        ),
        # Unsubscribe names a subscription: the topic's ARN, a colon and an id.
        allow("ResultsSubscription", ["sns:Unsubscribe"], f"{arns.topic(gas.job_results_topic)}:*"),
        allow(
            "ResultsQueue",
            [
                "sqs:CreateQueue",
                "sqs:GetQueueAttributes",
                "sqs:SetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:DeleteQueue",
            ],
            arns.queue(f"{ANN_LOAD_QUEUE_PREFIX}*"),
        ),
        allow("ListQueues", ["sqs:ListQueues"], "*"),
        # --cleanup: the synthetic jobs' objects (input, result, log) and archives.
        allow(
            "Cleanup",
            ["s3:DeleteObject"],
            [
                arns.objects(gas.inputs_bucket, synthetic),
                arns.objects(gas.results_bucket, synthetic),
            ],
        ),
        allow(
            "CleanupListing",
            ["s3:ListBucket"],
            [arns.bucket(gas.inputs_bucket), arns.bucket(gas.results_bucket)],
            {"StringLike": {"s3:prefix": [f"{synthetic}*"]}},
        ),
        _CALLER_IDENTITY,
    ]
    if backend_class(config).IN_BUCKET:
        statements.append(_archive_objects(config, arns, ["DeleteObject"]))
    else:
        statements.append(
            allow("CleanupArchives", ["glacier:DeleteArchive"], arns.vault(gas.vault))
        )
    return statements


STATEMENTS: dict[str, Callable[[Config, Arns], list[Statement]]] = {
    "archive": archive,
    "restore": restore,
    "thaw": thaw,
    "notify": notify,
    "reconcile": reconcile,
    "ann_load": ann_load,
}


# What S3 asks KMS for, on a caller's behalf, when an object's bucket encrypts with SSE-KMS: a
# read decrypts the object's data key; a write makes one, and a multipart upload or copy
# decrypts it again for each part (docs/deploy.md, IAM).
KMS_FOR_S3 = {
    "s3:GetObject": ("kms:Decrypt",),
    "s3:PutObject": ("kms:Decrypt", "kms:GenerateDataKey"),
}
KEY_ARN = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+"
KMS_KEY_PARAMETER = "KmsKeyArn"  # the template's parameter giving that key


def kms_actions(utility: str, config: Config, arns: Arns = Arns()) -> dict[str, list[str]]:
    """The KMS actions `utility` needs on the default key of each bucket whose objects it
    reads or writes, by bucket name: its policy's S3 object actions, as KMS_FOR_S3 says."""
    needs: dict[str, set[str]] = {}
    for statement in STATEMENTS[utility](config, arns):
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            bucket, slash, _ = resource.removeprefix("arn:aws:s3:::").partition("/")
            if resource.startswith("arn:aws:s3:::") and slash:  # objects, not the bucket
                for action in statement["Action"]:
                    needs.setdefault(bucket, set()).update(KMS_FOR_S3.get(action, ()))
    return {bucket: sorted(actions) for bucket, actions in needs.items() if actions}


def kms_statement(utility: str, config: Config, arns: Arns, key_arn: str) -> Statement | None:
    """`utility`'s use of one key for every bucket it reads or writes (the template's
    KmsKeyArn, render's --kms-key), through S3 only; None when it touches no object."""
    actions = sorted({a for needs in kms_actions(utility, config, arns).values() for a in needs})
    if not actions:
        return None
    via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{arns.region}.amazonaws.com"}}
    return allow("KmsKey", actions, key_arn, via_s3)


def load_config(
    utility: str, files: list[str] | tuple[str, ...] = (), environ: Mapping[str, str] | None = None
) -> Config:
    """The configuration `utility` runs with: its own .ini, then `files`, then GAS_* variables."""
    if utility == "ann_load":  # util/ann_load_config.ini, as util/ann_load.py reads it
        return load(None, [ANN_LOAD_CONFIG_FILE, *files], environ)
    return load(utility, files, environ)


def policy(utility: str, config: Config, arns: Arns = Arns()) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": STATEMENTS[utility](config, arns)}


# The JSON files: each utility's policy of the default configuration, and for the utilities
# that touch archives, of the default configuration with the s3 archive back end.
TEMPLATES: dict[str, tuple[str, dict[str, str]]] = {
    **{name: (name, {}) for name in UTILITIES},
    **{
        f"{name}.s3-backend": (name, {"GAS_GAS_ARCHIVE_BACKEND": "s3"})
        for name in ("archive", "restore", "thaw", "reconcile", "ann_load")
    },
}


def template(name: str) -> str:
    """The text of deploy/iam/<name>.json, as `write` makes it."""
    utility, environ = TEMPLATES[name]
    return json.dumps(policy(utility, load_config(utility, environ=environ)), indent=2) + "\n"


def render(text: str, account: str, region: str) -> str:
    """A template's text with the account and region filled in."""
    return text.replace(ACCOUNT, account).replace(REGION, region)
