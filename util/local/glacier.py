"""Glacier vault emulation on top of moto 5.2.5, closer to what AWS documents.

``install()`` patches moto in place, so it serves ``mock_aws`` and a ``ThreadedMotoServer``
in the same process alike. Call it before the first Glacier request: moto's server builds
its Glacier routes on that request.

Gaps in moto it closes:

- Multipart upload (Initiate, UploadPart, Complete, Abort, ListMultipartUploads, ListParts)
  did not exist; part size, Content-Range, alignment and tree hashes are checked as AWS does.
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
- CreateVault replaced an existing vault, dropping its archives; AWS's is idempotent.

Still moto's: job timing (Expedited 2 s, Standard 5 s, Bulk 10 s) and everything InitiateJob
ignores - job Description/SNSTopic, SNS completion notices, RetrievalByteRange, Range on
GetJobOutput, InsufficientCapacityException, failed jobs. Those belong in
``GlacierResponse.initiate_job``/``get_job_output`` and ``ArchiveJob``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from botocore.utils import calculate_tree_hash
from moto.core.common_types import TYPE_RESPONSE
from moto.core.exceptions import JsonRESTError
from moto.core.utils import iso_8601_datetime_with_milliseconds
from moto.glacier import models as moto_models
from moto.glacier import responses as moto_responses
from moto.glacier import urls as moto_urls
from moto.moto_api._internal import mock_random
from moto.utilities.utils import get_partition

__all__ = ["install"]

MIB = 1024 * 1024
MAX_PART_SIZE = 4096 * MIB  # also the largest single-request UploadArchive
# Multipart operations live under these paths; the action comes from botocore's model.
_MULTIPART_PATHS = (
    "{0}/(?P<account_number>[^/]+)/vaults/(?P<vault_name>[^/]+)/multipart-uploads$",
    "{0}/(?P<account_number>[^/]+)/vaults/(?P<vault_name>[^/]+)/multipart-uploads/"
    "(?P<upload_id>[^/]+)$",
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/\*")


# -- errors, as Glacier sends them ------------------------------------------------------------

class _GlacierError(JsonRESTError):
    """A Glacier error: AWS's JSON body, with the HTTP status of botocore's service model."""

    error_code: ClassVar[str]

    def __init__(self, message: str) -> None:
        super().__init__(self.error_code, message)
        self.description = json.dumps(
            {"code": self.error_code, "message": message, "type": "Client"}
        )


class InvalidParameterValue(_GlacierError):
    error_code = "InvalidParameterValueException"  # HTTP 400, JsonRESTError's default


class MissingParameterValue(_GlacierError):
    error_code = "MissingParameterValueException"


class ResourceNotFound(_GlacierError):
    error_code = "ResourceNotFoundException"
    code = 404


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
                {"RangeInBytes": f"{first}-{first + len(part.body) - 1}",
                 "SHA256TreeHash": part.tree_hash}
                for first, part in sorted(self.parts.items())
            ],
            "Marker": None,
        }


class ArchiveJob(moto_models.ArchiveJob):
    """An archive-retrieval job that knows the archive's size and tree hash."""

    def __init__(self, job_id: str, tier: str, arn: str, archive: Archive):
        super().__init__(job_id, tier, arn, archive.archive_id)
        self.archive = archive

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["ArchiveSizeInBytes"] = self.archive.size
        d["ArchiveSHA256TreeHash"] = self.archive.tree_hash
        # No range was asked for, so the whole archive is retrieved.
        d["RetrievalByteRange"] = f"0-{self.archive.size - 1}"
        # AWS leaves SHA256TreeHash null while a whole-archive retrieval is InProgress.
        d["SHA256TreeHash"] = self.archive.tree_hash if d["Completed"] else None
        d["InventorySizeInBytes"] = None  # moto says 10000 once done; not an inventory job
        return d


class Vault(moto_models.Vault):
    """moto's vault with Archive objects, multipart uploads and AWS's not-found errors."""

    def __init__(self, vault_name: str, account_id: str, region: str):
        super().__init__(vault_name, account_id, region)
        self.archives: dict[str, Archive] = {}  # type: ignore[assignment]
        self.uploads: dict[str, MultipartUpload] = {}

    def to_dict(self) -> dict[str, Any]:
        stamp = self.st.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # moto's format for vault dates
        return {
            "CreationDate": stamp,
            "LastInventoryDate": stamp,
            "NumberOfArchives": len(self.archives),
            "SizeInBytes": sum(a.size for a in self.archives.values()),
            "VaultARN": self.arn,
            "VaultName": self.vault_name,
        }

    # archives

    def create_archive(
        self, body: bytes, description: str, checksum: str | None = None
    ) -> Archive:  # type: ignore[override]
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
        self.archives[archive.archive_id] = archive
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

    def delete_archive(self, archive_id: str) -> Archive:  # type: ignore[override]
        return self.archives.pop(self.get_archive(archive_id).archive_id)

    # jobs

    def initiate_job(self, job_type: str, tier: str, archive_id: str | None) -> str:
        if job_type != "archive-retrieval":
            return super().initiate_job(job_type, tier, archive_id)
        archive = self.get_archive(archive_id)
        job_id = moto_models.get_job_id()
        self.jobs[job_id] = ArchiveJob(job_id, tier, self.arn, archive)
        return job_id

    def describe_job(self, job_id: str) -> moto_models.Job:
        if job_id not in self.jobs:
            raise ResourceNotFound(f"The job ID was not found: {job_id}")
        return self.jobs[job_id]

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
        upload = self.get_upload(upload_id)
        body, tree_hash = upload.assemble(archive_size, checksum)
        del self.uploads[upload_id]  # frees the parts: only the joined archive stays
        return self._add_archive(body, upload.description, tree_hash)

    def abort_multipart_upload(self, upload_id: str) -> None:
        del self.uploads[self.get_upload(upload_id).upload_id]


def _create_vault(self: moto_models.GlacierBackend, vault_name: str) -> None:
    """CreateVault: AWS's is idempotent; moto's replaced the vault and its archives."""
    if vault_name not in self.vaults:
        self.vaults[vault_name] = Vault(vault_name, self.account_id, self.region_name)


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
        return _respond(201, {
            "Location": self._location("archives", archive.archive_id),
            "x-amz-archive-id": archive.archive_id,
            "x-amz-sha256-tree-hash": archive.tree_hash,
        })

    def upload_archive(self) -> TYPE_RESPONSE:
        archive = self._vault().create_archive(
            self.body,
            self.headers.get("x-amz-archive-description") or "",
            self.headers.get("x-amz-sha256-tree-hash"),
        )
        return self._archive_created(archive)

    def get_job_output(self) -> TYPE_RESPONSE:
        job_id = self.uri_match["jobId"]
        vault = self._vault()
        job = vault.describe_job(job_id)
        if not vault.job_ready(job_id):
            raise InvalidParameterValue(
                f"The job is not currently available for download: {job_id}"
            )
        output = vault.get_job_output(job_id)
        if not isinstance(job, ArchiveJob):
            return _respond(200, {"content-type": "application/json"}, json.dumps(output))
        headers = {
            "content-type": "application/octet-stream",
            "x-amz-sha256-tree-hash": job.archive.tree_hash,
        }
        if job.archive.description:
            headers["x-amz-archive-description"] = job.archive.description
        return _respond(200, headers, cast(bytes, output))

    def initiate_multipart_upload(self) -> TYPE_RESPONSE:
        upload = self._vault().initiate_multipart_upload(
            _part_size(self.headers.get("x-amz-part-size")),
            self.headers.get("x-amz-archive-description") or "",
        )
        return _respond(201, {
            "Location": self._location("multipart-uploads", upload.upload_id),
            "x-amz-multipart-upload-id": upload.upload_id,
        })

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


def install() -> None:
    """Patch moto's Glacier in place; calling it again changes nothing."""
    moto_models.GlacierBackend.create_vault = _create_vault  # type: ignore[method-assign]
    moto_models.GlacierBackend.describe_vault = _describe_vault  # type: ignore[method-assign]
    # moto builds its routes (in process: per request; server: on the first Glacier request)
    # from this dict, so every path, old and new, is pointed at our handler in place.
    paths = moto_urls.url_paths
    for path in [*paths, *_MULTIPART_PATHS]:
        paths[path] = GlacierResponse.dispatch
