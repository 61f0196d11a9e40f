"""What each call the utilities make needs from IAM: every listed action allows it, and each is
needed (without it, the call is denied). deploy/iam's policies are made of these.

A principal is allowed exactly a test's policy: on AWS, a session of the suite's role narrowed
by it (a session policy); locally, an IAM user of a stack whose IAM checks are on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deploy.iam import Arns
from tests.conftest import wait_for
from tests.contract.account import DENIED, Account, AwsAccount, error_code, local_gap, unique
from util.archives.layout import MIB
from util.schema import USER_INDEX

Prepare = Callable[[Account, dict[str, str]], Any]
Call = Callable[[Account, dict[str, str], Any], Any]
# Statement of a policy that allows nothing a test calls: a policy needs one.
NOTHING = {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}


@dataclass(frozen=True)
class Need:
    """A call (`call`, as the principal, given what `prepare` made as the administrator) and the
    actions it needs, each on a resource of `resources`."""

    actions: tuple[tuple[str, str], ...]
    call: Call
    prepare: Prepare = lambda admin, names: None
    # What a call that was made leaves and the run must remove (as the administrator), given
    # its answer: S3 objects go with their buckets, Glacier's must be deleted one by one.
    undo: Callable[[Account, Any], Any] = lambda admin, answer: None


@pytest.fixture(scope="module")
def resources(iam: Account) -> dict[str, Any]:
    """ARNs (and names) of what the calls reach: the stack's, a queue and a KMS key."""
    gas = iam.config.gas
    arns = Arns(iam.account_id(), iam.session.region_name)
    queue = iam.queue()
    if isinstance(iam, AwsAccount):
        key = iam.kms_key
    else:
        key = iam.client("kms").create_key(Description="contract")["KeyMetadata"]["Arn"]
    return {
        "results": arns.bucket(gas.results_bucket),
        "results/*": arns.objects(gas.results_bucket),
        "archive": arns.bucket(gas.archive_bucket),
        "archive/*": arns.objects(gas.archive_bucket, gas.archive_prefix),
        "annotations": arns.table(gas.annotations_table),
        "users": arns.table(gas.users_table),
        "index": f"{arns.table(gas.annotations_table)}/index/{USER_INDEX}",
        "queue": iam.queue_arn(queue),
        "queue-url": queue,
        "topic": iam.topic_arn(gas.thaw_topic),
        "identity": arns.identities(iam.config.notify.sender),
        "vault": arns.vault(iam.vault) if iam.vault else None,
        "key": key,
        "*": "*",
    }


# -- what the calls are made on, prepared as the administrator --------------------------------


def results_object(admin: Account, names: dict[str, Any], **extra: Any) -> dict[str, str]:
    bucket, key = admin.config.gas.results_bucket, unique()
    etag = admin.client("s3").put_object(Bucket=bucket, Key=key, Body=b"result", **extra)["ETag"]
    return {"Bucket": bucket, "Key": key, "ETag": etag}


def archive_object(admin: Account, names: dict[str, Any], **extra: Any) -> dict[str, str]:
    gas = admin.config.gas
    key = f"{gas.archive_prefix}{unique()}"
    admin.client("s3").put_object(Bucket=gas.archive_bucket, Key=key, Body=b"archive", **extra)
    return {"Bucket": gas.archive_bucket, "Key": key}


def kms_object(admin: Account, names: dict[str, Any]) -> dict[str, str]:
    return results_object(admin, names, ServerSideEncryption="aws:kms", SSEKMSKeyId=names["key"])


def message(admin: Account, names: dict[str, Any]) -> str:
    """A message of the test queue, received by the administrator: its receipt handle."""
    sqs, queue = admin.client("sqs"), names["queue-url"]
    body = unique()
    sqs.send_message(QueueUrl=queue, MessageBody=body)

    def receive() -> str | None:  # the queue holds earlier tests' messages too
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return next(
            (m["ReceiptHandle"] for m in messages.get("Messages", []) if m["Body"] == body), None
        )

    return str(wait_for(receive, what="the test queue's message"))


def needs_vault(admin: Account, names: dict[str, Any]) -> None:
    if admin.vault is None:
        pytest.skip(admin.no_vault)


def archive(admin: Account, names: dict[str, Any]) -> str:
    needs_vault(admin, names)
    glacier = admin.client("glacier")
    archive_id = str(glacier.upload_archive(vaultName=admin.vault, body=b"archive")["archiveId"])
    admin.cleanups.append(
        lambda: glacier.delete_archive(vaultName=admin.vault, archiveId=archive_id)
    )
    return archive_id


def vault_upload(admin: Account, names: dict[str, Any]) -> str:
    needs_vault(admin, names)
    upload = admin.client("glacier").initiate_multipart_upload(
        vaultName=admin.vault, partSize=str(MIB)
    )
    admin.cleanups.append(lambda: abort_upload(admin, upload))
    return str(upload["uploadId"])


def abort_upload(admin: Account, upload: dict[str, Any]) -> None:
    """Abort a vault upload, unless a test completed or aborted it already."""
    try:
        glacier(admin).abort_multipart_upload(vaultName=admin.vault, uploadId=upload["uploadId"])
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise


def delete_archive(admin: Account, answer: dict[str, Any]) -> None:
    glacier(admin).delete_archive(vaultName=admin.vault, archiveId=answer["archiveId"])


def vault_part(admin: Account, names: dict[str, Any]) -> tuple[str, str]:
    """An upload with its one part sent, and the tree hash that completes it."""
    upload = vault_upload(admin, names)
    response = admin.client("glacier").upload_multipart_part(
        vaultName=admin.vault, uploadId=upload, range="bytes 0-6/*", body=b"archive"
    )
    return upload, response["checksum"]


def retrieval(admin: Account, names: dict[str, Any]) -> str:
    """A Standard retrieval of a new archive (hours on AWS: it is never waited for)."""
    archive_id = archive(admin, names)
    return str(
        admin.client("glacier").initiate_job(
            vaultName=admin.vault,
            jobParameters={
                "Type": "archive-retrieval",
                "ArchiveId": archive_id,
                "Tier": "Standard",
            },
        )["jobId"]
    )


def s3(principal: Account) -> Any:
    return principal.client("s3", attempts=1)


def multipart_upload(principal: Account, bucket: str, key: str, **extra: Any) -> None:
    client = s3(principal)
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"part")[
        "ETag"
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )


def copy(principal: Account, source: dict[str, str], bucket: str, key: str, **extra: Any) -> None:
    s3(principal).copy_object(
        Bucket=bucket,
        Key=key,
        CopySource={"Bucket": source["Bucket"], "Key": source["Key"]},
        **extra,
    )


def table(principal: Account, name: str) -> str:
    return str(getattr(principal.config.gas, f"{name}_table"))


def dynamodb(principal: Account) -> Any:
    return principal.client("dynamodb", attempts=1)


def sqs(principal: Account) -> Any:
    return principal.client("sqs", attempts=1)


def glacier(principal: Account) -> Any:
    return principal.client("glacier", attempts=1)


JOB = {"job_id": {"S": "contract-job"}}
USER = {"user_id": {"S": "contract-user"}}

NEEDS: dict[str, Need] = {
    # S3: reading a result (HeadObject is a GET without its body), writing, copying, deleting
    "s3 HeadObject": Need(
        (("s3:GetObject", "results/*"),),
        lambda p, n, o: s3(p).head_object(Bucket=o["Bucket"], Key=o["Key"]),
        results_object,
    ),
    "s3 GetObject (ranged)": Need(
        (("s3:GetObject", "results/*"),),
        lambda p, n, o: s3(p).get_object(Bucket=o["Bucket"], Key=o["Key"], Range="bytes=0-1"),
        results_object,
    ),
    "s3 PutObject": Need(
        (("s3:PutObject", "results/*"),),
        lambda p, n, o: s3(p).put_object(
            Bucket=p.config.gas.results_bucket, Key=unique(), Body=b"x"
        ),
    ),
    "s3 multipart upload": Need(
        (("s3:PutObject", "results/*"),),
        lambda p, n, o: multipart_upload(p, p.config.gas.results_bucket, unique()),
    ),
    "s3 AbortMultipartUpload": Need(
        (("s3:AbortMultipartUpload", "results/*"),),
        lambda p, n, o: s3(p).abort_multipart_upload(**o),
        lambda admin, n: {
            "Bucket": (bucket := admin.config.gas.results_bucket),
            "Key": (key := unique()),
            "UploadId": admin.client("s3").create_multipart_upload(Bucket=bucket, Key=key)[
                "UploadId"
            ],
        },
    ),
    "s3 CopyObject": Need(
        (("s3:GetObject", "results/*"), ("s3:PutObject", "archive/*")),
        lambda p, n, o: copy(
            p, o, p.config.gas.archive_bucket, f"{p.config.gas.archive_prefix}{unique()}"
        ),
        results_object,
    ),
    "s3 UploadPartCopy": Need(
        (("s3:GetObject", "archive/*"), ("s3:PutObject", "results/*")),
        lambda p, n, o: s3(p).upload_part_copy(
            Bucket=o["target"]["Bucket"],
            Key=o["target"]["Key"],
            UploadId=o["target"]["UploadId"],
            PartNumber=1,
            CopySource={"Bucket": o["source"]["Bucket"], "Key": o["source"]["Key"]},
        ),
        lambda admin, n: {
            "source": archive_object(admin, n),
            "target": {
                "Bucket": (bucket := admin.config.gas.results_bucket),
                "Key": (key := unique()),
                "UploadId": admin.client("s3").create_multipart_upload(Bucket=bucket, Key=key)[
                    "UploadId"
                ],
            },
        },
    ),
    "s3 DeleteObject": Need(
        (("s3:DeleteObject", "archive/*"),),
        lambda p, n, o: s3(p).delete_object(Bucket=o["Bucket"], Key=o["Key"]),
        archive_object,
    ),
    "s3 DeleteObject If-Match": Need(
        (("s3:DeleteObject", "results/*"), ("s3:GetObject", "results/*")),
        lambda p, n, o: s3(p).delete_object(Bucket=o["Bucket"], Key=o["Key"], IfMatch=o["ETag"]),
        results_object,
    ),
    "s3 RestoreObject": Need(
        (("s3:RestoreObject", "archive/*"),),
        lambda p, n, o: s3(p).restore_object(
            Bucket=o["Bucket"],
            Key=o["Key"],
            RestoreRequest={"Days": 1, "GlacierJobParameters": {"Tier": "Standard"}},
        ),
        lambda admin, n: archive_object(admin, n, StorageClass="GLACIER"),
    ),
    "s3 ListObjectsV2": Need(
        (("s3:ListBucket", "archive"),),
        lambda p, n, o: s3(p).list_objects_v2(
            Bucket=p.config.gas.archive_bucket, Prefix=p.config.gas.archive_prefix
        ),
    ),
    # SSE-KMS with a customer managed key: S3 asks KMS on the caller's behalf
    "s3 PutObject, SSE-KMS": Need(
        (("s3:PutObject", "results/*"), ("kms:GenerateDataKey", "key")),
        lambda p, n, o: s3(p).put_object(
            Bucket=p.config.gas.results_bucket,
            Key=unique(),
            Body=b"x",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=n["key"],
        ),
    ),
    "s3 GetObject, SSE-KMS": Need(
        (("s3:GetObject", "results/*"), ("kms:Decrypt", "key")),
        lambda p, n, o: s3(p).get_object(Bucket=o["Bucket"], Key=o["Key"]),
        kms_object,
    ),
    "s3 CopyObject, SSE-KMS": Need(
        (
            ("s3:GetObject", "results/*"),
            ("s3:PutObject", "archive/*"),
            ("kms:Decrypt", "key"),
            ("kms:GenerateDataKey", "key"),
        ),
        lambda p, n, o: copy(
            p,
            o,
            p.config.gas.archive_bucket,
            f"{p.config.gas.archive_prefix}{unique()}",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=n["key"],
        ),
        kms_object,
    ),
    "s3 multipart upload, SSE-KMS": Need(
        (("s3:PutObject", "results/*"), ("kms:GenerateDataKey", "key"), ("kms:Decrypt", "key")),
        lambda p, n, o: multipart_upload(
            p,
            p.config.gas.results_bucket,
            unique(),
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=n["key"],
        ),
    ),
    # DynamoDB: a transaction is authorised item by item, a batch table by table
    "dynamodb GetItem": Need(
        (("dynamodb:GetItem", "annotations"),),
        lambda p, n, o: dynamodb(p).get_item(TableName=table(p, "annotations"), Key=JOB),
    ),
    "dynamodb BatchGetItem": Need(
        (("dynamodb:BatchGetItem", "annotations"), ("dynamodb:BatchGetItem", "users")),
        lambda p, n, o: dynamodb(p).batch_get_item(
            RequestItems={
                table(p, "annotations"): {"Keys": [JOB]},
                table(p, "users"): {"Keys": [USER]},
            }
        ),
    ),
    "dynamodb UpdateItem": Need(
        (("dynamodb:UpdateItem", "annotations"),),
        lambda p, n, o: dynamodb(p).update_item(
            TableName=table(p, "annotations"),
            Key=JOB,
            UpdateExpression="SET notified_time = :t",
            ExpressionAttributeValues={":t": {"N": "1"}},
        ),
    ),
    "dynamodb TransactWriteItems": Need(
        (("dynamodb:UpdateItem", "annotations"), ("dynamodb:ConditionCheckItem", "users")),
        lambda p, n, o: dynamodb(p).transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table(p, "annotations"),
                        "Key": JOB,
                        "UpdateExpression": "SET notified_time = :t",
                        "ExpressionAttributeValues": {":t": {"N": "1"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": table(p, "users"),
                        "Key": USER,
                        "ConditionExpression": "attribute_not_exists(user_id)",
                    }
                },
            ]
        ),
    ),
    "dynamodb Query (index)": Need(
        (("dynamodb:Query", "index"),),
        lambda p, n, o: dynamodb(p).query(
            TableName=table(p, "annotations"),
            IndexName=USER_INDEX,
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": "contract-user"}},
        ),
    ),
    "dynamodb Scan": Need(
        (("dynamodb:Scan", "annotations"),),
        lambda p, n, o: dynamodb(p).scan(TableName=table(p, "annotations"), Limit=1),
    ),
    "dynamodb BatchWriteItem": Need(
        (("dynamodb:BatchWriteItem", "annotations"),),
        lambda p, n, o: dynamodb(p).batch_write_item(
            RequestItems={table(p, "annotations"): [{"PutRequest": {"Item": JOB}}]}
        ),
    ),
    # SQS: a batch operation is authorised by the action of its single form
    "sqs GetQueueUrl": Need(
        (("sqs:GetQueueUrl", "queue"),),
        lambda p, n, o: sqs(p).get_queue_url(QueueName=n["queue"].rpartition(":")[2]),
    ),
    "sqs GetQueueAttributes": Need(
        (("sqs:GetQueueAttributes", "queue"),),
        lambda p, n, o: sqs(p).get_queue_attributes(
            QueueUrl=n["queue-url"], AttributeNames=["All"]
        ),
    ),
    "sqs ReceiveMessage": Need(
        (("sqs:ReceiveMessage", "queue"),),
        lambda p, n, o: sqs(p).receive_message(QueueUrl=n["queue-url"], VisibilityTimeout=0),
    ),
    "sqs SendMessage": Need(
        (("sqs:SendMessage", "queue"),),
        lambda p, n, o: sqs(p).send_message(QueueUrl=n["queue-url"], MessageBody="x"),
    ),
    "sqs DeleteMessageBatch": Need(
        (("sqs:DeleteMessage", "queue"),),
        lambda p, n, o: sqs(p).delete_message_batch(
            QueueUrl=n["queue-url"], Entries=[{"Id": "1", "ReceiptHandle": o}]
        ),
        message,
    ),
    "sqs ChangeMessageVisibilityBatch": Need(
        (("sqs:ChangeMessageVisibility", "queue"),),
        lambda p, n, o: sqs(p).change_message_visibility_batch(
            QueueUrl=n["queue-url"],
            Entries=[{"Id": "1", "ReceiptHandle": o, "VisibilityTimeout": 0}],
        ),
        message,
    ),
    # SNS and SES: the topic, the sender's identity (its address, or its domain)
    "sns Publish": Need(
        (("sns:Publish", "topic"),),
        lambda p, n, o: p.client("sns", attempts=1).publish(TopicArn=n["topic"], Message="{}"),
    ),
    "ses SendEmail": Need(
        (("ses:SendEmail", "identity"),),
        lambda p, n, o: p.client("ses", attempts=1).send_email(
            Source=p.config.notify.sender,
            Destination={"ToAddresses": ["success@simulator.amazonses.com"]},
            Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
        ),
    ),
    "sts GetCallerIdentity": Need((), lambda p, n, o: p.client("sts").get_caller_identity()),
    # Glacier: every call on the vault it names
    "glacier InitiateMultipartUpload": Need(
        (("glacier:InitiateMultipartUpload", "vault"),),
        lambda p, n, o: glacier(p).initiate_multipart_upload(vaultName=p.vault, partSize=str(MIB)),
        needs_vault,
        abort_upload,
    ),
    "glacier UploadMultipartPart": Need(
        (("glacier:UploadMultipartPart", "vault"),),
        lambda p, n, o: glacier(p).upload_multipart_part(
            vaultName=p.vault, uploadId=o, range="bytes 0-6/*", body=b"archive"
        ),
        vault_upload,
    ),
    "glacier CompleteMultipartUpload": Need(
        (("glacier:CompleteMultipartUpload", "vault"),),
        lambda p, n, o: glacier(p).complete_multipart_upload(
            vaultName=p.vault, uploadId=o[0], archiveSize="7", checksum=o[1]
        ),
        vault_part,
        delete_archive,
    ),
    "glacier AbortMultipartUpload": Need(
        (("glacier:AbortMultipartUpload", "vault"),),
        lambda p, n, o: glacier(p).abort_multipart_upload(vaultName=p.vault, uploadId=o),
        vault_upload,
    ),
    "glacier DeleteArchive": Need(
        (("glacier:DeleteArchive", "vault"),),
        lambda p, n, o: glacier(p).delete_archive(vaultName=p.vault, archiveId=o),
        archive,
    ),
    "glacier InitiateJob": Need(
        (("glacier:InitiateJob", "vault"),),
        lambda p, n, o: glacier(p).initiate_job(
            vaultName=p.vault,
            jobParameters={"Type": "archive-retrieval", "ArchiveId": o, "Tier": "Standard"},
        ),
        archive,
    ),
    "glacier ListJobs": Need(
        (("glacier:ListJobs", "vault"),),
        lambda p, n, o: glacier(p).list_jobs(vaultName=p.vault),
        needs_vault,
    ),
    "glacier DescribeJob": Need(
        (("glacier:DescribeJob", "vault"),),
        lambda p, n, o: glacier(p).describe_job(vaultName=p.vault, jobId=o),
        retrieval,
    ),
    "glacier GetJobOutput": Need(
        (("glacier:GetJobOutput", "vault"),),
        lambda p, n, o: glacier(p).get_job_output(vaultName=p.vault, jobId=o),
        retrieval,
    ),
}
# Rows the local stack does not reproduce (its table: docs/local-stack.md).
COPY_GAP = local_gap(
    "moto checks a copy's s3:PutObject on its target, not s3:GetObject on its source"
)
GAPS = {
    "s3 CopyObject": [COPY_GAP],
    "s3 UploadPartCopy": [COPY_GAP],
    **{
        name: [local_gap("the local stack checks no KMS permission")]
        for name, need in NEEDS.items()
        if any(action.startswith("kms:") for action, _ in need.actions)
    },
}


def policy(actions: list[tuple[str, str]], names: dict[str, Any]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [NOTHING]
        + [{"Effect": "Allow", "Action": action, "Resource": names[r]} for action, r in actions],
    }


def denied(
    need: Need, admin: Account, principal: Account, names: dict[str, Any], prepared: Any
) -> str | None:
    """The denial's code if IAM refused the call, else None (it ran, or failed for another
    reason: a condition, a missing item, an unverified sender)."""
    try:
        answer = need.call(principal, names, prepared)
    except ClientError as exc:
        return error_code(exc) if error_code(exc) in DENIED else None
    need.undo(admin, answer)
    return None


@pytest.mark.parametrize("name", [pytest.param(name, marks=GAPS.get(name, [])) for name in NEEDS])
def test_a_call_is_allowed_by_its_actions_and_denied_without_any_of_them(
    iam: Account, resources: dict[str, Any], name: str
) -> None:
    need = NEEDS[name]

    def refused(actions: tuple[tuple[str, str], ...]) -> str | None:
        """The call's denial, made by a principal allowed exactly `actions`."""
        prepared = need.prepare(iam, resources)  # first: it skips a vault call without a vault
        principal = iam.principal(policy(list(actions), resources))
        return denied(need, iam, principal, resources, prepared)

    # Given a principal allowed exactly the call's actions
    # Then the call is authorised
    assert refused(need.actions) is None
    # And a principal allowed all of them but one is denied it, whichever one is left out
    needed = [
        a for i, a in enumerate(need.actions) if refused(need.actions[:i] + need.actions[i + 1 :])
    ]
    assert needed == list(need.actions)


@local_gap("moto answers 404 whether or not the caller may list the bucket")
def test_a_missing_object_is_404_only_to_who_may_list_the_bucket(
    iam: Account, resources: dict[str, Any]
) -> None:
    bucket, key = iam.config.gas.results_bucket, unique()
    get = [("s3:GetObject", "results/*")]
    answers = []
    # When a principal that may get objects, then one that may also list the bucket, asks for
    # an object that does not exist
    for actions in (get, get + [("s3:ListBucket", "results")]):
        with pytest.raises(ClientError) as missing:
            s3(iam.principal(policy(actions, resources))).head_object(Bucket=bucket, Key=key)
        answers.append(missing.value.response["ResponseMetadata"]["HTTPStatusCode"])
    # Then the first is told 403 (it may not know what the bucket holds), the second 404
    assert answers == [403, 404]
