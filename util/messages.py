"""A queue message as a handler sees it, and the outcome it returns (docs/design.md).

The worker (util/worker.py) acts on the outcome. A message the worker sends again, for a retry
or a defer, carries the handler's retries so far (``gas_retries``) and, beyond SQS's 15-minute
delay, when it is due (``gas_not_before``): docs/runtime.md. Either may be forged: a garbled
one counts as absent.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from util.helpers import InvalidMessage

log = logging.getLogger("gas")

RETRY_JITTER = 0.25  # a retry's delay grows by up to this fraction, never shrinks
# What the worker writes on a copy it sends: the handler's retries so far, and when the copy
# is due (epoch seconds) if that is beyond SQS's longest delay.
RETRIES, NOT_BEFORE = "gas_retries", "gas_not_before"


# What the runtime does with a message: delete it, leave it to come back, bring it back after a
# delay, move it to the dead-letter queue, make it visible again at once (we are stopping), or
# hide a copy received before it is due until then.
Action = Literal["done", "retry", "defer", "invalid", "handed back", "early"]


@dataclass(frozen=True)
class Outcome:
    """What the runtime does with a message once its handler returns."""

    action: Action
    reason: str = ""
    delay: int = 0


def done(reason: str = "") -> Outcome:
    return Outcome("done", reason)


def retry(reason: str = "") -> Outcome:
    return Outcome("retry", reason)


def defer(seconds: float, reason: str = "") -> Outcome:
    return Outcome("defer", reason, max(1, math.ceil(seconds)))


def invalid(reason: str) -> Outcome:
    return Outcome("invalid", reason)


HANDED_BACK = Outcome("handed back", "worker stopping")


def retry_delay(retry: int, base: int, cap: int, rng: random.Random) -> int:
    """Seconds the `retry`-th retry of a message waits: `base` doubled per earlier retry, plus
    up to RETRY_JITTER of it (spreading a burst of retries), at most `cap`.

    The jitter only adds, so `n` retries last at least base * (2**n - 1) seconds (if the cap
    allows): the outage max_retries rides out.
    """
    delay = base * 2 ** min(max(retry, 1) - 1, 30)
    return int(min(cap, delay * (1 + rng.uniform(0, RETRY_JITTER))))


@dataclass
class Message:
    """One received SQS message as a handler sees it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: dict[str, Any]
    received_at: float
    visible_until: float
    sent_at: float = 0.0  # when SQS accepted it (SentTimestamp), epoch seconds
    data: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None  # handlers may set it; it goes into the log line
    # Set when the drain grace is nearly over: a long handler should give up cleanly.
    cancelled: threading.Event = field(default_factory=threading.Event)
    started_at: float | None = None  # when its handler started (monotonic)
    timed_out: bool = False  # cancelled because the handler time limit passed
    duration: float = 0.0
    # What the handler did, as metrics (util/metrics.py): e.g. {"BytesArchived": 1234}.
    metrics: dict[str, float] = field(default_factory=dict)
    retries: int = 0  # the handler's retries of earlier copies (gas_retries)
    not_before: float | None = None  # a copy's due time, epoch seconds (gas_not_before)

    @property
    def delivered_before(self) -> bool:
        """This message, or an earlier copy of it, was delivered before: that delivery may
        have done part of the work. A copy the worker sent always carries gas_retries."""
        return self.receive_count > 1 or RETRIES in self.attributes


def copy_number(message_id: str, attributes: dict[str, Any], name: str) -> float | None:
    """The value of a number the worker writes on a copy (gas_retries, gas_not_before); None
    if absent, or if garbled (logged): a finite number, not negative, a whole one for a count.
    """
    if name not in attributes:
        return None
    text = attributes[name].get("StringValue")
    try:
        number = float(text)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or (name == RETRIES and not number.is_integer()):
        log.warning("message %s: %s %r is garbled, ignored", message_id, name, text)
        return None
    return number


def own_attributes(message: Message) -> dict[str, dict[str, Any]]:
    """A message's attributes but the worker's copy numbers, as SendMessage takes them."""
    return {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in message.attributes.items()
        if name not in (RETRIES, NOT_BEFORE)
    }


def number_attribute(value: int) -> dict[str, str]:
    return {"DataType": "Number", "StringValue": str(value)}


Handler = Callable[[Message], Outcome]


def decode_body(body: str) -> dict[str, Any]:
    """A queue body as a dict, unwrapping an SNS envelope; InvalidMessage if it is not JSON."""
    data = _json_object(body, "body")
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        data = _json_object(data["Message"], "SNS Message")
    return data


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidMessage(f"{what} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"{what} is not a JSON object")
    return data


def require_str(data: Mapping[str, Any], *fields: str) -> tuple[str, ...]:
    """The named fields as non-empty strings, or InvalidMessage naming the first bad one."""
    values = []
    for name in fields:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidMessage(f"field {name!r} missing or not a non-empty string")
        values.append(value)
    return tuple(values)
