"""Where archived results live, behind one interface (`Backend`): a Glacier vault
(util/archives/vault/) or S3's Glacier storage classes (util/archives/s3.py), chosen by
``[gas] archive_backend`` in `backend_class` and nowhere else. Archive, restore, thaw and the
sweep speak only to this interface; what each back end does is in docs/utilities.md
("Archive back ends"). Retiring one means deleting its module; adding one, writing one.
"""

from __future__ import annotations

import enum
import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from util.archives.layout import MIB
from util.aws import Aws, head_object
from util.util_config import Config

log = logging.getLogger("gas")

EXPEDITED, STANDARD = "Expedited", "Standard"


class Status(enum.Enum):
    """Where a retrieval stands, as its completion notice and the back end tell it."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    IN_PROGRESS = "InProgress"
    GONE = "Gone"  # the back end knows no such retrieval (Glacier job) or archive (S3 object)


class UploadCancelled(Exception):
    """The transfer was abandoned on request; nothing of it was committed."""


class SourceChanged(Exception):
    """The object being archived no longer has the ETag the copy was pinned to."""


class ExpeditedUnavailable(Exception):
    """No Expedited capacity now: the back end's answer, final at once."""


class ChecksumMismatch(Exception):
    """Bytes brought back are not the archive's; nothing was committed."""


@dataclass
class Source:
    """The S3 result being archived, as the back end's first look saw it (`Backend.source`).

    `first_part`: bytes already read from its start (the vault's look is the first ranged
    GET of the upload), handed over once by `take_first_part`.
    """

    bucket: str
    key: str
    size: int
    etag: str
    first_part: bytes = b""

    def take_first_part(self) -> bytes:
        first, self.first_part = self.first_part, b""
        return first


def head_source(s3: Any, bucket: str, key: str) -> Source | None:
    """The result's size and ETag from a HeadObject; None if there is no such object."""
    head = head_object(s3, bucket, key)
    return None if head is None else Source(bucket, key, head["ContentLength"], head["ETag"])


@dataclass(frozen=True)
class Upload:
    """An archive made, perhaps not yet committed (`Backend.upload`).

    `record`: what committing it needs, for a back end that commits apart from making (the
    vault: a multipart upload, completed once recorded): the caller saves it on the job first,
    so that a worker that dies in between leaves the next delivery what it needs to commit
    the same upload. `archive_id`: known already (S3: the copy is the archive).
    """

    archive_id: str | None = None
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class Completion:
    """What a completion notice says, as far as the back end can vouch for it."""

    retrieval_id: str
    job_id: str
    archive_id: str | None  # None: the back end knows no such retrieval
    status: Status
    detail: str = ""
    size: int = 0  # the retrieved archive's bytes (0 if the back end did not say)
    described: Any = field(default=None, compare=False)  # the back end's own, for copy_back


@dataclass(frozen=True)
class Listing:
    """Every archive of this pipeline's in the back end, as of `taken` (epoch seconds): id ->
    (job id, when it was made); None if not known yet. The vault's is an inventory, up to a
    day old; S3's is live. `note`: what the report should say of it."""

    archives: dict[str, tuple[str, float]] | None
    taken: float
    note: str = ""


class Backend(Protocol):
    """What archive, restore, thaw, the sweep and the doctor need from where archives live."""

    # The service that publishes completion notices on the thaw topic, and whether archives
    # are objects in ``[gas] archive_bucket`` (which workers then write to, and from which
    # the notices come).
    PUBLISHER: ClassVar[str]
    IN_BUCKET: ClassVar[bool]

    def source(self, bucket: str, key: str) -> Source | None:
        """The S3 result about to be archived, or None if there is no such object."""

    def upload(
        self, job_id: str, user_id: str, source: Source, cancelled: threading.Event
    ) -> Upload:
        """Copy the result into an archive, pinned to its ETag (SourceChanged); nothing is
        deleted. Made again after a crash, it makes no second archive (docs/design.md)."""

    def commit(self, upload: Upload) -> str | None:
        """The archive id of an upload, committing it if need be (safe to repeat); None if it
        can no longer be (a vault upload Glacier has forgotten)."""

    def abandon(self, upload: Upload) -> None:
        """Give up an upload that will not be committed (best effort)."""

    def delete(self, archive_id: str) -> None:
        """Delete an archive; one already gone counts as deleted."""

    def tiers(self, archive_id: str) -> Sequence[str]:
        """The retrieval tiers to try, in order."""

    def start_retrieval(self, archive_id: str, job_id: str, tier: str) -> str:
        """Start bringing an archive back; the retrieval id its completion notice will name.
        Raises ExpeditedUnavailable when there is no Expedited capacity."""

    def completion(self, notice: dict[str, Any]) -> Completion | None:
        """Read a completion notice; None if there is nothing to do, InvalidMessage if it is
        not one."""

    def copy_back(
        self,
        completion: Completion,
        bucket: str,
        key: str,
        avoid_etag: str | None,
        cancelled: threading.Event,
    ) -> None:
        """Put the retrieved archive at bucket/key, verified, with an ETag other than
        `avoid_etag`; raises ChecksumMismatch or UploadCancelled having committed nothing."""

    def listing(self, now: float) -> Listing:
        """Every archive there is, for the sweep, as far as the back end can tell at `now`."""

    def prepare_listing(self) -> str:
        """Ask for a listing for a later pass, where one takes time; a note for the report
        (empty if there is nothing to say)."""

    def exists(self, archive_id: str) -> tuple[bool, float] | None:
        """Whether the archive exists now and when it was made; None if the back end cannot
        say but through a listing (the vault)."""

    def of_content(self, archive_id: str, etag: str) -> bool:
        """Whether `archive_id` is the archive `upload` makes of a result with this ETag, so
        that a message delivered again finds and records it (S3: its key)."""

    def check_store(self) -> tuple[bool, str, str]:
        """For the doctor: whether the store is there as the back end needs it, a line
        saying so, and the fix if not."""


# Each back end by its ``archive_backend`` name: its module and class, imported when chosen.
BACKENDS = {"vault": "util.archives.vault:VaultBackend", "s3": "util.archives.s3:S3Backend"}


def backend_named(name: str) -> Any:
    """The class of the back end `name` (one of BACKENDS)."""
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def backend_class(config: Config) -> Any:
    """The class of the back end ``[gas] archive_backend`` names: the one place that reads it."""
    return backend_named(config.gas.archive_backend)


def backend_for(config: Config, aws: Aws) -> Backend:
    """The back end the configuration chooses."""
    return backend_class(config)(config, aws)


class Progress:
    """Bytes moved by one transfer (from any thread); a log line with the rate and ETA every
    `every` seconds."""

    def __init__(
        self, what: str, size: int, every: float, clock: Callable[[], float] = time.monotonic
    ):
        self.what, self.size, self.every, self.clock = what, size, every, clock
        self.moved = 0
        self.started = clock()
        self.report_at = self.started + every
        self.lock = threading.Lock()

    def add(self, amount: int) -> None:
        with self.lock:
            self.moved += amount
            now = self.clock()
            if now < self.report_at:
                return
            self.report_at = now + self.every
            moved = self.moved
        rate = moved / max(now - self.started, 1e-9)
        eta = (self.size - moved) / rate if rate else float("inf")
        log.info(
            "%s: %.1f of %.1f MiB (%.0f%%), %.1f MiB/s, about %.0fs left",
            self.what,
            moved / MIB,
            self.size / MIB,
            100 * moved / max(self.size, 1),
            rate / MIB,
            eta,
        )
