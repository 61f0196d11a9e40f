"""The AWS clients a process makes, configured once (botocore's standard retries, pools
sized for the worker's threads), and the few answers of AWS the utilities read alike: an S3
object that is not there, a failed S3 condition, an error that is final at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from util.util_config import Config

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


def queue_name(name_or_url: str) -> str:
    """A queue's name, given by name or by URL (its last path segment): CloudWatch's
    QueueName dimension, and the stem of its dead-letter queue's name."""
    return name_or_url.rstrip("/").rsplit("/", 1)[-1]


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
