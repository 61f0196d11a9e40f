"""How many parts an S3 object was made in, told by its ETag, and the part layouts that keep
a copy's ETag from being another's (util/archives: a copy thaw puts back must never have the
original's ETag, or a late archive message could delete it: docs/design.md).

Unencrypted (or SSE-S3), an ETag is the MD5 of the bytes (one request) or of the parts' MD5s
followed by ``-<parts>``: equal bytes with an equal part layout have equal ETags. Under SSE-KMS
an ETag is no MD5, new for every write, and a multipart one keeps its ``-<parts>``.
"""

from __future__ import annotations

import hashlib
import math

from s3transfer.utils import ChunksizeAdjuster

MIB = 1024 * 1024
MIN_PART = 5 * MIB  # S3's smallest part but the last
MAX_SINGLE_COPY = 5 * 1024 * MIB  # S3's largest CopyObject


def etag_parts(etag: str) -> int:
    """How many parts an object with this ETag was uploaded in; 0 for a single request."""
    _, dash, tail = etag.strip('"').rpartition("-")
    return int(tail) if dash and tail.isdigit() else 0


def parts(size: int, part_size: int) -> int:
    """How many parts s3transfer makes of `size` bytes with `part_size` (it may enlarge it)."""
    return max(1, math.ceil(size / ChunksizeAdjuster().adjust_chunksize(part_size, size)))


def one_part_etag(md5_etag: str) -> str:
    """The ETag of a one-part multipart copy of an object whose ETag is the MD5 `md5_etag`
    (an archive made without CHECKSUM, in an unencrypted bucket)."""
    md5 = bytes.fromhex(md5_etag.strip('"'))
    return f'"{hashlib.md5(md5).hexdigest()}-1"'


def distinct_layout(size: int, avoid: str | None, part_size: int) -> int:
    """A part size whose copy of `size` bytes cannot have the ETag `avoid`; 0: one request.

    The configured part size unless that makes as many parts as `avoid` has, then twice it,
    then S3's smallest part; a one-part original of at most 5 MiB is copied in one request.
    """
    taken = None if avoid is None else etag_parts(avoid)
    for candidate in (part_size, 2 * part_size, MIN_PART):
        if parts(size, candidate) != taken:
            return candidate
    return 0
