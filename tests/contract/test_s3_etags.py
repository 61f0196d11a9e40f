"""S3 ETags: an MD5 (or MD5 of MD5s) unencrypted and under SSE-S3; not one under SSE-KMS,
DSSE-KMS or SSE-C, and new for every write."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from tests.contract.account import Account, unique

MIB = 1024 * 1024
# A customer-provided key (SSE-C): S3 keeps only its MD5.
CUSTOMER_KEY = os.urandom(32)
ENCRYPTIONS: dict[str, dict[str, Any]] = {
    "sse-kms": {"ServerSideEncryption": "aws:kms"},
    "dsse-kms": {"ServerSideEncryption": "aws:kms:dsse"},
    "sse-c": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY},
}


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def upload_in_parts(
    account: Account, bucket: str, key: str, parts: list[bytes], **extra: Any
) -> str:
    """A multipart upload of `parts`, in order: the object's ETag."""
    s3 = account.client("s3")
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    # SSE-C: every request of the upload carries the key
    sse_c = {k: v for k, v in extra.items() if k.startswith("SSECustomer")}
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=body, **sse_c
            )["ETag"],
        }
        for n, body in enumerate(parts, start=1)
    ]
    return str(
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}, **sse_c
        )["ETag"]
    )


@pytest.mark.parametrize("made_by", ["PutObject", "CopyObject"])
def test_the_etag_of_an_object_made_in_one_request_is_the_md5_of_its_bytes(
    account: Account, made_by: str
) -> None:
    # Given the results bucket, with AWS's default encryption (SSE-S3)
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    data, key = os.urandom(100_000), unique()
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    # When an object is made in one request: put, or copied in one request
    if made_by == "CopyObject":
        key, source = unique(), key
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})
    # Then its ETag is the MD5 of its bytes
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == md5_etag(data)


def test_the_etag_of_a_multipart_object_is_the_md5_of_its_parts_md5s(account: Account) -> None:
    # Given two parts (5 MiB, S3's smallest but the last, and a small last one)
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    # When they are uploaded as one object in two parts
    key = unique()
    etag = upload_in_parts(account, bucket, key, parts)
    # Then its ETag is the MD5 of the parts' MD5s, with the number of parts
    assert etag == multipart_etag(parts)
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == etag


@pytest.mark.parametrize("encryption", ENCRYPTIONS)
def test_an_encrypted_objects_etag_is_no_md5_and_new_for_every_write(
    account: Account, encryption: str
) -> None:
    # Given the same bytes written twice under SSE-KMS, DSSE-KMS or SSE-C
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    data = os.urandom(100_000)
    etags = [
        s3.put_object(Bucket=bucket, Key=unique(), Body=data, **ENCRYPTIONS[encryption])["ETag"]
        for _ in range(2)
    ]
    # Then neither ETag is the MD5 of the bytes, and the two differ
    assert md5_etag(data) not in etags
    assert etags[0] != etags[1]


def test_an_encrypted_multipart_objects_etag_is_no_md5_of_md5s(account: Account) -> None:
    # Given two parts uploaded as one object under SSE-KMS, twice
    bucket = account.config.gas.results_bucket
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    extra = ENCRYPTIONS["sse-kms"]
    etags = [upload_in_parts(account, bucket, unique(), parts, **extra) for _ in range(2)]
    # Then the ETags keep their number of parts, but are not the MD5 of the parts' MD5s
    assert all(etag.endswith('-2"') for etag in etags)
    assert multipart_etag(parts) not in etags
    assert etags[0] != etags[1]


def test_a_bucket_encrypting_with_kms_by_default_gives_no_md5_etags(account: Account) -> None:
    # Given a bucket whose default encryption is SSE-KMS (what many organisations set; the
    # local stack's buckets with [local] bucket_encryption = aws:kms)
    s3, bucket = account.client("s3"), account.bucket()
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    # When an object is put without asking for any encryption
    data, key = os.urandom(100_000), unique()
    response = s3.put_object(Bucket=bucket, Key=key, Body=data)
    # Then it is encrypted with KMS, and its ETag is not the MD5 of its bytes
    assert response["ServerSideEncryption"] == "aws:kms"
    assert response["ETag"] != md5_etag(data)
