"""What the doctor's checks share: one check's line (`Check`), the template their fixes
point to, and how the account answers a call on something missing or one it does not offer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from util.aws import Aws

TEMPLATE = "deploy/cloudformation/gas.yaml"
NOT_FOUND = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NotFound",
    "ResourceNotFoundException",
    "404",
}

# How a call the account (or an emulator) does not offer fails: an error, an unparsable
# answer (moto's HTML 500), or, in process, moto's own exception.
UNAVAILABLE = (ClientError, BotoCoreError, ResponseParserError, NotImplementedError)


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not checked
    what: str
    fix: str = ""

    def line(self) -> str:
        if self.ok is None:
            return f"- {self.what}"
        return f"✔ {self.what}" if self.ok else f"✘ {self.what} — fix: {self.fix}"


def missing(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in NOT_FOUND


def probe(aws: Aws, service: str) -> Any:
    """A client that tries once: a call only some accounts (or no emulator) allow."""
    return aws.session.client(service, config=BotoConfig(retries={"total_max_attempts": 1}))


def reason(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response["Error"]["Code"]
    return type(exc).__name__
