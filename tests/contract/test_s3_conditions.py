"""Conditional S3 requests: copies pinned to their source's ETag (x-amz-copy-source-if-match),
CopyObject onto a free key only (If-None-Match: *), DeleteObject of one ETag only (If-Match)."""

from __future__ import annotations

import os

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.contract.account import Account, error_code, status, unique

MIB = 1024 * 1024


def exists(account: Account, bucket: str, key: str) -> bool:
    listing = account.client("s3").list_objects_v2(Bucket=bucket, Prefix=key)
    return any(o["Key"] == key for o in listing.get("Contents", []))


def precondition_failed(excinfo: pytest.ExceptionInfo[ClientError]) -> bool:
    return (error_code(excinfo.value), status(excinfo.value)) == ("PreconditionFailed", 412)


@pytest.mark.parametrize("request_kind", ["CopyObject", "UploadPartCopy"])
def test_a_copy_pinned_to_an_etag_its_source_no_longer_has_is_refused(
    account: Account, request_kind: str
) -> None:
    # Given a result whose ETag was read, then replaced by other bytes
    s3, bucket = account.client("s3", attempts=1), account.config.gas.results_bucket
    source, target = unique(), unique()
    read = s3.put_object(Bucket=bucket, Key=source, Body=os.urandom(1000))["ETag"]
    s3.put_object(Bucket=bucket, Key=source, Body=os.urandom(1000))
    copy_source = {"Bucket": bucket, "Key": source}
    # When it is copied pinned to the ETag read, in one request or as a part
    with pytest.raises(ClientError) as refused:
        if request_kind == "CopyObject":
            s3.copy_object(
                Bucket=bucket, Key=target, CopySource=copy_source, CopySourceIfMatch=read
            )
        else:
            upload = s3.create_multipart_upload(Bucket=bucket, Key=target)["UploadId"]
            s3.upload_part_copy(
                Bucket=bucket,
                Key=target,
                UploadId=upload,
                PartNumber=1,
                CopySource=copy_source,
                CopySourceIfMatch=read,
            )
    # Then S3 refuses it, 412, and nothing is copied
    assert precondition_failed(refused)
    assert not exists(account, bucket, target)


@pytest.mark.parametrize("parts", [1, 2], ids=["one request", "two parts"])
def test_a_copy_pinned_to_its_sources_etag_is_made(account: Account, parts: int) -> None:
    # Given a 6 MiB result and its ETag
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    data, source, target = os.urandom(6 * MIB), unique(), unique()
    etag = s3.put_object(Bucket=bucket, Key=source, Body=data)["ETag"]
    # When it is copied pinned to that ETag: in one request, or as s3transfer copies in
    # 5 MiB parts (every UploadPartCopy pinned), as the S3 back end does
    threshold = 5 * MIB if parts == 2 else 8 * MIB
    s3.copy(
        {"Bucket": bucket, "Key": source},
        bucket,
        target,
        {"CopySourceIfMatch": etag},
        Config=TransferConfig(multipart_threshold=threshold, multipart_chunksize=5 * MIB),
    )
    # Then the copy is made, in that many parts, with the same bytes
    copied = s3.head_object(Bucket=bucket, Key=target)["ETag"]
    assert copied.endswith('-2"') if parts == 2 else "-" not in copied
    assert s3.get_object(Bucket=bucket, Key=target)["Body"].read() == data


def test_a_copy_onto_a_key_that_holds_an_object_with_if_none_match_is_refused(
    account: Account,
) -> None:
    # Given an archive already at its key, and a result to archive there
    s3, bucket = account.client("s3", attempts=1), account.config.gas.archive_bucket
    prefix = account.config.gas.archive_prefix
    archive, result = f"{prefix}{unique()}", f"{prefix}{unique()}"
    s3.put_object(Bucket=bucket, Key=archive, Body=b"the archive")
    s3.put_object(Bucket=bucket, Key=result, Body=b"a copy made again")
    # When the result is copied onto the archive's key only if the key is free
    with pytest.raises(ClientError) as refused:
        s3.copy_object(
            Bucket=bucket,
            Key=archive,
            CopySource={"Bucket": bucket, "Key": result},
            IfNoneMatch="*",
        )
    # Then S3 refuses it, 412, and the archive is as it was
    assert precondition_failed(refused)
    assert s3.get_object(Bucket=bucket, Key=archive)["Body"].read() == b"the archive"
    # And onto a free key the same copy is made
    free = f"{prefix}{unique()}"
    s3.copy_object(
        Bucket=bucket, Key=free, CopySource={"Bucket": bucket, "Key": result}, IfNoneMatch="*"
    )
    assert s3.get_object(Bucket=bucket, Key=free)["Body"].read() == b"a copy made again"


def test_a_delete_on_condition_of_an_etag_deletes_only_that_object(account: Account) -> None:
    # Given a result archived with its ETag, then replaced at its key by a copy put back
    s3, bucket, key = account.client("s3", attempts=1), account.config.gas.results_bucket, unique()
    archived = s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(1000))["ETag"]
    put_back = os.urandom(1000)
    current = s3.put_object(Bucket=bucket, Key=key, Body=put_back)["ETag"]
    # When a late archive message deletes the key on condition of the archived ETag
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=key, IfMatch=archived)
    # Then S3 refuses, 412, and the copy put back stays
    assert precondition_failed(refused)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == put_back
    # And on condition of the current ETag the delete is made
    s3.delete_object(Bucket=bucket, Key=key, IfMatch=current)
    assert not exists(account, bucket, key)
