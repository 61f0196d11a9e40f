"""S3's CRC64NVME of copies: asked for on CopyObject (x-amz-checksum-algorithm) and on a copy in
parts, a full-object checksum whatever the part layout and the encryption, read back with
HeadObject's ChecksumMode."""

from __future__ import annotations

import base64
import os
from typing import Any

from boto3.s3.transfer import TransferConfig

from tests.contract.account import Account, local_gap, unique

MIB = 1024 * 1024
CHECKSUM = "CRC64NVME"
# s3transfer copies in parts above this size (5 MiB, S3's smallest part): what the S3 back
# end's copies above 5 GiB and copies back do, here on a small object.
IN_PARTS = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)


def crc64nvme(data: bytes) -> str:
    """CRC-64/NVME (reflected polynomial 0x9A6C9329AC4BC9B5, all ones in and out), base64 of
    its big-endian bytes as S3 writes it."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x9A6C9329AC4BC9B5 if crc & 1 else 0)
    return base64.b64encode((crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")).decode()


def checksum(account: Account, bucket: str, key: str) -> tuple[str | None, str | None]:
    """HeadObject's CRC64NVME of an object, and its type."""
    head = account.client("s3").head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return head.get(f"Checksum{CHECKSUM}"), head.get("ChecksumType")


def copy(account: Account, source: str, target: str, parts: bool, **extra: Any) -> None:
    """A copy in the results bucket asking for CRC64NVME: one CopyObject, or in 5 MiB parts."""
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    arguments = {"ChecksumAlgorithm": CHECKSUM, **extra}
    if parts:
        s3.copy({"Bucket": bucket, "Key": source}, bucket, target, arguments, Config=IN_PARTS)
    else:
        s3.copy_object(
            Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source}, **arguments
        )


def test_a_copy_has_a_full_object_crc64nvme_whatever_its_parts_and_encryption(
    account: Account,
) -> None:
    # Given a result of 6 MiB, and another of the same size with other bytes
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    data, other = os.urandom(6 * MIB), os.urandom(6 * MIB)
    source, different = unique(), unique()
    s3.put_object(Bucket=bucket, Key=source, Body=data)
    s3.put_object(Bucket=bucket, Key=different, Body=other)
    # When it is copied asking for CRC64NVME: in one request, in two parts, in parts under
    # SSE-KMS; and the other result in one request
    layouts = {
        "one request": {"parts": False},
        "two parts": {"parts": True},
        "two parts, SSE-KMS": {"parts": True, "ServerSideEncryption": "aws:kms"},
    }
    copies = {name: unique() for name in layouts}
    for name, layout in layouts.items():
        copy(account, source, copies[name], **layout)
    copy(account, different, other_copy := unique(), parts=False)
    # Then every copy of the result has the same full-object checksum, and the other result's
    # copy another
    found = {name: checksum(account, bucket, key) for name, key in copies.items()}
    [(value, kind)] = set(found.values())
    assert value is not None and kind == "FULL_OBJECT", found
    assert checksum(account, bucket, other_copy)[0] not in (None, value)


@local_gap(
    "without awscrt, moto's CRC64NVME is a CRC-32 of the bytes (equal exactly when they are)"
)
def test_the_checksum_of_a_copy_is_the_crc64nvme_of_its_bytes(account: Account) -> None:
    # Given a small result
    s3, bucket = account.client("s3"), account.config.gas.results_bucket
    data, source, target = os.urandom(10_000), unique(), unique()
    s3.put_object(Bucket=bucket, Key=source, Body=data)
    # When it is copied asking for CRC64NVME
    copy(account, source, target, parts=False)
    # Then the copy's checksum is the CRC-64/NVME of its bytes
    assert checksum(account, bucket, target) == (crc64nvme(data), "FULL_OBJECT")
