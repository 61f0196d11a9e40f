"""localaws.iam's checks of S3 requests, with moto's enforcement on in process."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws, settings

from localaws import iam as iam_emulation
from localaws import s3 as s3_emulation

REGION = "us-east-1"
BUCKET = "results-bucket"


@pytest.fixture
def as_user(aws_env: None) -> Iterator[Callable[..., BaseClient]]:
    """An empty bucket, and `as_user(*actions)`: an S3 client of a new IAM user allowed those
    S3 actions on the bucket's keys (the test then switches moto's enforcement on)."""
    iam_emulation.install()
    s3_emulation.install()
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", region_name=REGION)

        def client(*actions: str) -> BaseClient:
            user = f"user{len(iam.list_users()['Users'])}"
            iam.create_user(UserName=user)
            statement = {
                "Effect": "Allow",
                "Action": list(actions),
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
            policy = {"Version": "2012-10-17", "Statement": [statement]}
            iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            return boto3.client(
                "s3",
                region_name=REGION,
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
            )

        yield client


def put(s3: BaseClient, key: str) -> str:
    return s3.put_object(Bucket=BUCKET, Key=key, Body=b"result")["ETag"]


def test_a_delete_on_condition_of_an_etag_needs_s3_get_object_as_well(
    as_user: Callable[..., BaseClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two results, and users allowed to put and delete them, one of them to read too
    writer = as_user("s3:PutObject")
    deleter = as_user("s3:DeleteObject")
    reader_deleter = as_user("s3:DeleteObject", "s3:GetObject")
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # enforcement on
    etags = {key: put(writer, key) for key in ("a", "b")}
    with pytest.raises(ClientError) as refused:
        deleter.get_object(Bucket=BUCKET, Key="a")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # When the user without s3:GetObject deletes one on condition of its ETag, then that is
    # refused and the result is there
    with pytest.raises(ClientError) as refused:
        deleter.delete_object(Bucket=BUCKET, Key="a", IfMatch=etags["a"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert reader_deleter.get_object(Bucket=BUCKET, Key="a")["Body"].read() == b"result"
    # When the user with both deletes it so, then it is gone
    reader_deleter.delete_object(Bucket=BUCKET, Key="a", IfMatch=etags["a"])
    with pytest.raises(ClientError) as missing:
        reader_deleter.head_object(Bucket=BUCKET, Key="a")
    assert missing.value.response["Error"]["Code"] == "404"
    # And a delete without condition needs s3:DeleteObject alone
    deleter.delete_object(Bucket=BUCKET, Key="b")
    with pytest.raises(ClientError) as missing:
        reader_deleter.head_object(Bucket=BUCKET, Key="b")
    assert missing.value.response["Error"]["Code"] == "404"
