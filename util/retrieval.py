"""A result's way back from the archive, recorded on its item (docs/design.md, "How a
retrieval is recorded").

Restore starts retrievals, thaw finishes them (or starts a failed one again). The claim (a
lease, util/leases.py) comes before the start, so that of two workers only one calls the back
end; the record keeps duplicates away but does not choose which retrieval thaw may use: any
retrieval of the archive the item names brings back the same verified bytes. Every failed
condition here is looked at: our own claim or retrieval there means our first attempt took
effect (util.helpers.Write).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from util.archives import Backend, ExpeditedUnavailable
from util.aws import Aws
from util.helpers import Annotations, Write
from util.leases import RETRIEVAL_CLAIM
from util.schema import (
    ARCHIVE_ID,
    JOB_ID,
    RESTORE_EXPIRES,
    RESTORE_JOB_ID,
    RESTORE_TIER,
    RESTORE_TIME,
    RESULT_ETAG,
    THAW_JOB_ID,
    THAW_TIME,
)
from util.util_config import Config

log = logging.getLogger("gas")

CLAIM_POLL_SECONDS = 0.2
# The expression names every update below uses.
_NAMES = {
    "#archive": ARCHIVE_ID,
    "#job": RESTORE_JOB_ID,
    "#tier": RESTORE_TIER,
    "#time": RESTORE_TIME,
    "#expires": RESTORE_EXPIRES,
}


StartStatus = Literal["started", "in progress", "claimed elsewhere", "not archived"]


@dataclass(frozen=True)
class Start:
    """What `Retrievals.start` did for one result."""

    status: StartStatus
    tier: str = ""
    retry_at: float = 0.0  # for "claimed elsewhere": when that claim lapses


def is_claim(restore_job_id: str | None) -> bool:
    """Whether `restore_job_id` is a claim (util/leases.py), not a retrieval's id."""
    return RETRIEVAL_CLAIM.is_token(restore_job_id)


def under_way(job: dict[str, Any], now: float) -> bool:
    """Whether the item records a retrieval (not a claim) that has not lapsed."""
    recorded = job.get(RESTORE_JOB_ID)
    return bool(recorded) and not is_claim(recorded) and job.get(RESTORE_EXPIRES, 0) >= now


class Retrievals:
    """Starts, clears and finishes the retrievals recorded on annotations items."""

    claim_wait_seconds = 5.0  # how long a result another worker is starting is waited for

    def __init__(
        self, config: Config, aws: Aws, backend: Backend, clock: Callable[[], float] = time.time
    ):
        self.clock = clock
        self.backend = backend
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.claim_seconds = config.restore.claim_seconds
        self.lifetime_seconds = config.restore.retrieval_lifetime_seconds

    def start(self, job: dict[str, Any], tiers: Sequence[str] | None = None) -> Start:
        """Start a retrieval of the job's archive unless a live one is recorded.

        The first tier with capacity is used, of `tiers` or the back end's for the archive;
        only "no Expedited capacity" moves on to the next one, any other error is raised.
        """
        job_id, archive_id = job[JOB_ID], job[ARCHIVE_ID]
        deadline = time.monotonic() + self.claim_wait_seconds
        while True:
            now = int(self.clock())
            claim, claimed = RETRIEVAL_CLAIM.take(
                self.jobs,
                job_id,
                self.claim_seconds,
                now,
                when="#archive = :archive",
                names=_NAMES,
                values={":archive": archive_id},
                also="REMOVE #tier, #time",
            )
            if RETRIEVAL_CLAIM.held(claimed, claim):
                break
            why = self.why_not_started(archive_id, claimed.item, deadline)
            if why is not None:
                return why
            time.sleep(CLAIM_POLL_SECONDS)
        try:
            retrieval_id, tier = self.initiate(
                archive_id, job_id, tiers or self.backend.tiers(archive_id)
            )
        except BaseException:
            self.release(job_id, claim)
            raise
        recorded = self.jobs.update_if(
            job_id,
            "SET #job = :retrieval, #tier = :tier, #time = :now, #expires = :expires",
            "#job = :claim",
            _NAMES,
            {
                ":retrieval": retrieval_id,
                ":tier": tier,
                ":now": now,
                ":expires": now + self.lifetime_seconds,
                ":claim": claim,
            },
        )
        if not recorded.holds(RESTORE_JOB_ID, retrieval_id):
            if recorded.item.get(ARCHIVE_ID) != archive_id:
                log.info(
                    "job %s: thawed while retrieval %s was being recorded", job_id, retrieval_id
                )
            else:
                # Our claim lapsed and another worker took over; both retrievals bring the
                # same bytes, and thaw uses whichever succeeds first.
                log.warning(
                    "job %s: claim lapsed while starting retrieval %s", job_id, retrieval_id
                )
        return Start("started", tier)

    def initiate(self, archive_id: str, job_id: str, tiers: Sequence[str]) -> tuple[str, str]:
        for tier in tiers[:-1]:
            try:
                return self.backend.start_retrieval(archive_id, job_id, tier), tier
            except ExpeditedUnavailable:
                log.info("job %s: no %s capacity, trying the next tier", job_id, tier)
        return self.backend.start_retrieval(archive_id, job_id, tiers[-1]), tiers[-1]

    def why_not_started(
        self, archive_id: str, job: dict[str, Any], deadline: float
    ) -> Start | None:
        """Why the claim failed, from the item as the failed take found it (`job`); None to
        take it again: while another worker's claim is one InitiateJob call away from a
        recorded retrieval (or is let go), until `deadline`, then "claimed elsewhere"."""
        if job.get(ARCHIVE_ID) != archive_id:
            return Start("not archived")
        recorded = job.get(RESTORE_JOB_ID)
        if recorded and not is_claim(recorded):
            return Start("in progress", job.get(RESTORE_TIER, ""))
        if time.monotonic() >= deadline:
            return Start("claimed elsewhere", retry_at=job.get(RESTORE_EXPIRES, 0))
        return None

    def release(self, job_id: str, claim: str) -> None:
        """Give up a claim after a failed start, so the next attempt need not wait for it."""
        try:
            RETRIEVAL_CLAIM.release(self.jobs, job_id, claim)
        except Exception:  # the claim lapses by itself; the original error matters more
            log.exception("job %s: could not release retrieval claim", job_id)

    def clear(self, job_id: str, retrieval_id: str) -> None:
        """Forget a retrieval reported as failed, if it is the one recorded."""
        self.jobs.update_if(
            job_id,
            "REMOVE #job, #tier, #time, #expires",
            "#job = :retrieval",
            _NAMES,
            {":retrieval": retrieval_id},
        )

    def finish(self, job_id: str, archive_id: str, retrieval_id: str) -> Write:
        """Record that the result is back in S3: the archive id, its ETag and the retrieval go,
        `retrieval_id` is kept as the one that thawed it. Applied only while the item still
        names `archive_id`, whichever retrieval it records."""
        return self.jobs.update_if(
            job_id,
            "REMOVE #archive, #etag, #job, #tier, #time, #expires "
            "SET #thaw_job = :retrieval, #thaw_time = :now",
            "#archive = :archive",
            {**_NAMES, "#etag": RESULT_ETAG, "#thaw_job": THAW_JOB_ID, "#thaw_time": THAW_TIME},
            {":archive": archive_id, ":retrieval": retrieval_id, ":now": int(self.clock())},
        )
