"""S3 on top of moto 5.2.5 as AWS documents it: restores of archived objects, ETags,
checksums of copies, conditional requests.

``install()`` patches moto in place, so it serves ``mock_aws`` and a ``ThreadedMotoServer``
in the same process alike; calling it again changes nothing. Timing and capacity are the
Glacier emulation's settings (``localaws.glacier.configure``, the ``[local]`` section),
shared, not copied: ``*_seconds`` per tier, ``expedited_capacity`` and ``day_seconds``.

Gaps in moto it closes (RestoreObject of objects in GLACIER or DEEP_ARCHIVE):

- ``GlacierJobParameters.Tier`` was ignored. It is now honoured (Standard if absent;
  anything but Expedited, Standard or Bulk is ``MalformedXML``, 400). Expedited for a
  DEEP_ARCHIVE object is refused with ``InvalidTier``, 403, "Retrieval option is not
  supported by this storage class" (AWS documents only that Expedited is "not available"
  for DEEP_ARCHIVE; code, status and message are those StorageGRID documents for the same
  request against AWS, and the message is the one AWS clients match on). With
  ``expedited_capacity`` false, Expedited is refused with
  ``GlacierExpeditedRetrievalNotAvailable``, 503 (RestoreObject's special errors; botocore's
  standard retry mode retries that 503 as it would AWS's).
- ``Days`` is required and must be a whole number of at least 1 (``InvalidArgument``, 400).
- A restore completed on the next *read* of the key. It now completes its tier's
  ``*_seconds`` after it was requested (0: at once). Until then HEAD says
  ``x-amz-restore: ongoing-request="true"``, and GetObject answers ``InvalidObjectState``
  and CopyObject and UploadPartCopy ``ObjectNotInActiveTierError`` (403; moto's
  UploadPartCopy copied from an unrestored object). Then HEAD says ``ongoing-request="false",
  expiry-date="..."`` and the object reads and copies (multipart too) as any other.
- A RestoreObject while a restore is in progress is ``RestoreAlreadyInProgress``, 409,
  unless it asks for a faster tier with the same ``Days``: that upgrades the restore, 202,
  which then completes by the faster tier's time, as AWS's "restore speed upgrade" does.
- A RestoreObject of a restored object extends its copy's life, 200, without a new restore.
  The expiry date is the request time plus ``Days``, rounded up to the next midnight UTC
  (AWS's rule, for the first restore and for an extension alike); with ``day_seconds``
  other than 86400, the request time plus ``Days`` of that many seconds, not rounded.
- A restored copy expires (moto's never did): from its expiry on, HEAD has no
  ``x-amz-restore``, GetObject is ``InvalidObjectState`` and CopyObject and UploadPartCopy
  ``ObjectNotInActiveTierError`` again, and a RestoreObject starts a new restore (202).
- RestoreObject of an object in any other class is ``InvalidObjectState``, 403 (moto's).
- Events: ``s3:ObjectRestore:Post`` when a restore starts (moto sent one for every request),
  ``s3:ObjectRestore:Completed`` once when it completes, from a daemon timer, not when
  something next reads the key, and ``s3:ObjectRestore:Delete`` once when its copy expires
  (at the expiry an extension moved it to), from another. They go through moto's
  notification machinery to whatever the bucket's notification configuration names (SNS
  topics, SQS queues). The Completed record carries ``glacierEventData.restoreEventData``:
  ``lifecycleRestorationExpiryTime`` (ISO 8601, milliseconds, Z) and
  ``lifecycleRestoreStorageClass`` (the object's class); moto's record gives ``eventName``,
  ``s3.bucket.name``, ``s3.object.key`` (URL-encoded as a form value, ``quote_plus``),
  ``size`` and ``eTag``. A timer whose object is no longer in moto's live state (its
  ``mock_aws`` context ended, the server was reset, the key was overwritten or deleted)
  sends nothing.

Conditional copies: moto ignored ``x-amz-copy-source-if-match`` on CopyObject and
UploadPartCopy, and ``If-None-Match: *`` on CopyObject. A copy pinned to an ETag its source no
longer has, or an ``If-None-Match: *`` copy onto a key that holds an object, is now refused
with ``PreconditionFailed``, 412, as AWS documents (CopyObject's ``If-Match`` on the
destination and the other ``x-amz-copy-source-if-*`` conditions are not emulated).

Conditional writes and deletes are atomic, as in AWS: moto checks ``If-Match`` /
``If-None-Match`` and then writes or deletes, so a write landing in between (another request
thread of the server) could be deleted by a delete whose condition it no longer meets. Every
conditional check-then-act of a key (copies included), and every write of an object
(PutObject, CopyObject, CompleteMultipartUpload all end in ``S3Backend.put_object``), now
holds one lock.

A ranged GET reads only its range: moto read the whole object for every range and sliced
it (archiving a large result in parts read it once per part). A GetObject with a Range header
now hands moto's range handling a view of the key that reads the bytes it slices, and nothing
else; every other answer (no range, several ranges, an unsatisfiable one) is moto's.

CompleteMultipartUpload leaves the object's bytes in its parts, which moto keeps with the
object anyway, and reads them from there. moto joined them in memory several times over, then
wrote them to disk: 35 to 42 s and 4 GiB for 1 GiB on the development machine, against 1.1 s
and nothing now. Its checks, ETag and checksum are moto's; an upload whose whole-object
checksum moto computes other than with CRC-32 (``awscrt`` or ``crc32c`` installed, or a SHA)
is left to moto. An object larger than moto keeps in memory is written straight to its file.

Checksums S3 computes on copies: a CopyObject with ``x-amz-checksum-algorithm`` gives the
copy a full-object checksum (``FULL_OBJECT``; moto left the type unset, and a copy keeping
its source's checksum now keeps its type too). In an upload created with a checksum
algorithm, UploadPartCopy's CopyPartResult has the part's checksum (moto left it out;
s3transfer passes it on to CompleteMultipartUpload, which does not check it, as moto's did
not). HeadObject with ChecksumMode ENABLED gives ``x-amz-checksum-type``, and a composite
checksum with its ``-N``, as GetObject does. Without ``awscrt`` moto computes CRC64NVME as
a CRC-32, of a copy in one request and of an upload's parts in order (`_complete_multipart`),
so equal bytes have equal full-object checksums whatever their part layout and encryption.

Every object's and part's ETag is fixed when its bytes are written, from those bytes: moto
computed it on its first read, in 16 MiB reads of the buffer other readers seek, without the
key's lock, so a listing or HEAD racing a copy of an object above 16 MiB could cache a wrong
ETag for good. An object written under SSE-KMS or DSSE-KMS (asked for, or the bucket's
default encryption) or SSE-C (the ``x-amz-server-side-encryption-customer-*`` headers), by
PutObject, CopyObject or CompleteMultipartUpload, gets an ETag that is not an MD5 digest of
its bytes, as AWS documents (moto gave the MD5): 32 random hex digits, new for every write, a
multipart object's with its ``-N``. So do the parts of such an upload (its encryption is
settled by CreateMultipartUpload), by UploadPart and UploadPartCopy alike; moto's check of
them at completion holds. Unencrypted and SSE-S3 objects keep MD5 ETags. Whatever reads an
ETag (HEAD, GET, listings, events, ``If-Match`` and the other conditions) reads that one.

Not emulated: DEEP_ARCHIVE restores take the same time as GLACIER ones of the same tier,
SELECT restores, versioned restores' ``versionId`` in events, and the records'
``userIdentity``, ``requestParameters``, ``responseElements`` and ``sequencer``, which moto
leaves out.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import io
import itertools
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

import xmltodict
from moto.core.common_types import TYPE_RESPONSE
from moto.core.compat import HAS_CRC32C, HAS_CRT
from moto.core.utils import utcnow
from moto.s3 import notifications
from moto.s3.exceptions import (
    EntityTooSmall,
    InvalidObjectState,
    InvalidPart,
    MalformedXML,
    MissingKey,
    ObjectNotInActiveTierError,
    PreconditionFailed,
)
from moto.s3.models import (
    FakeBucket,
    FakeKey,
    FakeMultipart,
    MultipartChecksumBuilder,
    S3Backend,
)
from moto.s3.notifications import S3NotificationEvent
from moto.s3.responses import S3Response
from moto.s3.utils import ARCHIVE_STORAGE_CLASSES, compute_checksum
from moto.settings import S3_UPLOAD_PART_MIN_SIZE

from localaws.glacier import TIERS
from localaws.settings import current_settings

__all__ = ["install"]

# moto's originals, taken once: install() may run more than once.
_moto_key_response_post = S3Response._key_response_post
_moto_delete_object = S3Response.delete_object
_moto_put_object_response = S3Response.put_object
_moto_put_object = S3Backend.put_object
_moto_upload_part_copy = S3Backend.upload_part_copy
_moto_copy_object_response = S3Response.copy_object
_moto_upload_part_copy_response = S3Response.upload_part_copy
_moto_s3_event = notifications._get_s3_event
_moto_get_object = S3Response.get_object
_moto_handle_range_header = S3Response._handle_range_header
_moto_key_value: property = FakeKey.value  # type: ignore[assignment]
_moto_complete = FakeMultipart.complete
_moto_dispose_multipart = FakeMultipart.dispose
_moto_set_part = FakeMultipart.set_part
_moto_key_response = S3Response._key_response
_moto_create_multipart_upload = S3Backend.create_multipart_upload
_moto_complete_multipart_upload = S3Backend.complete_multipart_upload
_moto_head_object = S3Response.head_object
_moto_response_dict = FakeKey.response_dict

_ATTRIBUTE = "gas_restore"  # where a key keeps its Restore
_DAY_SECONDS = 86400  # a day as AWS counts it; [local] day_seconds may shorten it
_LOCK = threading.Lock()  # a restore's check-then-set, across request and timer threads
_WRITES = threading.RLock()  # conditional check-then-act of a key, and every object write
_RANGED = threading.local()  # set while this thread answers a GetObject with a Range header
_JOINED = "gas_joined"  # where a completed upload keeps the buffer its object reads from
_WRITING = threading.local()  # what this thread's S3 request writes: SSE-C; ETags not MD5s
_NOT_MD5 = "gas_etags_not_md5"  # where an upload keeps whether its ETags are not MD5 digests
# Encryptions whose objects have ETags that are not MD5 digests of their bytes (SSE-C too).
_NOT_MD5_ENCRYPTIONS = frozenset({"aws:kms", "aws:kms:dsse"})
_SSE_C = "x-amz-server-side-encryption-customer-algorithm"


@dataclass
class Restore:
    """The latest restore of one archived object. Times are naive UTC, like moto's."""

    tier: str
    days: int
    due: datetime
    expiry: datetime
    completed: bool = False  # set by the timer just before the Completed event
    deleted: bool = False  # set by the timer just before the Delete event

    def done(self) -> bool:
        return self.completed or utcnow() >= self.due

    def expired(self) -> bool:
        """Whether its restored copy is gone (a copy done after its expiry, gone at once)."""
        return self.done() and (self.deleted or utcnow() >= self.expiry)


class _RestoreError(Exception):
    """An S3 error with the HTTP status AWS gives it, sent in S3's XML error format."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self, key_name: str) -> TYPE_RESPONSE:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"<Key>{escape(key_name)}</Key>"
            "<RequestId>set-by-moto</RequestId></Error>"
        )  # moto puts its request id in
        return self.status, {"content-type": "application/xml"}, body


def _restore_of(key: FakeKey) -> Restore | None:
    return getattr(key, _ATTRIBUTE, None)


def _expiry(requested: datetime, days: int) -> datetime:
    """AWS's rule: the request time plus `days`, rounded up to the next midnight UTC; with
    days shortened (``day_seconds``), the request time plus `days` of them, not rounded."""
    day_seconds = current_settings().day_seconds
    if day_seconds != _DAY_SECONDS:
        return requested + timedelta(seconds=days * day_seconds)
    return datetime.combine((requested + timedelta(days=days)).date() + timedelta(days=1), time())


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse(body: bytes) -> tuple[int, str]:
    """Days and Tier of a RestoreRequest body."""
    try:
        request = xmltodict.parse(body)["RestoreRequest"] or {}
    except Exception:  # noqa: BLE001 - any unparsable body is malformed, as AWS says
        raise _RestoreError(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed "
            "or did not validate against our published schema",
        ) from None
    tier = (request.get("GlacierJobParameters") or {}).get("Tier") or "Standard"
    if tier not in TIERS:
        raise _RestoreError(
            400, "MalformedXML", f"Invalid Tier: {tier}. Valid values are: {', '.join(TIERS)}"
        )
    days = request.get("Days") or ""
    if not days.isdigit() or int(days) < 1:
        raise _RestoreError(
            400,
            "InvalidArgument",
            "Days, a whole number of at least 1, "
            f"is required to restore an archived object (given: {days})",
        )
    return int(days), tier


def _restore_object(
    backend: S3Backend, bucket: FakeBucket, key: FakeKey, days: int, tier: str
) -> int:
    """RestoreObject of `key`: the HTTP status of the answer, or _RestoreError."""
    if key.storage_class not in ARCHIVE_STORAGE_CLASSES:
        raise InvalidObjectState(storage_class=key.storage_class)
    if tier == "Expedited" and key.storage_class == "DEEP_ARCHIVE":
        raise _RestoreError(
            403, "InvalidTier", "Retrieval option is not supported by this storage class"
        )
    settings = current_settings()
    now = utcnow()
    with _LOCK:
        restore = _restore_of(key)
        if restore is not None and restore.expired():
            restore = None  # its copy is gone: this is a new restore
        if restore is not None and restore.done():  # a restored copy: extend its life
            restore.days, restore.expiry = days, _expiry(now, days)
            key.set_expiry(restore.expiry)
            _at(restore.expiry, _expire, backend, bucket, key, restore, restore.expiry)
            return 200
        upgrade = (
            restore is not None
            and days == restore.days
            and TIERS.index(tier) < TIERS.index(restore.tier)
        )
        if restore is not None and not upgrade:
            raise _RestoreError(
                409, "RestoreAlreadyInProgress", "Object restore is already in progress"
            )
        if tier == "Expedited" and not settings.expedited_capacity:
            raise _RestoreError(
                503,
                "GlacierExpeditedRetrievalNotAvailable",
                "Glacier expedited retrievals are currently not available, please try again later",
            )
        due = now + timedelta(seconds=settings.seconds(tier))
        if restore is not None:  # the upgrade: the faster tier's time counts from now
            restore.tier, restore.due = tier, min(restore.due, due)
        else:
            restore = Restore(tier, days, due, _expiry(now, days))
            setattr(key, _ATTRIBUTE, restore)
            key.set_expiry(restore.expiry)  # moto shows x-amz-restore only with an expiry
    if not upgrade:
        notifications.send_event(
            key.account_id, S3NotificationEvent.OBJECT_RESTORE_POST_EVENT, bucket, key
        )
    _at(restore.due, _complete, backend, bucket, key, restore)
    return 202


def _at(moment: datetime, function: Callable[..., None], *args: Any) -> None:
    """Call `function(*args)` at `moment` (naive UTC), from a timer thread."""
    timer = threading.Timer((moment - utcnow()).total_seconds(), function, args)
    timer.daemon = True  # a pending event must not keep a test run or server alive
    timer.start()


def _live(backend: S3Backend, bucket: FakeBucket, key: FakeKey, restore: Restore) -> bool:
    """Whether `restore` is still the restore of a key in moto's live state. One whose
    mock_aws context ended (or whose server was reset, or that was overwritten) is not: its
    event would reach a later test's topic of the same name."""
    return (
        backend.buckets.get(bucket.name) is bucket
        and any(k is key for k in bucket.keys.getlist(key.name, []))
        and _restore_of(key) is restore
    )


def _complete(backend: S3Backend, bucket: FakeBucket, key: FakeKey, restore: Restore) -> None:
    """The timer's end of a restore: mark it completed and send the Completed event, once
    (an upgraded restore has two timers); then wait for its copy's expiry."""
    with _LOCK:
        if not _live(backend, bucket, key, restore) or restore.completed:
            return
        restore.completed = True
    notifications.send_event(
        key.account_id, S3NotificationEvent.OBJECT_RESTORE_COMPLETED_EVENT, bucket, key
    )
    _at(restore.expiry, _expire, backend, bucket, key, restore, restore.expiry)


def _expire(
    backend: S3Backend, bucket: FakeBucket, key: FakeKey, restore: Restore, expiry: datetime
) -> None:
    """The timer's end of a restored copy due to expire at `expiry`: unless its life was
    extended meanwhile, mark it deleted and send the Delete event, once."""
    with _LOCK:
        if not _live(backend, bucket, key, restore) or restore.deleted or restore.expiry != expiry:
            return
        restore.deleted = True
    notifications.send_event(
        key.account_id, S3NotificationEvent.OBJECT_RESTORE_DELETE_EVENT, bucket, key
    )


def _s3_event(
    event_name: str, bucket: FakeBucket, key: FakeKey, notification_id: str
) -> dict[str, Any]:
    """moto's event record, plus glacierEventData in ObjectRestore:Completed (only there)."""
    event = _moto_s3_event(event_name, bucket, key, notification_id)
    restore = _restore_of(key)
    if event_name == S3NotificationEvent.OBJECT_RESTORE_COMPLETED_EVENT and restore:
        event["Records"][0]["glacierEventData"] = {
            "restoreEventData": {
                "lifecycleRestorationExpiryTime": _stamp(restore.expiry),
                "lifecycleRestoreStorageClass": key.storage_class,
            }
        }
    return event


def _key_response_post(
    self: S3Response,
    request: Any,
    body: bytes,
    bucket_name: str,
    query: dict[str, Any],
    key_name: str,
) -> TYPE_RESPONSE:
    """RestoreObject (POST ?restore) here; every other POST of a key is moto's."""
    if "restore" not in query:
        return _moto_key_response_post(self, request, body, bucket_name, query, key_name)
    self._set_action("KEY", "POST", query)
    self._authenticate_and_authorize_s3_action(bucket_name=bucket_name, key_name=key_name)
    version_id = query.get("versionId", [None])[0]
    key = self.backend.get_object(bucket_name, key_name, version_id=version_id)
    if key is None:
        raise MissingKey(key=key_name)
    try:
        days, tier = _parse(body)
        status = _restore_object(
            self.backend, self.backend.get_bucket(bucket_name), key, days, tier
        )
    except _RestoreError as error:
        return error.response(key_name)
    return status, {}, ""


def _upload_part_copy(
    self: S3Backend,
    dest_bucket_name: str,
    multipart_id: str,
    part_id: int,
    src_bucket_name: str,
    src_key_name: str,
    src_version_id: str | None,
    start_byte: int,
    end_byte: int,
) -> FakeKey:
    """moto's UploadPartCopy, refusing an archived source that is not restored."""
    source = self.get_object(src_bucket_name, src_key_name, version_id=src_version_id)
    # As for CopyObject: an archived source is readable only once a restore completed.
    if (
        source is not None
        and source.storage_class in ARCHIVE_STORAGE_CLASSES
        and _key_status(source) != "RESTORED"
    ):
        raise ObjectNotInActiveTierError(src_key_name)
    return _moto_upload_part_copy(
        self,
        dest_bucket_name,
        multipart_id,
        part_id,
        src_bucket_name,
        src_key_name,
        src_version_id,
        start_byte,
        end_byte,
    )


def _copy_source(response: S3Response) -> FakeKey | None:
    """The object an ``x-amz-copy-source`` header names, parsed as moto parses it."""
    header = response.headers.get("x-amz-copy-source")
    if isinstance(header, bytes):
        header = header.decode("utf-8")
    parsed = urlparse(header)
    bucket, key = unquote(parsed.path).lstrip("/").split("/", 1)
    version = parse_qs(parsed.query).get("versionId", [None])[0]
    return response.backend.get_object(bucket, key, version_id=version)


def _check_pin(response: S3Response) -> None:
    """``x-amz-copy-source-if-match``: the source must still have that ETag."""
    pinned = response.headers.get("x-amz-copy-source-if-match")
    source = None if pinned is None else _copy_source(response)
    if source is not None and source.etag.strip('"') != pinned.strip('"'):
        raise PreconditionFailed("x-amz-copy-source-If-Match")


def _copy_object(self: S3Response) -> TYPE_RESPONSE:
    """moto's CopyObject, pinned to the source's ETag and, with ``If-None-Match: *``, never
    replacing an object; checked and copied under the write lock. The copy's checksum has a
    type, which moto left unset (`_copy_checksum_type`)."""
    with _WRITES:
        _check_pin(self)
        if (
            self.headers.get("If-None-Match") == "*"
            and self.backend.get_object(self.bucket_name, self.parse_key_name()) is not None
        ):
            raise PreconditionFailed("If-None-Match")
        source = _copy_source(self)
        answer = _moto_copy_object_response(self)
        _copy_checksum_type(self, source)
        return answer


def _copy_checksum_type(response: S3Response, source: FakeKey | None) -> None:
    """A checksum S3 computes on a copy (``x-amz-checksum-algorithm``) is of the whole object;
    one copied from the source keeps the source's type and part count."""
    copy = response.backend.get_object(response.bucket_name, response.parse_key_name())
    assert copy is not None and source is not None  # moto copied one onto the other
    if response.headers.get("x-amz-checksum-algorithm"):
        copy.checksum_type, copy.checksum_parts = "FULL_OBJECT", None
    elif copy.checksum_value:
        copy.checksum_type, copy.checksum_parts = source.checksum_type, source.checksum_parts


def _upload_part_copy_response(self: S3Response) -> TYPE_RESPONSE:
    """moto's UploadPartCopy, pinned to the source's ETag. In an upload created with a
    checksum algorithm, CopyPartResult has the part's checksum (moto left it out), which
    s3transfer passes on to CompleteMultipartUpload."""
    with _WRITES:
        _check_pin(self)
        status, headers, body = _moto_upload_part_copy_response(self)
        if status != 200:
            return status, headers, body
        multipart = self.backend.get_bucket(self.bucket_name).multiparts[
            self._get_param("uploadId")
        ]
        algorithm = multipart.metadata.get("x-amz-checksum-algorithm")
        if algorithm:
            part = multipart.parts[self._get_int_param("partNumber")]
            element = f"Checksum{algorithm.upper()}"
            checksum = compute_checksum(part.value, algorithm).decode()
            text = body.decode() if isinstance(body, bytes) else body
            body = text.replace(
                "</CopyPartResult>", f"<{element}>{checksum}</{element}></CopyPartResult>"
            )
            headers["content-length"] = str(len(body))
        return status, headers, body


def _head_object(
    self: S3Response, bucket_name: str, query: dict[str, Any], key_name: str, headers: Any
) -> TYPE_RESPONSE:
    """moto's HeadObject; with ChecksumMode ENABLED, the checksum as GetObject gives it:
    with its type, a composite one with its part count (moto gave neither)."""
    status, answer, body = _moto_head_object(self, bucket_name, query, key_name, headers)
    if status != 200 or headers.get("x-amz-checksum-mode") != "ENABLED" or "partNumber" in query:
        return status, answer, body
    key = self.backend.get_object(bucket_name, key_name, query.get("versionId", [None])[0])
    if key is not None and key.checksum_algorithm and key.checksum_type:
        composite = f"-{key.checksum_parts}" if key.checksum_type == "COMPOSITE" else ""
        answer[f"x-amz-checksum-{key.checksum_algorithm.lower()}"] = (
            f"{key.checksum_value}{composite}"
        )
        answer["x-amz-checksum-type"] = key.checksum_type
    return status, answer, body


def _key_status(key: FakeKey) -> str | None:
    """moto's restore status, from the key's Restore instead of moto's read-driven state."""
    restore = _restore_of(key)
    if restore is None or restore.expired():
        return None
    return "RESTORED" if restore.done() else "IN_PROGRESS"


def _response_dict(key: FakeKey) -> dict[str, Any]:
    """moto's headers of a key, without ``x-amz-restore`` once its restored copy expired:
    moto's reads and copies of an archived object look there for a restored copy."""
    headers = _moto_response_dict.fget(key)  # type: ignore[attr-defined]
    restore = _restore_of(key)
    if restore is not None and restore.expired():
        headers.pop("x-amz-restore", None)
    return headers


class _KeyBytes:
    """A key's bytes as moto's range handling uses them (len, one slice), read only where
    sliced."""

    def __init__(self, key: FakeKey) -> None:
        self.key = key

    def __len__(self) -> int:
        return self.key.size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(len(self))
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(0, stop - start))

    def whole(self) -> bytes:
        return self[:]


def _key_value(key: FakeKey) -> bytes | _KeyBytes:
    """moto's FakeKey.value, but a lazy view while a ranged GetObject is being answered."""
    if getattr(_RANGED, "key_bytes", False):
        return _KeyBytes(key)
    return _moto_key_value.fget(key)  # type: ignore[misc]


def _get_object(self: S3Response) -> TYPE_RESPONSE:
    """moto's GetObject; with a Range header, the body is a _KeyBytes moto's range handling
    slices (S3Response.key_response), made whole if it answers otherwise."""
    _RANGED.key_bytes = bool(self.headers.get("range"))
    try:
        status, headers, body = _moto_get_object(self)
    finally:
        _RANGED.key_bytes = False
    if status != 200 and isinstance(body, _KeyBytes):  # no range handling follows
        body = body.whole()
    return status, headers, body


def _handle_range_header(
    self: S3Response, request: Any, response_headers: dict[str, Any], response_content: Any
) -> TYPE_RESPONSE:
    status, headers, body = _moto_handle_range_header(
        self, request, response_headers, response_content
    )
    if isinstance(body, _KeyBytes):  # a range moto answers with the whole object
        body = body.whole()
    return status, headers, body


class _Joined(io.RawIOBase):
    """A completed upload's bytes, read from its parts, which moto keeps with the object: the
    object's buffer. While it is open, a copy that shares the upload (moto's CopyObject
    shares it) being deleted does not dispose of the parts (`_dispose_multipart`)."""

    def __init__(self, parts: list[FakeKey]) -> None:
        self.parts = parts
        self.ends = list(itertools.accumulate(part.contentsize for part in parts))
        self.size = self.ends[-1]
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        """As many bytes as fit, across parts (moto's readers expect a full read)."""
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self.position < self.size:
            index = bisect.bisect_right(self.ends, self.position)
            part = self.parts[index]
            offset = self.position - (self.ends[index] - part.contentsize)
            wanted = min(len(view) - done, part.contentsize - offset)
            with part.lock:
                part._value_buffer.seek(offset)
                got = part._value_buffer.readinto(view[done : done + wanted])
            if not got:
                break
            done += got
            self.position += got
        return done

    def readall(self) -> bytes:
        whole = bytearray(max(0, self.size - self.position))
        return bytes(whole[: self.readinto(whole)])


def _crc32_whole(algorithm: str) -> bool:
    """Whether moto computes this whole-object checksum as a CRC-32 (`compute_checksum`):
    CRC32 itself, and its stand-in for CRC64NVME without awscrt and CRC32C without crc32c."""
    return (
        algorithm == "CRC32"
        or (algorithm == "CRC64NVME" and not HAS_CRT)
        or (algorithm == "CRC32C" and not HAS_CRC32C)
    )


def _complete_multipart(
    self: FakeMultipart, body: Iterator[tuple[int, str]]
) -> tuple[bytes | _Joined, str, tuple[str, str, int] | None]:
    """moto's FakeMultipart.complete (the same checks, ETag and checksum), the object's bytes
    left in its parts instead of joined in memory."""
    checksum = MultipartChecksumBuilder(
        self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
    )
    whole = checksum.checksum_type != "COMPOSITE"
    if whole and not _crc32_whole(checksum.checksum_algorithm):
        return _moto_complete(self, body)
    parts: list[FakeKey] = []
    for number, etag in body:
        part = self.parts.get(number)
        if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
            raise InvalidPart()
        if parts and parts[-1].contentsize < S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        parts.append(part)
    if not parts:
        raise MalformedXML
    md5s = b"".join(bytes.fromhex(part.etag.replace('"', "")) for part in parts)
    etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"
    crc = 0
    for part in parts:
        if whole:
            crc = binascii.crc32(part.value, crc)
        else:
            checksum.addPart(part.value)
    joined = _Joined(parts)
    setattr(self, _JOINED, joined)
    if whole:
        crc32 = base64.b64encode(crc.to_bytes(4, "big")).decode()
        return joined, etag, (checksum.checksum_type, crc32, 1)
    return joined, etag, checksum.build()


def _dispose_multipart(self: FakeMultipart) -> None:
    """moto's FakeMultipart.dispose, unless its parts are an object's bytes still in use."""
    joined = getattr(self, _JOINED, None)
    if joined is None or joined.closed:
        _moto_dispose_multipart(self)


def _set_key_value(key: FakeKey, value: bytes | _Joined) -> None:
    """moto's FakeKey.value setter (which FakeKey's constructor runs), writing a large value
    straight to the file it spools to (not to memory first); a completed upload's bytes become
    the buffer as they are. The ETag is fixed here, from the bytes as written: moto computed
    it on first read, from the buffer other readers seek, without the key's lock, so a reader
    racing another could cache a wrong one."""
    if isinstance(value, _Joined):
        key._value_buffer.close()
        key._value_buffer, key.contentsize = value, value.size  # type: ignore[assignment]
    else:
        if len(value) > key._max_buffer_size:
            key._value_buffer.rollover()
        _moto_key_value.fset(key, value)  # type: ignore[misc]
    key._etag = _new_etag(key._etag, value)


def _new_etag(given: str | None, value: bytes | _Joined) -> str | None:
    """A new key's ETag, unquoted: a random one for a write whose ETags are not MD5 digests
    (a multipart object's keeps its "-N"), else the given one (a completed upload's) or the MD5
    of the bytes."""
    if getattr(_WRITING, "not_md5", False):
        parts = given[given.index("-") :] if given and "-" in given else ""
        return secrets.token_hex(16) + parts
    if given is None and isinstance(value, bytes):
        return hashlib.md5(value, usedforsecurity=False).hexdigest()
    return given


def _not_md5(backend: S3Backend, bucket_name: str, encryption: str | None) -> bool:
    """Whether what is written now gets ETags that are not MD5 digests of its bytes: under
    SSE-KMS or DSSE-KMS (asked for, or the bucket's default encryption, as moto applies it)
    or SSE-C (asked for by the request)."""
    if getattr(_WRITING, "sse_c", False):
        return True
    default = backend.get_bucket(bucket_name).encryption
    if not encryption and default:
        encryption = default["Rule"]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
    return encryption in _NOT_MD5_ENCRYPTIONS


@contextmanager
def _etags_not_md5(not_md5: bool) -> Iterator[None]:
    """Within: keys this thread makes get ETags that are not MD5 digests if `not_md5` (or an
    enclosing scope said so)."""
    outer = getattr(_WRITING, "not_md5", False)
    _WRITING.not_md5 = outer or not_md5
    try:
        yield
    finally:
        _WRITING.not_md5 = outer


def _key_response(self: S3Response, request: Any, full_url: str) -> TYPE_RESPONSE:
    """moto's answer to a request on an object, noting whether it asks for SSE-C."""
    _WRITING.sse_c = bool(self.headers.get(_SSE_C))
    try:
        return _moto_key_response(self, request, full_url)
    finally:
        _WRITING.sse_c = False


def _put_object(
    self: S3Backend, bucket_name: str, key_name: str, value: Any, **kwargs: Any
) -> FakeKey:
    """moto's S3Backend.put_object, where every object write ends (PutObject, CopyObject,
    CompleteMultipartUpload): under the write lock, its ETag chosen by its encryption."""
    with _WRITES, _etags_not_md5(_not_md5(self, bucket_name, kwargs.get("encryption"))):
        return _moto_put_object(self, bucket_name, key_name, value, **kwargs)


def _create_multipart_upload(self: S3Backend, bucket_name: str, *args: Any) -> FakeMultipart:
    """moto's CreateMultipartUpload, the upload noting whether its parts and object get ETags
    that are not MD5 digests (its encryption is settled when it is created)."""
    multipart = _moto_create_multipart_upload(self, bucket_name, *args)
    setattr(multipart, _NOT_MD5, _not_md5(self, bucket_name, multipart.sse_encryption))
    return multipart


def _set_part(self: FakeMultipart, part_id: int, value: bytes) -> FakeKey:
    """moto's FakeMultipart.set_part (UploadPart, UploadPartCopy), its ETag as its upload's."""
    with _etags_not_md5(getattr(self, _NOT_MD5, False)):
        return _moto_set_part(self, part_id, value)


def _complete_multipart_upload(
    self: S3Backend, bucket_name: str, multipart_id: str, body: Iterator[tuple[int, str]]
) -> FakeKey | None:
    """moto's CompleteMultipartUpload, the object's ETag as its upload's."""
    multipart = self.get_bucket(bucket_name).multiparts.get(multipart_id)
    with _etags_not_md5(getattr(multipart, _NOT_MD5, False)):
        return _moto_complete_multipart_upload(self, bucket_name, multipart_id, body)


def _atomic(method: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        with _WRITES:
            return method(*args, **kwargs)

    return call


def install() -> None:
    """Patch moto's S3 restores and conditional requests in place; calling it again changes
    nothing."""
    S3Response.delete_object = _atomic(_moto_delete_object)  # type: ignore[method-assign]
    S3Response.put_object = _atomic(_moto_put_object_response)  # type: ignore[method-assign]
    S3Backend.put_object = _put_object  # type: ignore[method-assign,assignment]
    S3Response._key_response = _key_response  # type: ignore[method-assign]
    S3Backend.create_multipart_upload = _create_multipart_upload  # type: ignore[method-assign,assignment]
    FakeMultipart.set_part = _set_part  # type: ignore[method-assign]
    S3Backend.complete_multipart_upload = _complete_multipart_upload  # type: ignore[method-assign]
    S3Response._key_response_post = _key_response_post  # type: ignore[method-assign]
    S3Backend.upload_part_copy = _upload_part_copy  # type: ignore[method-assign]
    S3Response.copy_object = _copy_object  # type: ignore[method-assign]
    S3Response.upload_part_copy = _upload_part_copy_response  # type: ignore[method-assign]
    S3Response.head_object = _head_object  # type: ignore[method-assign]
    # moto's status advanced, and sent the Completed event, when the key was read.
    FakeKey.status = property(_key_status, FakeKey.status.fset)  # type: ignore[assignment,attr-defined]
    FakeKey.response_dict = property(_response_dict)  # type: ignore[assignment,method-assign]
    notifications._get_s3_event = _s3_event
    S3Response.get_object = _get_object  # type: ignore[method-assign]
    S3Response._handle_range_header = _handle_range_header  # type: ignore[method-assign]
    FakeKey.value = property(_key_value, _set_key_value)  # type: ignore[assignment]
    FakeMultipart.complete = _complete_multipart  # type: ignore[method-assign,assignment]
    FakeMultipart.dispose = _dispose_multipart  # type: ignore[method-assign]
