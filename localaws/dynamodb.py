"""DynamoDB's atomic single-item writes, which moto 5.2.5 lacks, and its lagging index reads.

In DynamoDB a conditional write checks its condition and writes as one step: of two workers
that race to claim an item, exactly one wins. moto checks and writes without a lock, so two
threads of one process (or two requests to the threaded server) can both pass the check.
The utilities' guarantees (one archive, one retrieval, one e-mail per job) rest on that
atomicity, so the local stack serialises moto's item operations behind one lock.

DynamoDB updates a global secondary index after the table, so every read of one is
eventually consistent; moto answers an index from the table at once. With
``[local] index_lag_seconds`` = N (0, the default, turns it off at no cost), a Query or Scan
naming a global secondary index sees the table as it was N seconds ago: an item put, updated
or deleted within the last N seconds appears as it was before those writes, or not at all if
it did not exist. Reads of the table itself and of local secondary indexes are unchanged.
While N > 0 each PutItem, UpdateItem and DeleteItem (transactions' and batches' too: moto
makes them through these) records the item as it was before, keyed by table name (a failed
transaction swaps moto's Table object for a copy); each write drops the records older than
N, so only N seconds of writes are kept. A lagged read undoes, item by item, the writes newer
than the horizon on a copy of the table's item map, and moto answers from the copy, put in
place for that read under the lock. A lag raised at run time covers writes from then on.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

from localaws.settings import current_settings

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
# The writes that change one item, each with the parameter that holds its key.
_WRITES = {"put_item": "item_attrs", "update_item": "key", "delete_item": "key"}
_INDEX_READS = ("query", "scan")


@dataclass(frozen=True)
class _Write:
    at: float  # time.monotonic() when it was made
    hash_key: DynamoType
    range_key: DynamoType | None
    before: Item | None  # the item as it was, None if there was none


def _writes(backend: DynamoDBBackend) -> dict[str, deque[_Write]]:
    """The recent writes of a backend's tables, oldest first, by table name.

    Kept in the backend's own attributes: moto's reset (leaving mock_aws, POST
    /moto-api/reset) replaces them, and the records go with the tables.
    """
    return vars(backend).setdefault("_gas_recent_writes", defaultdict(deque))


def _key(table: Table, attributes: Any) -> tuple[DynamoType, DynamoType | None] | None:
    """The item's key in `attributes` (an item or a key), None if they hold no whole key:
    then moto refuses the write."""
    if not isinstance(attributes, Mapping) or table.hash_key_attr not in attributes:
        return None
    hash_key = DynamoType(attributes[table.hash_key_attr])
    if table.range_key_attr is None:
        return hash_key, None
    if table.range_key_attr not in attributes:
        return None
    return hash_key, DynamoType(attributes[table.range_key_attr])


def _recorded(method: Callable[..., Any], key_parameter: str) -> Callable[..., Any]:
    """A write that, while there is a lag, records the item as it was before it."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        lag = current_settings().index_lag_seconds
        if lag <= 0:
            return method(self, *args, **kwargs)
        arguments = signature.bind(self, *args, **kwargs).arguments
        table = self.get_table(arguments["table_name"])
        key = _key(table, arguments[key_parameter])
        # UpdateItem changes moto's Item in place: the record must be a copy.
        before = copy.deepcopy(table.get_item(*key)) if key else None
        result = method(self, *args, **kwargs)
        if key:
            now = time.monotonic()
            writes = _writes(self)[table.name]
            while writes and writes[0].at <= now - lag:
                writes.popleft()
            writes.append(_Write(now, *key, before))
        return result

    return call


def _as_of(items: Any, writes: deque[_Write], horizon: float) -> defaultdict[Any, Any]:
    """A copy of a table's item map ({hash: item} or {hash: {range: item}}) with the writes
    made after `horizon` undone; only the inner maps it changes are copied."""
    view: defaultdict[Any, Any] = defaultdict(dict, items)
    undone: set[tuple[DynamoType, DynamoType | None]] = set()
    copied: set[DynamoType] = set()
    for write in writes:
        key = (write.hash_key, write.range_key)
        if write.at <= horizon or key in undone:
            continue
        undone.add(key)  # the oldest write after the horizon holds the item as it was then
        if write.range_key is None:
            place, name = view, write.hash_key
        else:
            if write.hash_key not in copied:
                view[write.hash_key] = dict(view.get(write.hash_key, {}))
                copied.add(write.hash_key)
            place, name = view[write.hash_key], write.range_key
        if write.before is None:
            place.pop(name, None)
        else:
            place[name] = write.before
    return view


def _lagged(method: Callable[..., Any]) -> Callable[..., Any]:
    """A Query or Scan that, when it names a global secondary index, reads the table as it
    was the lag ago."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def call(self: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
        lag = current_settings().index_lag_seconds
        if lag <= 0:
            return method(self, *args, **kwargs)
        arguments = signature.bind(self, *args, **kwargs).arguments
        table = self.get_table(arguments["table_name"])
        index = arguments.get("index_name")
        writes = _writes(self).get(table.name)
        if not writes or index not in {i.name for i in table.global_indexes}:
            return method(self, *args, **kwargs)
        live = table.items
        table.items = _as_of(live, writes, time.monotonic() - lag)
        try:
            return method(self, *args, **kwargs)
        finally:
            table.items = live

    return call


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
        if getattr(method, "__gas_serialised__", False):
            continue
        if name in _WRITES:
            method = _recorded(method, _WRITES[name])
        elif name in _INDEX_READS:
            method = _lagged(method)
        setattr(DynamoDBBackend, name, _serialised(method))
