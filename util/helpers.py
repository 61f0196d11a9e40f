"""Helpers every utility shares: AWS clients, message decoding, the annotations and users stores.

The data contracts (docs/design.md) live here once: item attribute names, job states,
user roles, and how a queue body (raw or SNS-wrapped) becomes a dict.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.table import BatchWriter
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.client import BaseClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from util.util_config import Config

# Annotations item attributes (docs/design.md) and the ones the utilities add.
JOB_ID = "job_id"
USER_ID = "user_id"
JOB_STATUS = "job_status"
INPUT_FILE_NAME = "input_file_name"
INPUTS_BUCKET = "s3_inputs_bucket"
INPUT_KEY = "s3_key_input_file"
SUBMIT_TIME = "submit_time"
COMPLETE_TIME = "complete_time"
RESULTS_BUCKET = "s3_results_bucket"
RESULT_KEY = "s3_key_result_file"
LOG_KEY = "s3_key_log_file"
ARCHIVE_ID = "results_file_archive_id"
# The ETag of the S3 result the archive holds, recorded with ARCHIVE_ID: archive deletes the S3
# copy only while it still has this ETag, so a copy thaw put back is never deleted
# (util/archive/archive.py).
RESULT_ETAG = "results_file_etag"
# A vault upload whose parts are all in, recorded before it is completed so that a worker that
# dies between completing and recording it leaves no orphan archive (util/backends.py).
ARCHIVE_UPLOAD = "results_file_archive_upload"
# A result's way back from Glacier (util/retrieval.py): the retrieval under way, and the one
# that brought it back.
RESTORE_JOB_ID = "restore_job_id"
RESTORE_TIER = "restore_tier"
RESTORE_TIME = "restore_time"
RESTORE_EXPIRES = "restore_expires"
THAW_JOB_ID = "thaw_job_id"
THAW_TIME = "thaw_time"
# When the user was e-mailed about the finished job (util/notify): set once, after the send.
NOTIFIED_TIME = "notified_time"
NOTIFY_CLAIM = "notify_claim"  # the token of the message copy that sends (and sent) the e-mail
NOTIFY_CLAIM_EXPIRES = "notify_claim_expires"
# True on a job util/ann_load.py submitted, so its --cleanup removes those and nothing else.
SYNTHETIC = "synthetic"

# The job request the web app publishes on the job-requests topic for the annotator fleet:
# these fields of the new PENDING item, as one JSON object.
JOB_REQUEST_FIELDS = (
    JOB_ID,
    USER_ID,
    INPUT_FILE_NAME,
    INPUTS_BUCKET,
    INPUT_KEY,
    SUBMIT_TIME,
    JOB_STATUS,
)

USER_INDEX = "user_id_index"  # GSI of the annotations table: user_id, submit_time

PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
PREMIUM = "premium_user"
FREE = "free_user"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


# S3's error codes for a missing object and a failed If-Match; a HEAD answer has no body, so
# botocore gives its status as the code.
S3_NOT_FOUND = ("404", "NoSuchKey")
S3_PRECONDITION_FAILED = ("412", "PreconditionFailed")


def head_object(s3: BaseClient, bucket: str, key: str, **extra: Any) -> dict[str, Any] | None:
    """The object's HeadObject (`extra`: more of its parameters), or None if there is no such
    object."""
    try:
        return s3.head_object(Bucket=bucket, Key=key, **extra)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in S3_NOT_FOUND:
            return None
        raise


def final_answers(client: BaseClient, operation: str, *codes: str) -> None:
    """Have the client raise these error codes of `operation` at their first answer.

    botocore's standard mode retries every 503; some are answers, not faults: "no Expedited
    capacity now" asked again four more times is four more refusals (and, on the vault, four
    more pages of ListJobs). A ``needs-retry`` handler that raises the modelled error ends the
    call there, before botocore's own handler schedules a retry. Safe to call again.
    """
    service = client.meta.service_model.service_id.hyphenize()

    def raise_final(response: Any = None, **_: Any) -> None:
        if response is None:  # no answer came: botocore's to retry
            return
        parsed = response[1]
        code = parsed.get("Error", {}).get("Code")
        if code in codes:
            raise client.exceptions.from_code(code)(parsed, operation)

    client.meta.events.register_first(
        f"needs-retry.{service}.{operation}", raise_final, unique_id=f"gas-final-{operation}"
    )


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


class Aws:
    """One boto3 session and lazily made clients, configured once for the whole process.

    Endpoint, region and credentials come from the standard AWS chain only. Retries are
    botocore's `standard` mode, set explicitly, so no utility writes its own retry loop.
    """

    def __init__(
        self,
        config: Config,
        session: boto3.session.Session | None = None,
        connections: int | None = None,
        botocore_config: BotoConfig | None = None,
    ):
        """`connections`: HTTP connections per client, for callers with more threads than
        the worker's `concurrency` (a connection pool smaller than that makes threads queue).
        `botocore_config`: a caller's own client settings, over these."""
        self.session = session or boto3.session.Session()
        self._config = BotoConfig(
            retries={"mode": "standard", "total_max_attempts": config.worker.aws_max_attempts},
            # A long poll holds the connection for wait_seconds; leave room above it.
            read_timeout=max(60, config.worker.wait_seconds + 10),
            # Handlers, and the transfer threads of their parts (util/glacier.py, s3transfer).
            max_pool_connections=connections
            or max(
                10,
                config.worker.concurrency * 2,
                config.worker.concurrency + 2 * config.gas.transfer_threads,
            ),
        ).merge(botocore_config or BotoConfig())
        self._clients: dict[str, BaseClient] = {}
        self._looked_up: dict[Any, str] = {}
        self._lock = threading.Lock()  # boto3 sessions do not make clients thread-safely

    def client(self, service: str) -> BaseClient:
        """The process's client for `service`."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.session.client(service, config=self._config)
            return self._clients[service]

    def account_id(self) -> str:
        return self._once("account", lambda: self.client("sts").get_caller_identity()["Account"])

    def queue_url(self, name_or_url: str) -> str:
        """A queue given by URL is used as is; by name, it is looked up (once)."""
        if name_or_url.startswith(("https://", "http://")):
            return name_or_url
        return self._once(
            ("queue", name_or_url),
            lambda: self.client("sqs").get_queue_url(QueueName=name_or_url)["QueueUrl"],
        )

    def topic_arn(self, name_or_arn: str) -> str:
        """A topic given by ARN is used as is; by name, its ARN in this account and region."""
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        region = self.client("sns").meta.region_name
        partition = self.session.get_partition_for_region(region)
        return f"arn:{partition}:sns:{region}:{self.account_id()}:{name_or_arn}"

    def _once(self, key: Any, look_up: Callable[[], str]) -> str:
        """`look_up()`'s answer, remembered. Threads may race to look it up: no lock is held
        during the call (functools.cached_property would hold one for every instance)."""
        if key not in self._looked_up:
            self._looked_up[key] = look_up()
        return self._looked_up[key]


def job_request(item: Mapping[str, Any]) -> dict[str, Any]:
    """The job-requests topic message for a new job: JOB_REQUEST_FIELDS of its item."""
    return {field: item[field] for field in JOB_REQUEST_FIELDS}


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
                "ExpressionAttributeNames": {"#user": USER_ID, "#role": "role"},
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
    return User(item[USER_ID], item.get("name", ""), item.get("email", ""), item.get("role", FREE))
