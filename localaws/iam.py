"""IAM checks of the local stack closer to AWS's, on top of moto 5.2.5's IAM-like access control.

moto checks requests against the caller's IAM policies only once enforcement is on
(``INITIAL_NO_AUTH_ACTION_COUNT``; `enforce` switches it on in a running server, so that the
stack's resources and IAM users can be created first). Its checks are thinner than AWS's;
``install()`` closes the gaps a least-privilege policy meets:

- Resources: moto names the resource of a request only for S3, IAM, STS and SQS (by
  ``QueueUrl``, of an existing queue). Every DynamoDB, SNS, SES and Glacier request, and
  SQS's GetQueueUrl and CreateQueue, was checked against ``*``, which a statement naming a
  table, topic, identity, vault or queue never matches: such a policy was denied everything.
  They are now checked against what AWS checks: the table (the index, for a Query or Scan
  of one), the topic (the subscription, for Unsubscribe), the sender's identity, the vault,
  the queue named.
- DynamoDB's batches are authorised on each table they name (moto checked them against
  ``*``), and a transaction by each item's own action on its table (UpdateItem,
  ConditionCheckItem, …), as in AWS.
- Actions: SQS's batch operations are authorised by their single-message action
  (DeleteMessageBatch by ``sqs:DeleteMessage``, …) and SNS PublishBatch by ``sns:Publish``,
  as in AWS; moto asked for ``sqs:DeleteMessageBatch``, an action IAM does not have. S3's
  DeleteObjects needs ``s3:DeleteObject`` on each key it names, as in AWS, where moto
  checked it on the bucket (which a policy granting a prefix never matches); unlike AWS, one
  key refused refuses them all. A DeleteObject on condition of an ETag (``If-Match``) needs
  ``s3:GetObject`` on the key as well, as AWS documents; moto asked for ``s3:DeleteObject``
  alone.
- Signatures: a request with neither body nor form (Glacier's GETs and DELETEs) was checked
  as if its headers were its body, so it always failed with SignatureDoesNotMatch.
- Errors: for SQS, DynamoDB and Glacier (JSON protocols) moto answered a denial or an
  unknown key in XML, which botocore cannot read (error code "403"); they are now JSON, a
  denial AWS's ``AccessDeniedException``. Every denial names the resource, as AWS's does.

Left as moto does it: ``sts:GetCallerIdentity`` is always allowed (as in AWS, which needs no
permission for it); conditions in identity policies are not evaluated: taken as met.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlparse
from xml.etree import ElementTree

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import (
    AccessDeniedError,
    InvalidClientTokenIdError,
    JsonRESTError,
    SignatureDoesNotMatchError,
)
from moto.dynamodb.responses import DynamoHandler
from moto.glacier.responses import GlacierResponse
from moto.iam.access_control import IAMRequest
from moto.s3.responses import S3Response
from moto.ses.responses import EmailResponse
from moto.sns.responses import SNSResponse
from moto.sqs.responses import SQSResponse
from moto.utilities.utils import get_partition

from util.aws import Aws

__all__ = ["ADMINISTRATOR", "enforce", "grant", "install"]

# Allows everything, as AWS's AdministratorAccess managed policy does.
ADMINISTRATOR = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}

# API operations whose IAM action has another name.
IAM_ACTIONS = {
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sns:PublishBatch": "sns:Publish",
}
# DynamoDB operations authorised per table, and the action of each kind of transaction item.
_MULTI_TABLE = frozenset(
    {
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:TransactGetItems",
        "dynamodb:TransactWriteItems",
    }
)
_TRANSACT_ACTIONS = {
    "Get": "GetItem",
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
# Services botocore reads errors of as JSON.
JSON_SERVICES = frozenset({"sqs", "dynamodb", "glacier"})
_VAULT_PATH = re.compile(r"/[^/]+/vaults/([^/]+)")


def _arn(response: Any, service: str, resource: str, account: str | None = None) -> str:
    return (
        f"arn:{response.partition}:{service}:{response.region}:"
        f"{account or response.current_account}:{resource}"
    )


def _sqs_resource(response: SQSResponse) -> str | None:
    url = response._get_param("QueueUrl")
    if url and "/" in url:
        account, name = urlparse(url).path.rstrip("/").split("/")[-2:]
        return _arn(response, "sqs", name, account)
    name = url or response._get_param("QueueName")
    owner = response._get_param("QueueOwnerAWSAccountId")
    return _arn(response, "sqs", name, owner) if name else None


def _dynamodb_resource(response: DynamoHandler) -> str | None:
    table = response._get_param("TableName")
    if not table:
        return None
    arn = table if table.startswith("arn:") else _arn(response, "dynamodb", f"table/{table}")
    index = response._get_param("IndexName")
    return f"{arn}/index/{index}" if index else arn


def _sns_resource(response: SNSResponse) -> str | None:
    if response._get_action() == "Unsubscribe":
        return response._get_param("SubscriptionArn")
    return response._get_param("TopicArn") or response._get_param("TargetArn")


def _ses_resource(response: EmailResponse) -> str | None:
    address = parseaddr(response._get_param("Source") or "")[1]
    return _arn(response, "ses", f"identity/{address}") if address else None


def _glacier_resource(response: GlacierResponse) -> str | None:
    match = _VAULT_PATH.match(response.path)
    return _arn(response, "glacier", f"vaults/{match[1]}") if match else None


def _enforcing() -> bool:
    """Whether moto now authorises requests (it counts those it let through unchecked)."""
    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


# moto's own resource hooks, kept for requests ours do not recognise.
_MOTO_RESOURCE_HOOKS: dict[type, Callable[[Any], str]] = {
    cls: cls.__dict__["_determine_resource"]
    for cls in (SQSResponse, DynamoHandler, SNSResponse, EmailResponse, GlacierResponse)
    if "_determine_resource" in cls.__dict__
}


def _resource_hook(
    resolve: Callable[[Any], str | None], moto_default: Callable[[Any], str] | None
) -> Callable[[Any], str]:
    """A `_determine_resource` for moto's call_action: AWS's resource, while enforcing."""

    def determine_resource(response: Any) -> str:
        if not _enforcing():
            return "*"  # moto does not look at it
        return resolve(response) or (moto_default(response) if moto_default else "*")

    return determine_resource


_check_action_permitted = IAMRequest.check_action_permitted
_create_aws_request = IAMRequest._create_aws_request
_raise_invalid_access_key = IAMRequest._raise_invalid_access_key
_raise_signature_does_not_match = IAMRequest._raise_signature_does_not_match


def _check_with_iam_action(request: IAMRequest, resource: str) -> None:
    for action, each in _authorisations(
        request, IAM_ACTIONS.get(request._action, request._action), resource
    ):
        request._action = action
        request._gas_resource = each  # type: ignore[attr-defined]  # for the denial's message
        _check_action_permitted(request, each)


def _authorisations(request: IAMRequest, action: str, resource: str) -> list[tuple[str, str]]:
    """What AWS authorises a request by: its action on its resource, but for DynamoDB's
    batches (their action on each table named) and transactions (each item's own action,
    ConditionCheckItem for a ConditionCheck, on its table)."""
    if action not in _MULTI_TABLE:
        return [(action, resource)]
    body = json.loads(request._body or b"{}")
    region = request._region

    def table(name: str) -> str:
        if name.startswith("arn:"):
            return name
        return f"arn:{get_partition(region)}:dynamodb:{region}:{request.account_id}:table/{name}"

    if action in ("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"):
        return [(action, table(name)) for name in body.get("RequestItems", {})]
    return [
        (f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table(details["TableName"]))
        for item in body.get("TransactItems", [])
        for kind, details in item.items()
    ]


def _sign_what_was_sent(request: IAMRequest) -> Any:
    aws_request = _create_aws_request(request)
    content_type = request._headers.get("Content-Type", "")
    if not request._body and not content_type.startswith("application/x-www-form-urlencoded"):
        aws_request.data = b""  # the client signed an empty body, not moto's header dict
    return aws_request


_authorize_s3 = S3Response._authenticate_and_authorize_s3_action


def _authorize_s3_per_key(
    response: S3Response, bucket_name: str | None = None, key_name: str | None = None
) -> None:
    if _enforcing() and key_name is None and response.is_delete_keys():
        # <Delete><Object><Key>…</Key></Object>…</Delete>, in S3's XML namespace
        for element in ElementTree.fromstring(response.body).iter():
            if element.tag.rpartition("}")[2] == "Key":
                _authorize_s3(response, bucket_name, element.text or "")
        return
    _authorize_s3(response, bucket_name, key_name)
    if _enforcing() and _deletes_on_etag(response, key_name):
        response.data["Action"] = "GetObject"
        try:
            _authorize_s3(response, bucket_name, key_name)
        finally:
            response.data["Action"] = "DeleteObject"


def _deletes_on_etag(response: S3Response, key_name: str | None) -> bool:
    """A DeleteObject on condition of an ETag (``If-Match`` other than ``*``): AWS
    authorises it by ``s3:GetObject`` as well as ``s3:DeleteObject``."""
    return (
        key_name is not None
        and response.data.get("Action") == "DeleteObject"
        and response.headers.get("If-Match", "*") != "*"
    )


class _JsonAccessDenied(JsonRESTError):
    code = 403


def _in_json(raise_error: Callable[..., None]) -> Callable[..., None]:
    """moto's error for a request, as JSON if the service speaks JSON."""

    def raise_in_json(request: IAMRequest, *args: Any) -> None:
        try:
            raise_error(request, *args)
        except (InvalidClientTokenIdError, SignatureDoesNotMatchError) as exc:
            if request._service in JSON_SERVICES:
                raise exc.to_json() from None
            raise

    return raise_in_json


def _deny(request: IAMRequest) -> None:
    action = f"{request._action} on resource: {getattr(request, '_gas_resource', '*')}"
    if request._service in JSON_SERVICES:
        raise _JsonAccessDenied(
            "AccessDeniedException",
            f"User: {request._access_key.arn} is not authorized to perform: {action}",
        )
    raise AccessDeniedError(user_arn=request._access_key.arn, action=action)


def install() -> None:
    """Patch moto's access control in place (see the module docstring); repeating is harmless.

    Until `enforce` is called nothing changes: moto authorises no request at all.
    """
    hooks = [
        (SQSResponse, _sqs_resource),
        (DynamoHandler, _dynamodb_resource),
        (SNSResponse, _sns_resource),
        (EmailResponse, _ses_resource),
        (GlacierResponse, _glacier_resource),
    ]
    for response_class, resolve in hooks:
        moto_default = _MOTO_RESOURCE_HOOKS.get(response_class)
        hook = _resource_hook(resolve, moto_default)  # type: ignore[arg-type]
        response_class._determine_resource = hook  # type: ignore[attr-defined]
    # moto's own methods, replaced: mypy rightly says they are methods.
    IAMRequest.check_action_permitted = _check_with_iam_action  # type: ignore[method-assign,assignment]
    IAMRequest._create_aws_request = _sign_what_was_sent  # type: ignore[method-assign,assignment]
    IAMRequest._raise_access_denied = _deny  # type: ignore[method-assign,assignment]
    IAMRequest._raise_invalid_access_key = _in_json(  # type: ignore[method-assign]
        _raise_invalid_access_key
    )
    IAMRequest._raise_signature_does_not_match = _in_json(  # type: ignore[method-assign]
        _raise_signature_does_not_match
    )
    S3Response._authenticate_and_authorize_s3_action = _authorize_s3_per_key  # type: ignore[method-assign,assignment]


def grant(aws: Aws, user: str, policy: dict[str, Any]) -> dict[str, str]:
    """An IAM user with `policy` inline; its access key as AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, ready to be a process's environment."""
    iam = aws.client("iam")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def enforce(endpoint_url: str) -> None:
    """From now on, a server authorises every request against the caller's IAM policies.

    moto's own switch (``/moto-api/reset-auth``, what ``set_initial_no_auth_action_count``
    uses in server mode): the number of requests still let through unchecked becomes 0.
    """
    request = urllib.request.Request(
        f"{endpoint_url.rstrip('/')}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
