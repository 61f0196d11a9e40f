"""DynamoDB's atomic single-item writes, which moto 5.2.5 lacks.

In DynamoDB a conditional write checks its condition and writes as one step: of two workers
that race to claim an item, exactly one wins. moto checks and writes without a lock, so two
threads of one process (or two requests to the threaded server) can both pass the check.
The utilities' guarantees (one archive, one retrieval, one e-mail per job) rest on that
atomicity, so the local stack serialises moto's item operations behind one lock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

__all__ = ["install"]

_LOCK = threading.RLock()
# Every operation that reads or writes items: a read must not see half an update either.
_OPERATIONS = (
    "put_item",
    "get_item",
    "update_item",
    "delete_item",
    "query",
    "scan",
    "transact_write_items",
)


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    call.__gas_serialised__ = True  # type: ignore[attr-defined]
    return call


def install() -> None:
    """Patch moto's DynamoDB backend in place; calling it again changes nothing."""
    for name in _OPERATIONS:
        method = getattr(DynamoDBBackend, name)
        if not getattr(method, "__gas_serialised__", False):
            setattr(DynamoDBBackend, name, _serialised(method))
