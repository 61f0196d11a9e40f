"""The local stack's settings: the ``[local]`` section, and the settings in force.

Every emulation (glacier, s3, dynamodb, ses) reads `current_settings()`; `python -m util.local
serve` puts the config's in force (``GAS_LOCAL_*`` variables included), and tests change them
per test with `configure(...)`. The keys are registered with util.util_config here, so that the
utilities' own configuration knows nothing of them: AWS ignores these.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields, replace
from typing import Any

from util.parsers import (
    boolean,
    choice,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from util.util_config import Key, load, markdown_table, register

KEYS: tuple[Key, ...] = (
    Key(
        "local",
        "expedited_seconds",
        "1",
        non_negative_int,
        "local stack: seconds an Expedited Glacier job or S3 restore takes (0: at once)",
    ),
    Key(
        "local",
        "standard_seconds",
        "3",
        non_negative_int,
        "local stack: seconds a Standard Glacier job or S3 restore takes",
    ),
    Key(
        "local",
        "bulk_seconds",
        "5",
        non_negative_int,
        "local stack: seconds a Bulk Glacier job or S3 restore takes",
    ),
    Key(
        "local",
        "expedited_capacity",
        "true",
        boolean,
        "local stack: false makes Expedited retrievals fail with InsufficientCapacityException (vault) or GlacierExpeditedRetrievalNotAvailable (S3)",
    ),
    Key(
        "local",
        "fail_retrievals",
        "0",
        non_negative_int,
        "local stack: the next N archive-retrieval jobs end Failed",
    ),
    Key(
        "local",
        "day_seconds",
        "86400",
        positive_int,
        "local stack: seconds in a day, for the Days of restored S3 copies and the 24 h Glacier keeps job output (shorten to see them expire)",
    ),
    Key(
        "local",
        "inventory_delay_seconds",
        "0",
        non_negative_int,
        "local stack: a new vault has no inventory until this long after its creation (AWS: up to a day)",
    ),
    Key(
        "local",
        "index_lag_seconds",
        "0",
        non_negative_float,
        "local stack: a Query of a global secondary index sees the table as it was this many seconds ago (DynamoDB's index reads are eventually consistent)",
    ),
    Key(
        "local",
        "ses_sandbox",
        "false",
        boolean,
        "local stack: true refuses e-mail to recipients that are not verified, as SES's sandbox does",
    ),
    Key(
        "local",
        "bucket_encryption",
        "AES256",
        choice("AES256", "aws:kms", "aws:kms:dsse"),
        "local stack: default encryption of the buckets it creates (AES256 is SSE-S3, AWS's default; aws:kms objects have ETags that are not MD5 digests)",
    ),
    # The simulated annotator (localaws/annotator.py).
    Key(
        "local",
        "annotator_concurrency",
        "10",
        positive_int,
        "local stack: jobs the simulated annotator fleet runs at once",
    ),
    Key(
        "local",
        "annotator_seconds",
        "1",
        non_negative_float,
        "local stack: seconds the simulated annotator takes per job",
    ),
)
register(KEYS)


@dataclass(frozen=True)
class Settings:
    """How the emulations behave: the ``[local]`` keys they read."""

    expedited_seconds: int
    standard_seconds: int
    bulk_seconds: int
    expedited_capacity: bool
    fail_retrievals: int
    day_seconds: int
    inventory_delay_seconds: int
    index_lag_seconds: float
    ses_sandbox: bool
    bucket_encryption: str

    @classmethod
    def from_config(cls, local: Any) -> Settings:
        """From a loaded config's ``local`` section (``load(...).local``)."""
        return cls(**{f.name: getattr(local, f.name) for f in fields(cls)})

    def seconds(self, tier: str) -> int:
        return {
            "Expedited": self.expedited_seconds,
            "Standard": self.standard_seconds,
            "Bulk": self.bulk_seconds,
        }[tier]


# The defaults of KEYS, read without files or environment: one source of truth.
DEFAULT_SETTINGS = Settings.from_config(load(environ={}).local)


class _State:
    """The settings in force and the retrieval failures still to come; request threads
    share it."""

    def __init__(self, settings: Settings) -> None:
        self.lock = threading.Lock()
        self.settings = settings
        self.failures_left = settings.fail_retrievals


_state = _State(DEFAULT_SETTINGS)


def current_settings() -> Settings:
    """The settings in force."""
    return _state.settings


def configure(settings: Settings | None = None, **changes: Any) -> Settings:
    """Put `settings` (by default the ones in force) with `changes` in force; return them.

    ``configure(standard_seconds=0)`` changes one setting. The count of archive retrievals
    still to fail restarts at ``fail_retrievals`` when `settings` or that key is given.
    Jobs already initiated keep the timing and fate they were given.
    """
    with _state.lock:
        new = replace(settings or _state.settings, **changes)
        if settings is not None or "fail_retrievals" in changes:
            _state.failures_left = new.fail_retrievals
        _state.settings = new
    return new


def take_failure() -> bool:
    """Whether the archive retrieval being initiated is one of those to fail."""
    with _state.lock:
        if _state.failures_left <= 0:
            return False
        _state.failures_left -= 1
        return True


if __name__ == "__main__":
    print(markdown_table(KEYS))
