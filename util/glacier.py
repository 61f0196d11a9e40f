"""The Glacier vault as the utilities use it: streamed, tree-hash-checked uploads and deletes."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from botocore.utils import calculate_tree_hash

MIB = 1024 * 1024
MAX_PARTS = 10_000  # Glacier's limit on parts per multipart upload
MAX_PART_SIZE = 4096 * MIB

ReadRange = Callable[[int, int], bytes]  # (first byte, last byte) inclusive -> those bytes


class UploadCancelled(Exception):
    """The upload was abandoned on request; the multipart upload has been aborted."""


def combine_tree_hashes(digests: list[bytes]) -> str:
    """The whole archive's tree hash from its parts' tree hashes (binary), as hex.

    Parts of a power-of-two number of MiB are whole subtrees of the archive's tree, so the
    parts' hashes combine pairwise exactly as 1 MiB leaves do. botocore only hashes a body
    (`calculate_tree_hash`), so this one step is written here.
    """
    level = digests or [hashlib.sha256(b"").digest()]
    while len(level) > 1:
        pairs = [level[i:i + 2] for i in range(0, len(level), 2)]
        level = [hashlib.sha256(p[0] + p[1]).digest() if len(p) == 2 else p[0] for p in pairs]
    return level[0].hex()


def part_size_for(size: int, configured: int) -> int:
    """The configured part size, doubled as often as needed to stay within 10,000 parts."""
    part = configured
    while part * MAX_PARTS < size and part < MAX_PART_SIZE:
        part *= 2
    return part


class Vault:
    """One Glacier vault."""

    def __init__(self, glacier: BaseClient, name: str):
        self.glacier = glacier
        self.name = name

    def upload(self, read_range: ReadRange, size: int, description: str, part_size: int,
               cancelled: threading.Event | None = None) -> str:
        """Upload `size` bytes read part by part; return the archive id.

        At most one part is in memory at a time. A file that fits in one part goes up in a
        single request; larger files use a multipart upload, aborted if anything fails.
        """
        part_size = part_size_for(size, part_size)
        if size <= part_size:
            body = read_range(0, size - 1) if size else b""
            return self.glacier.upload_archive(
                vaultName=self.name, archiveDescription=description,
                checksum=calculate_tree_hash(io.BytesIO(body)), body=body,
            )["archiveId"]

        upload_id = self.glacier.initiate_multipart_upload(
            vaultName=self.name, archiveDescription=description, partSize=str(part_size)
        )["uploadId"]
        try:
            digests = []
            for start in range(0, size, part_size):
                if cancelled is not None and cancelled.is_set():
                    raise UploadCancelled(f"cancelled after {start} of {size} bytes")
                end = min(start + part_size, size) - 1
                body = read_range(start, end)
                if len(body) != end - start + 1:
                    raise IOError(f"source returned {len(body)} bytes for {start}-{end}")
                checksum = calculate_tree_hash(io.BytesIO(body))
                self.glacier.upload_multipart_part(
                    vaultName=self.name, uploadId=upload_id, range=f"bytes {start}-{end}/*",
                    checksum=checksum, body=body,
                )
                digests.append(bytes.fromhex(checksum))
            return self.glacier.complete_multipart_upload(
                vaultName=self.name, uploadId=upload_id, archiveSize=str(size),
                checksum=combine_tree_hashes(digests),
            )["archiveId"]
        except BaseException:
            self._abort(upload_id)
            raise

    def _abort(self, upload_id: str) -> None:
        # Best effort: Glacier expires an unfinished upload after 24 h anyway.
        try:
            self.glacier.abort_multipart_upload(vaultName=self.name, uploadId=upload_id)
        except ClientError:
            pass

    def delete(self, archive_id: str) -> None:
        """Delete an archive; one that is already gone counts as deleted."""
        try:
            self.glacier.delete_archive(vaultName=self.name, archiveId=archive_id)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
