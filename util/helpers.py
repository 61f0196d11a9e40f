"""Job lookup and error handling, as every utility does it: the annotations and users tables
(the only sources of truth for where a job's data lives and who may ask), conditional writes
whose failed condition is looked at, never believed (`Write`), and the errors that make a
message invalid or a write refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.table import BatchWriter
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from util.aws import Aws
from util.schema import (
    ARCHIVE_ID,
    FREE,
    JOB_ID,
    PREMIUM,
    USER_EMAIL,
    USER_ID,
    USER_INDEX,
    USER_NAME,
    USER_ROLE,
)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class InvalidMessage(Exception):
    """The message can never succeed as sent; its text is the reason given with it."""


@dataclass(frozen=True)
class Write:
    """The answer to a conditional write: applied, or the item as it is now.

    A write whose answer is lost is retried by botocore, and the retry then fails its condition
    against its own first attempt. So a failed condition means "look at what is there", never
    "another writer won": `item` is the item as the failed attempt found it (DynamoDB's
    ``ReturnValuesOnConditionCheckFailure=ALL_OLD``; empty if there is no item).
    """

    applied: bool
    item: dict[str, Any]

    def holds(self, attribute: str, value: Any) -> bool:
        """Applied, or the item already holds what this write sets (its own first attempt)."""
        return self.applied or self.item.get(attribute) == value


def _from_dynamo(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _to_dynamo(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items()}


class Annotations:
    """The annotations table: the only source of truth for where a job's data lives."""

    def __init__(self, aws: Aws, table: str):
        self.aws = aws
        self.dynamodb = aws.client("dynamodb")
        self.table = table

    def get(self, job_id: str) -> dict[str, Any] | None:
        response = self.dynamodb.get_item(
            TableName=self.table, Key=_to_dynamo({JOB_ID: job_id}), ConsistentRead=True
        )
        return _from_dynamo(response["Item"]) if "Item" in response else None

    def get_owned(self, job_id: str, user_id: str) -> dict[str, Any]:
        """The job, if it exists and is the user's; InvalidMessage (forged or stale) if not."""
        return _owned(self.get(job_id), job_id, user_id)

    def get_owned_with_user(
        self, job_id: str, user_id: str, users: Users
    ) -> tuple[dict[str, Any], User | None]:
        """`get_owned`, and the user (None if unknown), both read in one BatchGetItem."""
        keys = {
            self.table: _to_dynamo({JOB_ID: job_id}),
            users.table: _to_dynamo({USER_ID: user_id}),
        }
        response = self.dynamodb.batch_get_item(
            RequestItems={t: {"Keys": [k], "ConsistentRead": True} for t, k in keys.items()}
        )
        found = {t: _from_dynamo(items[0]) for t, items in response["Responses"].items() if items}
        # What DynamoDB left unprocessed (throttling) is read on its own.
        unprocessed = response.get("UnprocessedKeys") or {}
        job = self.get(job_id) if self.table in unprocessed else found.get(self.table)
        if users.table in unprocessed:
            user = users.get(user_id)
        else:
            user = _user(found[users.table]) if users.table in found else None
        return _owned(job, job_id, user_id), user

    def put(self, item: Mapping[str, Any]) -> None:
        self.dynamodb.put_item(TableName=self.table, Item=_to_dynamo(item))

    def put_all(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Put items 25 to a BatchWriteItem; boto3's batch writer sends again whatever
        DynamoDB leaves unprocessed. It writes through this table's client: a boto3 resource
        would make a client for every call."""
        with BatchWriter(self.table, self.dynamodb) as batch:
            for item in items:
                batch.put_item(_to_dynamo(item))

    def update_if(
        self,
        job_id: str,
        update: str,
        condition: str,
        names: Mapping[str, str],
        values: Mapping[str, Any] | None = None,
        while_free: tuple[Users, str] | None = None,
    ) -> Write:
        """Apply `update` to an existing item if `condition` holds (see `Write`).

        `names` and `values` may hold more than the expressions use (DynamoDB refuses
        unused ones, so they are left out): callers can share one table of names.

        `while_free` (the users, a user id): only while that user is free, checked in the
        same transaction; UserNotFree if the item's condition held but the user's did not.
        """
        condition = f"attribute_exists(#job_id) AND ({condition})"
        used = set(re.findall(r"[#:]\w+", update + " " + condition))
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": _to_dynamo({JOB_ID: job_id}),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {
                k: v for k, v in {"#job_id": JOB_ID, **names}.items() if k in used
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        values = {k: v for k, v in (values or {}).items() if k in used}
        if values:
            request["ExpressionAttributeValues"] = _to_dynamo(values)
        if while_free is not None:
            users, user_id = while_free
            return self._transact(request, users.free_check(user_id), user_id)
        try:
            self.dynamodb.update_item(**request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return Write(False, _from_dynamo(exc.response.get("Item") or {}))
            raise
        return Write(True, {})

    def _transact(self, update: dict[str, Any], check: dict[str, Any], user_id: str) -> Write:
        """The update and the user's check as one TransactWriteItems.

        The item's answer comes first: if its condition failed, the item as it is says what
        happened (our own first attempt, maybe, whatever the user is now). Any other reason
        to cancel (a conflicting transaction) is raised, to be tried again.
        """
        try:
            self.dynamodb.transact_write_items(TransactItems=[{"Update": update}, check])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            item, user = exc.response.get("CancellationReasons") or [{}, {}]
            if item.get("Code") == "ConditionalCheckFailed":
                return Write(False, _from_dynamo(item.get("Item") or {}))
            if item.get("Code") in (None, "None") and user.get("Code") == "ConditionalCheckFailed":
                raise UserNotFree(f"user {user_id} is not a free user any more") from None
            raise
        return Write(True, {})

    def scan(self, segment: int, segments: int, page_size: int) -> Iterator[dict[str, Any]]:
        """Every item of one segment of a parallel Scan, page by page (eventually consistent:
        a caller that acts on an item reads it again with `get`)."""
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=self.table,
            Segment=segment,
            TotalSegments=segments,
            PaginationConfig={"PageSize": page_size},
        )
        for page in pages:
            yield from map(_from_dynamo, page["Items"])

    def having(
        self, attribute: str, projection: tuple[str, ...], page_size: int
    ) -> Iterator[dict[str, Any]]:
        """The `projection` of every item that has `attribute` (a filtered Scan: it reads
        the whole table)."""
        names = {f"#a{i}": name for i, name in enumerate((attribute, *projection))}
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=self.table,
            FilterExpression="attribute_exists(#a0)",
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
            PaginationConfig={"PageSize": page_size},
        )
        for page in pages:
            yield from map(_from_dynamo, page["Items"])

    def archived_results(self, user_id: str, page_size: int) -> Iterator[dict[str, Any]]:
        """Every job of the user whose result is in Glacier, page by page (user_id_index)."""
        pages = self.dynamodb.get_paginator("query").paginate(
            PaginationConfig={"PageSize": page_size},
            TableName=self.table,
            IndexName=USER_INDEX,
            KeyConditionExpression="#u = :u",
            FilterExpression="attribute_exists(#a)",
            ExpressionAttributeNames={"#u": USER_ID, "#a": ARCHIVE_ID},
            ExpressionAttributeValues=_to_dynamo({":u": user_id}),
        )
        for page in pages:
            yield from map(_from_dynamo, page["Items"])


def _owned(job: dict[str, Any] | None, job_id: str, user_id: str) -> dict[str, Any]:
    if job is None:
        raise InvalidMessage(f"unknown job {job_id}")
    if job.get(USER_ID) != user_id:
        raise InvalidMessage(f"user {user_id} does not own job {job_id}")
    return job


class UserNotFree(Exception):
    """A write made only while its user is free found the user premium, or gone."""


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    email: str
    role: str

    @property
    def is_premium(self) -> bool:
        return self.role == PREMIUM


class Users:
    """Who is free or premium, and their address: a DynamoDB table. Archive reads a user
    with the job (`Annotations.get_owned_with_user`) and records an archive only while the
    user is free (`free_check`, in the same transaction): both need the users in DynamoDB."""

    def __init__(self, aws: Aws, table: str):
        self.dynamodb = aws.client("dynamodb")
        self.table = table

    def get(self, user_id: str) -> User | None:
        response = self.dynamodb.get_item(
            TableName=self.table, Key=_to_dynamo({USER_ID: user_id}), ConsistentRead=True
        )
        return _user(_from_dynamo(response["Item"])) if "Item" in response else None

    def free_check(self, user_id: str) -> dict[str, Any]:
        """A TransactWriteItems ConditionCheck: the user exists and is not premium."""
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": _to_dynamo({USER_ID: user_id}),
                "ConditionExpression": "attribute_exists(#user) AND #role <> :premium",
                "ExpressionAttributeNames": {"#user": USER_ID, "#role": USER_ROLE},
                "ExpressionAttributeValues": _to_dynamo({":premium": PREMIUM}),
            }
        }

    def all(self, page_size: int) -> Iterator[User]:
        """Every user, page by page."""
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=self.table, PaginationConfig={"PageSize": page_size}
        )
        for page in pages:
            yield from (_user(_from_dynamo(item)) for item in page["Items"])


def _user(item: Mapping[str, Any]) -> User:
    return User(
        item[USER_ID], item.get(USER_NAME, ""), item.get(USER_EMAIL, ""), item.get(USER_ROLE, FREE)
    )
