"""Glacier vault emulation on top of moto 5.2.5, closer to what AWS documents.

``install(settings)`` patches moto in place, so it serves ``mock_aws`` and a
``ThreadedMotoServer`` in the same process alike. Call it before the first Glacier request:
moto's server builds its Glacier routes on that request. ``configure(...)`` changes the
settings afterwards (tests do, per test: localaws/settings.py).

Gaps in moto it closes:

- Multipart upload (Initiate, UploadPart, Complete, Abort, ListMultipartUploads, ListParts)
  did not exist; part size, Content-Range, alignment and tree hashes are checked as AWS does.
  CompleteMultipartUpload is idempotent as AWS documents it: repeated within a short period
  (here ``COMPLETE_REPEAT_SECONDS``, the emulation's choice: AWS gives no figure) with the same
  size and tree hash, it answers the same archive id and makes no second archive; a completed
  upload is no longer listed, and ListParts and AbortMultipartUpload of it are
  ``ResourceNotFoundException``.
- UploadArchive ignored the client's tree hash and answered with a plain SHA-256 (wrong
  above 1 MiB); an empty body was accepted.
- Archive ids were the MD5 of the body, so two equal files shared one archive; ids are now
  opaque, unique and shaped like AWS's (138 URL-safe characters).
- Archives did not keep a tree hash: DescribeJob said ``ArchiveSizeInBytes: 0`` and no
  ``ArchiveSHA256TreeHash``/``SHA256TreeHash``; the inventory's ``SHA256TreeHash`` was a
  SHA-256. GetJobOutput now also sends the archive's tree hash and description headers.
- Unknown archive, job, upload or vault ids gave HTTP 500 (KeyError/AttributeError) or a
  ``VaultNotFound`` code; they now give ``ResourceNotFoundException`` (404). GetJobOutput
  before the job finished gave a bare 404; it now gives ``InvalidParameterValueException``.
- DeleteArchive of an archive already deleted failed (KeyError); it succeeds (204), as AWS
  documents it idempotent. The vault keeps the ids it deleted; an id it never had is still
  ``ResourceNotFoundException`` (AWS documents nothing for it).
- CreateVault replaced an existing vault, dropping its archives; AWS's is idempotent.
- InitiateJob kept only the type, tier and archive id. Jobs now keep ``Description``,
  ``SNSTopic``, ``Tier`` (Standard if absent; anything but Expedited, Standard or Bulk is
  rejected) and ``RetrievalByteRange`` (megabyte aligned, as AWS requires), and DescribeJob
  and ListJobs give every field of AWS's job description: ``JobDescription``, ``SNSTopic``,
  ``Tier``, ``RetrievalByteRange`` (the whole archive if none was asked for),
  ``SHA256TreeHash`` (null for a range that is not tree-hash aligned and while a
  whole-archive retrieval is InProgress), ``StatusCode`` InProgress/Succeeded/Failed with
  AWS's ``StatusMessage``, ``CompletionDate`` once completed, ``InventorySizeInBytes`` for
  inventories only.
- An inventory was read from the vault as it was when its output was downloaded. AWS
  prepares a vault's inventory about once a day, the first up to a day after the vault is
  made; InitiateJob returns the last one prepared (an error if there is none yet), dated
  (``InventoryDate``) when it was prepared, and that date moves only if archives were made
  or deleted since. With ``inventory_delay_seconds`` N > 0, a vault's first inventory is
  prepared N seconds after CreateVault, then one every ``day_seconds``; before the first,
  an inventory retrieval's InitiateJob is ``ResourceNotFoundException`` (AWS documents an
  error but not which: the emulation's choice), and DescribeVault's
  ``LastInventoryDate``, ``NumberOfArchives`` and ``SizeInBytes`` are null, then those of
  the last inventory. An inventory is prepared lazily, just before the archives change or
  someone asks, so it lists the archives of its due time. With N = 0 (the default)
  inventories are continuous: each is the vault as of its job's start, dated then, and
  DescribeVault counts the vault as it is.
- Job timing was fixed in moto (Expedited 2 s, Standard 5 s, Bulk 10 s); it is now each
  tier's ``*_seconds`` setting (0: complete at once).
- Jobs lived for ever. AWS keeps a job, and its output, for at least 24 hours after it
  completes; here a job is forgotten ``day_seconds`` after it completes (both fixed when it
  is initiated): DescribeJob and GetJobOutput answer ``ResourceNotFoundException``, ListJobs
  leaves it out, and the vault drops it.
- Capacity: with ``expedited_capacity`` false, an Expedited archive retrieval is refused with
  ``InsufficientCapacityException``, HTTP 503, type Server, as AWS does when it has none
  (botocore's standard retry mode retries that 503 as it would AWS's).
- Failures: the next ``fail_retrievals`` archive retrievals end ``Failed``. Their output is
  not available: GetJobOutput answers ``InvalidParameterValueException`` as for an
  unfinished job (AWS documents no other error for it).
- Completion notices did not exist. When a job that names an ``SNSTopic`` completes
  (Succeeded or Failed), a daemon timer publishes the job's DescribeJob JSON to that topic
  with the Subject ``NOTIFICATION_SUBJECT``, through moto's SNS backend in process, so the
  topic's subscriptions (SQS queues) get it, in ``mock_aws`` and in the server alike. Each
  job publishes once. A timer whose job is no longer in moto's live state (its ``mock_aws``
  context ended, the server was reset) publishes nothing.
- GetJobOutput ignored ``Range``. ``Range: bytes=FIRST-LAST`` (or ``FIRST-``) now answers
  206 with only those bytes and ``Content-Range: bytes FIRST-LAST/OUTPUT_SIZE``; every
  answer has ``Accept-Ranges: bytes``. ``x-amz-sha256-tree-hash`` is sent only when AWS
  sends it: for an archive retrieval whose retrieved range and downloaded range are both
  tree-hash aligned, i.e. start at a multiple of some 2^k MiB and span 2^k MiB or up to the
  end (a node of the archive's tree hash). A job's output is its ``RetrievalByteRange``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, ClassVar, cast

from botocore.utils import calculate_tree_hash
from moto.core.common_types import TYPE_RESPONSE
from moto.core.exceptions import JsonRESTError
from moto.core.utils import iso_8601_datetime_with_milliseconds
from moto.glacier import models as moto_models
from moto.glacier import responses as moto_responses
from moto.glacier import urls as moto_urls
from moto.moto_api._internal import mock_random
from moto.sns.models import sns_backends
from moto.utilities.utils import get_partition

from localaws.settings import Settings, configure, current_settings, take_failure

__all__ = [
    "NOTIFICATION_SUBJECT",
    "install",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PART_SIZE = 4096 * MIB  # also the largest single-request UploadArchive
# Multipart operations live under these paths; the action comes from botocore's model.
_MULTIPART_PATHS = (
    "{0}/(?P<account_number>[^/]+)/vaults/(?P<vault_name>[^/]+)/multipart-uploads$",
    "{0}/(?P<account_number>[^/]+)/vaults/(?P<vault_name>[^/]+)/multipart-uploads/"
    "(?P<upload_id>[^/]+)$",
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/\*")
_RANGE_HEADER = re.compile(r"bytes=(\d+)-(\d*)")
_RETRIEVAL_RANGE = re.compile(r"(\d+)-(\d+)")
TIERS = ("Expedited", "Standard", "Bulk")
# AWS documents the notice's body (DescribeJob's JSON) but, as far as found, not its SNS
# Subject; this one is the emulation's choice, and consumers should not rely on it.
NOTIFICATION_SUBJECT = "Notification from AWS Glacier"
FAILED_MESSAGE = "The retrieval failed (emulated: [local] fail_retrievals)"
COMPLETE_REPEAT_SECONDS = 3600  # how long a repeated Complete answers the same archive id


# -- errors, as Glacier sends them ------------------------------------------------------------


class _GlacierError(JsonRESTError):
    """A Glacier error: AWS's JSON body and HTTP status (its Error Responses table)."""

    error_code: ClassVar[str]
    error_source: ClassVar[str] = "Client"  # the body's "type": who is to blame

    def __init__(self, message: str) -> None:
        super().__init__(self.error_code, message)
        self.description = json.dumps(
            {"code": self.error_code, "message": message, "type": self.error_source}
        )


class InvalidParameterValue(_GlacierError):
    error_code = "InvalidParameterValueException"  # HTTP 400, JsonRESTError's default


class MissingParameterValue(_GlacierError):
    error_code = "MissingParameterValueException"


class ResourceNotFound(_GlacierError):
    error_code = "ResourceNotFoundException"
    code = 404


class InsufficientCapacity(_GlacierError):
    error_code = "InsufficientCapacityException"
    code = 503  # AWS's table; botocore's model says 400 but takes the status from the wire
    error_source = "Server"


def _tree_hash(body: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(body))


def _check_checksum(sent: str, calculated: str) -> None:
    if sent.lower() != calculated:
        raise InvalidParameterValue(
            f"Checksum mismatch: expected {calculated} (calculated), actual {sent} (specified)"
        )


def _check_content_length(body: bytes) -> None:
    if not 0 < len(body) <= MAX_PART_SIZE:
        raise InvalidParameterValue(f"Invalid Content-Length: {len(body)}")


def _tree_hash_aligned(first: int, last: int, size: int) -> bool:
    """Whether bytes first..last of `size` bytes are "tree-hash aligned" (AWS's term).

    They are when their tree hash is a node of the whole's: they start at a multiple of
    some 2^k MiB and span 2^k MiB, or run from there to the end.
    """
    span = MIB
    while first % span == 0:
        if last + 1 == min(first + span, size):
            return True
        if span >= size:
            return False
        span *= 2
    return False


def _retrieval_range(text: str | None, size: int) -> tuple[int, int]:
    """InitiateJob's RetrievalByteRange: megabyte aligned as AWS requires; default: all."""
    if text is None:
        return 0, size - 1
    match = _RETRIEVAL_RANGE.fullmatch(text)
    first, last = (int(match[1]), int(match[2])) if match else (-1, -1)
    if (
        not match
        or first % MIB
        or last < first
        or last >= size
        or ((last + 1) % MIB and last != size - 1)
    ):
        raise InvalidParameterValue(
            f"Invalid RetrievalByteRange: {text}. It must be StartByte-EndByte within the "
            f"archive ({size} bytes), StartByte a multiple of 1 MiB and EndByte + 1 a "
            f"multiple of 1 MiB or the archive's size."
        )
    return first, last


def _download_range(header: str, size: int) -> tuple[int, int]:
    """GetJobOutput's Range ("bytes=FIRST-LAST" or "bytes=FIRST-"), within `size` bytes."""
    match = _RANGE_HEADER.fullmatch(header.strip())
    first = int(match[1]) if match else -1
    last = min(int(match[2]), size - 1) if match and match[2] else size - 1
    if not match or first >= size or last < first:
        raise InvalidParameterValue(f"Invalid range: {header} (the output is {size} bytes)")
    return first, last


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return iso_8601_datetime_with_milliseconds(moment)


# -- model --------------------------------------------------------------------------------------


@dataclass
class Archive:
    archive_id: str
    body: bytes
    tree_hash: str
    description: str
    creation_date: str = field(default_factory=iso_8601_datetime_with_milliseconds)

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass
class _Part:
    body: bytes
    tree_hash: str


@dataclass
class MultipartUpload:
    upload_id: str
    vault_arn: str
    part_size: int
    description: str
    creation_date: str = field(default_factory=iso_8601_datetime_with_milliseconds)
    # Keyed by first byte: sending a range again replaces that part, as in AWS.
    parts: dict[int, _Part] = field(default_factory=dict)

    def put_part(self, first: int, last: int, body: bytes, checksum: str) -> str:
        """Store one part; return its tree hash.

        A part shorter than the part size is accepted here, since it may be the last one;
        Complete rejects it if it is not (AWS does the same).
        """
        if last - first + 1 != len(body):
            raise InvalidParameterValue(
                f"Content-Range: bytes {first}-{last}/* is incompatible with "
                f"Content-Length: {len(body)}"
            )
        if first % self.part_size or len(body) > self.part_size:
            raise InvalidParameterValue(
                f"Content-Range: bytes {first}-{last}/* does not align with "
                f"part size {self.part_size}"
            )
        tree_hash = _tree_hash(body)
        _check_checksum(checksum, tree_hash)
        self.parts[first] = _Part(body, tree_hash)
        return tree_hash

    def assemble(self, archive_size: int, checksum: str) -> tuple[bytes, str]:
        """The whole archive and its tree hash, if the parts make exactly that archive."""
        expected_first = 0
        ordered = sorted(self.parts.items())
        for index, (first, part) in enumerate(ordered):
            is_last = index == len(ordered) - 1
            if first != expected_first or (not is_last and len(part.body) != self.part_size):
                raise InvalidParameterValue(
                    f"Parts are not contiguous from byte 0 in part size {self.part_size}: "
                    f"expected a part at byte {expected_first}, found one at {first} of "
                    f"{len(part.body)} bytes"
                )
            expected_first += len(part.body)
        if expected_first != archive_size or not ordered:
            raise InvalidParameterValue(
                f"The uploaded parts cover {expected_first} bytes, not the archive size "
                f"{archive_size}"
            )
        body = b"".join(part.body for _, part in ordered)
        # botocore 1.44.5 has no public helper combining part digests, so the archive is
        # hashed whole: the same value as combining the parts' aligned subtree hashes, and
        # it checks the assembled bytes themselves.
        tree_hash = _tree_hash(body)
        _check_checksum(checksum, tree_hash)
        return body, tree_hash

    def to_dict(self) -> dict[str, Any]:
        """An UploadsList entry of ListMultipartUploads."""
        return {
            "MultipartUploadId": self.upload_id,
            "VaultARN": self.vault_arn,
            "ArchiveDescription": self.description,
            "PartSizeInBytes": self.part_size,
            "CreationDate": self.creation_date,
        }

    def parts_dict(self) -> dict[str, Any]:
        """The ListParts response, every part at once."""
        return {
            **self.to_dict(),
            "Parts": [
                {
                    "RangeInBytes": f"{first}-{first + len(part.body) - 1}",
                    "SHA256TreeHash": part.tree_hash,
                }
                for first, part in sorted(self.parts.items())
            ],
            "Marker": None,
        }


@dataclass(frozen=True)
class VaultInventory:
    """An inventory Glacier prepared: the vault's archives as of `date`."""

    date: datetime
    archives: list[dict[str, Any]]


class _Job(moto_models.Job):
    """A job timed by the settings, with AWS's job description and completion notice."""

    action: ClassVar[str]

    def __init__(
        self,
        job_id: str,
        vault: Vault,
        tier: str,
        settings: Settings,
        description: str | None,
        sns_topic: str | None,
    ) -> None:
        # moto's Job.__init__ is not called: it fixes the timing by tier.
        self.job_id = job_id
        self.vault = vault
        self.tier = tier
        self.description = description
        self.sns_topic = sns_topic
        self.failure: str | None = None  # the StatusMessage of a job that is to fail
        self.created = _now()
        self.due = self.created + timedelta(seconds=settings.seconds(tier))
        # AWS keeps a job "for at least 24 hours" after it completes: here a day exactly.
        self.forgotten_at = self.due + timedelta(seconds=settings.day_seconds)

    def completed(self, now: datetime | None = None) -> bool:
        return (now or _now()) >= self.due

    def output(self) -> bytes:
        raise NotImplementedError

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """DescribeJob's answer (and the completion notice's body) as of `now`."""
        done = self.completed(now)
        if not done:
            status, message = "InProgress", "Operation in progress."
        elif self.failure is not None:
            status, message = "Failed", self.failure
        else:
            status, message = "Succeeded", "Succeeded"
        return {
            "Action": self.action,
            "ArchiveId": None,
            "ArchiveSHA256TreeHash": None,
            "ArchiveSizeInBytes": None,
            "Completed": done,
            "CompletionDate": _stamp(self.due) if done else None,
            "CreationDate": _stamp(self.created),
            "InventorySizeInBytes": None,
            "JobDescription": self.description,
            "JobId": self.job_id,
            "RetrievalByteRange": None,
            "SHA256TreeHash": None,
            "SNSTopic": self.sns_topic,
            "StatusCode": status,
            "StatusMessage": message,
            "Tier": self.tier,
            "VaultARN": self.vault.arn,
        }

    def schedule_notice(self) -> None:
        """Publish the completion notice to the job's topic, if any, when the job is due."""
        if self.sns_topic is None:
            return
        timer = threading.Timer((self.due - _now()).total_seconds(), self._publish_notice)
        timer.daemon = True  # a pending notice must not keep a test run or server alive
        timer.start()

    def _publish_notice(self) -> None:
        # A job whose mock_aws context ended (or whose server was reset) is gone from moto's
        # state; its notice would land on a later test's topic of the same name.
        if not self.vault.holds(self):
            return
        # As of `due`: the timer's clock may fire a hair early, and the job is done by then.
        message = json.dumps(self.to_dict(self.due))
        try:
            _, _, _, region, account, _ = cast(str, self.sns_topic).split(":", 5)
            sns_backends[account][region].publish(
                message, arn=self.sns_topic, subject=NOTIFICATION_SUBJECT
            )
        except Exception:  # noqa: BLE001 - a notice no topic takes is dropped, as by AWS
            log.debug(
                "Glacier job %s: no completion notice to %s",
                self.job_id,
                self.sns_topic,
                exc_info=True,
            )


class InventoryJob(_Job):
    """The vault's last inventory when the job starts: AWS's inventory is a snapshot, taken
    before the job (about once a day), never the vault as it is when the output is read.
    Without `inventory` (a vault whose inventories are continuous) it is the vault as of the
    job's start."""

    action = "InventoryRetrieval"

    def __init__(self, *args: Any, inventory: VaultInventory | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if inventory is None:
            inventory = VaultInventory(self.created, self.vault.get_archive_list())
        self.snapshot = json.dumps(
            {
                "VaultARN": self.vault.arn,
                "InventoryDate": _stamp(inventory.date),
                "ArchiveList": inventory.archives,
            }
        ).encode()

    def output(self) -> bytes:
        return self.snapshot

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        d = super().to_dict(now)
        if d["StatusCode"] == "Succeeded":
            d["InventorySizeInBytes"] = len(self.output())
        return d


class ArchiveJob(_Job):
    """An archive retrieval of the bytes first..last (inclusive) of an archive."""

    action = "ArchiveRetrieval"

    def __init__(
        self,
        job_id: str,
        vault: Vault,
        tier: str,
        settings: Settings,
        description: str | None,
        sns_topic: str | None,
        archive: Archive,
        first: int,
        last: int,
    ) -> None:
        super().__init__(job_id, vault, tier, settings, description, sns_topic)
        self.archive = archive  # kept even if the archive is deleted, as AWS keeps the output
        self.archive_id = archive.archive_id
        self.first, self.last = first, last

    @property
    def whole(self) -> bool:
        return self.first == 0 and self.last == self.archive.size - 1

    def output(self) -> bytes:
        return self.archive.body if self.whole else self.archive.body[self.first : self.last + 1]

    @cached_property
    def output_tree_hash(self) -> str | None:
        """The retrieved range's tree hash, which AWS gives only for an aligned range."""
        if not _tree_hash_aligned(self.first, self.last, self.archive.size):
            return None
        return self.archive.tree_hash if self.whole else _tree_hash(self.output())

    def range_tree_hash(self, first: int, body: bytes) -> str | None:
        """x-amz-sha256-tree-hash for `body`, the output's bytes from `first`, if AWS sends
        one.

        AWS sends it when the retrieved range and the downloaded one are both aligned.
        """
        size = self.last - self.first + 1
        last = first + len(body) - 1
        if self.output_tree_hash is None or not _tree_hash_aligned(first, last, size):
            return None
        if first == 0 and last == size - 1:
            return self.output_tree_hash
        return _tree_hash(body)

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        d = super().to_dict(now)
        d["ArchiveId"] = self.archive_id
        d["ArchiveSizeInBytes"] = self.archive.size
        d["ArchiveSHA256TreeHash"] = self.archive.tree_hash
        d["RetrievalByteRange"] = f"{self.first}-{self.last}"
        # AWS leaves it null while a whole-archive retrieval is InProgress (and always for
        # an unaligned range, which output_tree_hash already says).
        if not (self.whole and d["StatusCode"] == "InProgress"):
            d["SHA256TreeHash"] = self.output_tree_hash
        return d


class Vault(moto_models.Vault):
    """moto's vault with Archive objects, multipart uploads and AWS's not-found errors."""

    def __init__(
        self,
        vault_name: str,
        account_id: str,
        region: str,
        backend: moto_models.GlacierBackend,
        settings: Settings,
    ):
        super().__init__(vault_name, account_id, region)
        self.backend = backend
        self.lock = threading.Lock()  # request threads share the vault's jobs and inventory
        # Inventories: the first `inventory_delay_seconds` after creation, then one a day;
        # none due (delay 0) means continuous: each is the vault as of its job's start.
        delay = settings.inventory_delay_seconds
        self.inventory_due = _now() + timedelta(seconds=delay) if delay else None
        self.inventory_day = timedelta(seconds=settings.day_seconds)
        self.inventory: VaultInventory | None = None
        self.changed = False  # archives made or deleted since the last inventory
        self.archives: dict[str, Archive] = {}  # type: ignore[assignment]
        self.deleted: set[str] = set()  # ids of deleted archives: deleting again succeeds
        self.uploads: dict[str, MultipartUpload] = {}
        # Completed uploads: (size, tree hash, the archive without its body, when), for a
        # repeated Complete.
        self.completed: dict[str, tuple[int, str, Archive, datetime]] = {}

    def holds(self, job: _Job) -> bool:
        """Whether `job` is still this vault's and the vault still its backend's.

        moto's reset (leaving mock_aws, POST /moto-api/reset) empties the backend.
        """
        return self.backend.vaults.get(self.vault_name) is self and self.jobs.get(job.job_id) is job

    def to_dict(self) -> dict[str, Any]:
        """DescribeVault: counts as of the last inventory (none before the first), or of
        now when inventories are continuous."""
        stamp = self.st.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # moto's format for vault dates
        d: dict[str, Any] = {
            "CreationDate": stamp,
            "LastInventoryDate": stamp,
            "NumberOfArchives": len(self.archives),
            "SizeInBytes": sum(a.size for a in self.archives.values()),
            "VaultARN": self.arn,
            "VaultName": self.vault_name,
        }
        with self.lock:
            self._prepare_inventory()
            if self.inventory_due is None:
                return d
            inventory = self.inventory
        if inventory is None:
            return {**d, "LastInventoryDate": None, "NumberOfArchives": None, "SizeInBytes": None}
        return {
            **d,
            "LastInventoryDate": _stamp(inventory.date),
            "NumberOfArchives": len(inventory.archives),
            "SizeInBytes": sum(a["Size"] for a in inventory.archives),
        }

    def _prepare_inventory(self) -> None:
        """Prepare the inventory due by now, if any (the caller holds the lock).

        Called before every change of the archives, so the archives it lists are those of
        its due time. As AWS: "the inventory date is only updated if there have been archive
        additions or deletions to the vault since the last inventory"."""
        due, now = self.inventory_due, _now()
        if due is None or now < due:
            return
        if self.inventory is None or self.changed:
            self.inventory = VaultInventory(due, self.get_archive_list())
            self.changed = False
        self.inventory_due = due + self.inventory_day * ((now - due) // self.inventory_day + 1)

    def last_inventory(self) -> VaultInventory | None:
        """What an inventory retrieval started now lists (None: the vault as of now); AWS's
        "if an inventory has not been completed for the vault an error is returned"."""
        with self.lock:
            self._prepare_inventory()
            if self.inventory_due is not None and self.inventory is None:
                raise ResourceNotFound(
                    f"The vault has no inventory yet (emulated: [local] "
                    f"inventory_delay_seconds): {self.arn}"
                )
            return self.inventory

    # archives

    def create_archive(  # type: ignore[override]
        self, body: bytes, description: str, checksum: str | None = None
    ) -> Archive:
        """UploadArchive: a new archive, after checking the client's tree hash if sent."""
        _check_content_length(body)
        tree_hash = _tree_hash(body)
        if checksum is not None:
            _check_checksum(checksum, tree_hash)
        return self._add_archive(body, description, tree_hash)

    def _add_archive(self, body: bytes, description: str, tree_hash: str) -> Archive:
        # 103 random bytes are 138 URL-safe characters, the length of AWS's archive ids;
        # moto's seeded random keeps ids reproducible when a test seeds it.
        archive = Archive(mock_random.token_urlsafe(103), body, tree_hash, description)
        with self.lock:
            self._prepare_inventory()
            self.archives[archive.archive_id] = archive
            self.changed = True
        return archive

    def get_archive(self, archive_id: str | None) -> Archive:
        if archive_id not in self.archives:
            raise ResourceNotFound(f"The archive ID was not found: {archive_id}")
        return self.archives[archive_id]

    def get_archive_body(self, archive_id: str) -> bytes:  # type: ignore[override]
        return self.get_archive(archive_id).body

    def get_archive_list(self) -> list[dict[str, Any]]:
        return [
            {
                "ArchiveId": a.archive_id,
                "ArchiveDescription": a.description,
                "CreationDate": a.creation_date,
                "Size": a.size,
                "SHA256TreeHash": a.tree_hash,
            }
            for a in self.archives.values()
        ]

    def delete_archive(self, archive_id: str) -> None:  # type: ignore[override]
        """DeleteArchive, idempotent as AWS documents: an archive deleted before is no
        error; an id this vault never had is ResourceNotFoundException."""
        with self.lock:
            if archive_id in self.deleted:
                return
            self.get_archive(archive_id)
            self._prepare_inventory()
            del self.archives[archive_id]
            self.deleted.add(archive_id)
            self.changed = True

    # jobs

    def initiate_job(
        self,
        job_type: str,
        tier: str,
        archive_id: str | None,
        *,
        description: str | None = None,
        sns_topic: str | None = None,
        byte_range: str | None = None,
    ) -> str:
        """InitiateJob for an archive or inventory retrieval, timed by the settings."""
        if tier not in TIERS:
            raise InvalidParameterValue(
                f"Invalid tier: {tier}. Valid values are: {', '.join(TIERS)}"
            )
        settings = current_settings()
        job_id = moto_models.get_job_id()
        job: _Job
        if job_type == "inventory-retrieval":
            job = InventoryJob(
                job_id,
                self,
                tier,
                settings,
                description,
                sns_topic,
                inventory=self.last_inventory(),
            )
        elif job_type == "archive-retrieval":
            archive = self.get_archive(archive_id)
            first, last = _retrieval_range(byte_range, archive.size)
            if tier == "Expedited" and not settings.expedited_capacity:
                raise InsufficientCapacity(
                    "There is insufficient capacity to process this expedited request."
                )
            job = ArchiveJob(
                job_id,
                self,
                tier,
                settings,
                description,
                sns_topic,
                archive,
                first,
                last,
            )
            if take_failure():
                job.failure = FAILED_MESSAGE
        else:
            raise InvalidParameterValue(f"Invalid job type: {job_type}")
        with self.lock:
            self._forget_old_jobs()
            self.jobs[job_id] = job
        job.schedule_notice()
        return job_id

    def _forget_old_jobs(self) -> None:
        """Drop the jobs kept their day after completion (the caller holds the lock)."""
        now = _now()
        for job_id in [i for i, job in self.jobs.items() if now >= cast(_Job, job).forgotten_at]:
            del self.jobs[job_id]

    def describe_job(self, job_id: str) -> _Job:
        with self.lock:
            self._forget_old_jobs()
            job = self.jobs.get(job_id)
        if job is None:
            raise ResourceNotFound(f"The job ID was not found: {job_id}")
        return cast(_Job, job)

    def list_jobs(self) -> list[moto_models.Job]:
        with self.lock:
            self._forget_old_jobs()
            return list(self.jobs.values())

    # multipart uploads

    def initiate_multipart_upload(self, part_size: int, description: str) -> MultipartUpload:
        # 69 random bytes are 92 characters, the length of AWS's upload ids.
        upload = MultipartUpload(mock_random.token_urlsafe(69), self.arn, part_size, description)
        self.uploads[upload.upload_id] = upload
        return upload

    def get_upload(self, upload_id: str) -> MultipartUpload:
        if upload_id not in self.uploads:
            raise ResourceNotFound(f"The upload ID was not found: {upload_id}")
        return self.uploads[upload_id]

    def complete_multipart_upload(
        self, upload_id: str, archive_size: int, checksum: str
    ) -> Archive:
        repeated = self.completed.get(upload_id)
        if repeated is not None and _now() - repeated[3] < timedelta(
            seconds=COMPLETE_REPEAT_SECONDS
        ):
            size, tree_hash, archive, _ = repeated
            if (archive_size, checksum.lower()) != (size, tree_hash):
                raise InvalidParameterValue(
                    f"The upload {upload_id} was completed with another size or tree hash"
                )
            return archive
        upload = self.get_upload(upload_id)
        body, tree_hash = upload.assemble(archive_size, checksum)
        del self.uploads[upload_id]  # frees the parts: only the joined archive stays
        archive = self._add_archive(body, upload.description, tree_hash)
        now = _now()
        self.completed = {
            k: v
            for k, v in self.completed.items()
            if now - v[3] < timedelta(seconds=COMPLETE_REPEAT_SECONDS)
        }
        answer = Archive(archive.archive_id, b"", tree_hash, archive.description)
        self.completed[upload_id] = (archive_size, tree_hash, answer, now)
        return archive

    def abort_multipart_upload(self, upload_id: str) -> None:
        del self.uploads[self.get_upload(upload_id).upload_id]


def _create_vault(self: moto_models.GlacierBackend, vault_name: str) -> None:
    """CreateVault: AWS's is idempotent; moto's replaced the vault and its archives."""
    if vault_name not in self.vaults:
        self.vaults[vault_name] = Vault(
            vault_name, self.account_id, self.region_name, self, current_settings()
        )


def _describe_vault(self: moto_models.GlacierBackend, vault_name: str) -> moto_models.Vault:
    """The vault, or AWS's ResourceNotFoundException (moto raised a 400 ``VaultNotFound``)."""
    if vault_name not in self.vaults:
        partition = get_partition(self.region_name)
        raise ResourceNotFound(
            f"Vault not found for ARN: arn:{partition}:glacier:{self.region_name}:"
            f"{self.account_id}:vaults/{vault_name}"
        )
    return self.vaults[vault_name]


# -- HTTP ---------------------------------------------------------------------------------------


def _respond(status: int, headers: dict[str, Any], body: str | bytes = "") -> TYPE_RESPONSE:
    # moto takes the status from the "status" header, not from the tuple's first item.
    return status, {**headers, "status": status}, body


def _required_header(headers: Any, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise MissingParameterValue(f"Required header {name} is missing")
    return value


def _part_size(value: str | None) -> int:
    """x-amz-part-size: 1 MiB times a power of two, up to 4 GiB."""
    size = int(value) if value and value.isdigit() else 0
    mib, rest = divmod(size, MIB)
    is_power_of_two = mib > 0 and mib & (mib - 1) == 0
    if rest or not is_power_of_two or size > MAX_PART_SIZE:
        raise InvalidParameterValue(
            f"Invalid part size: {value}. Part size must not be null, must be a power of two "
            f"and be between {MIB} and {MAX_PART_SIZE} bytes."
        )
    return size


class GlacierResponse(moto_responses.GlacierResponse):
    """moto's Glacier handler plus the multipart operations and AWS's checks.

    moto dispatches a REST request to the snake_case method named after the botocore
    operation it matches, and fills ``uri_match`` with that operation's URI parameters.
    """

    def _vault(self) -> Vault:
        # install() makes CreateVault build our Vault, so every vault is one.
        return cast(Vault, self.glacier_backend.describe_vault(self.uri_match["vaultName"]))

    def _location(self, *path: str) -> str:
        return "/".join(["", self.current_account, "vaults", self.uri_match["vaultName"], *path])

    def _archive_created(self, archive: Archive) -> TYPE_RESPONSE:
        return _respond(
            201,
            {
                "Location": self._location("archives", archive.archive_id),
                "x-amz-archive-id": archive.archive_id,
                "x-amz-sha256-tree-hash": archive.tree_hash,
            },
        )

    def upload_archive(self) -> TYPE_RESPONSE:
        archive = self._vault().create_archive(
            self.body,
            self.headers.get("x-amz-archive-description") or "",
            self.headers.get("x-amz-sha256-tree-hash"),
        )
        return self._archive_created(archive)

    def initiate_job(self) -> TYPE_RESPONSE:
        parameters = json.loads(self.body or b"{}")
        job_id = self._vault().initiate_job(
            parameters.get("Type"),
            parameters.get("Tier") or "Standard",
            parameters.get("ArchiveId"),
            description=parameters.get("Description"),
            sns_topic=parameters.get("SNSTopic"),
            byte_range=parameters.get("RetrievalByteRange"),
        )
        return _respond(202, {"Location": self._location("jobs", job_id), "x-amz-job-id": job_id})

    def get_job_output(self) -> TYPE_RESPONSE:
        job_id = self.uri_match["jobId"]
        job = self._vault().describe_job(job_id)
        if not job.completed() or job.failure is not None:
            raise InvalidParameterValue(
                f"The job is not currently available for download: {job_id}"
            )
        output = job.output()
        first, last = 0, len(output) - 1
        status = 200
        headers: dict[str, Any] = {"Accept-Ranges": "bytes"}
        requested = self.headers.get("Range")
        if requested:
            first, last = _download_range(requested, len(output))
            status = 206  # AWS answers any ranged request so, even for the whole output
            headers["Content-Range"] = f"bytes {first}-{last}/{len(output)}"
        body = output[first : last + 1]
        if not isinstance(job, ArchiveJob):
            headers["content-type"] = "application/json"
            return _respond(status, headers, body)
        headers["content-type"] = "application/octet-stream"
        tree_hash = job.range_tree_hash(first, body)
        if tree_hash is not None:
            headers["x-amz-sha256-tree-hash"] = tree_hash
        if job.archive.description:
            headers["x-amz-archive-description"] = job.archive.description
        return _respond(status, headers, body)

    def initiate_multipart_upload(self) -> TYPE_RESPONSE:
        upload = self._vault().initiate_multipart_upload(
            _part_size(self.headers.get("x-amz-part-size")),
            self.headers.get("x-amz-archive-description") or "",
        )
        return _respond(
            201,
            {
                "Location": self._location("multipart-uploads", upload.upload_id),
                "x-amz-multipart-upload-id": upload.upload_id,
            },
        )

    def upload_multipart_part(self) -> TYPE_RESPONSE:
        upload = self._vault().get_upload(self.uri_match["uploadId"])
        content_range = _required_header(self.headers, "Content-Range")
        match = _CONTENT_RANGE.fullmatch(content_range)
        if not match:
            raise InvalidParameterValue(f"Invalid Content-Range: {content_range}")
        checksum = _required_header(self.headers, "x-amz-sha256-tree-hash")
        tree_hash = upload.put_part(int(match[1]), int(match[2]), self.body, checksum)
        return _respond(204, {"x-amz-sha256-tree-hash": tree_hash})

    def complete_multipart_upload(self) -> TYPE_RESPONSE:
        size = _required_header(self.headers, "x-amz-archive-size")
        if not size.isdigit():
            raise InvalidParameterValue(f"Invalid archive size: {size}")
        archive = self._vault().complete_multipart_upload(
            self.uri_match["uploadId"],
            int(size),
            _required_header(self.headers, "x-amz-sha256-tree-hash"),
        )
        return self._archive_created(archive)

    def abort_multipart_upload(self) -> TYPE_RESPONSE:
        self._vault().abort_multipart_upload(self.uri_match["uploadId"])
        return _respond(204, {})

    def list_multipart_uploads(self) -> TYPE_RESPONSE:
        uploads = [u.to_dict() for u in self._vault().uploads.values()]
        body = json.dumps({"UploadsList": uploads, "Marker": None})
        return _respond(200, {"content-type": "application/json"}, body)

    def list_parts(self) -> TYPE_RESPONSE:
        upload = self._vault().get_upload(self.uri_match["uploadId"])
        return _respond(200, {"content-type": "application/json"}, json.dumps(upload.parts_dict()))


def install(settings: Settings | None = None) -> None:
    """Patch moto's Glacier in place, and put `settings` in force if given.

    Patching again changes nothing; without `settings` the ones in force stay.
    """
    moto_models.GlacierBackend.create_vault = _create_vault  # type: ignore[method-assign]
    moto_models.GlacierBackend.describe_vault = _describe_vault  # type: ignore[method-assign]
    # moto builds its routes (in process: per request; server: on the first Glacier request)
    # from this dict, so every path, old and new, is pointed at our handler in place.
    paths = moto_urls.url_paths
    for path in [*paths, *_MULTIPART_PATHS]:
        paths[path] = GlacierResponse.dispatch
    if settings is not None:
        configure(settings)
