"""One lease: a claim a worker holds on a job for a while, so that of two copies of a message
only one does a thing that cannot be undone (start a retrieval, send an e-mail), and a holder
that crashed lets go by itself once the lease lapses.

A lease is two attributes of the item: the holder's token, and until when (epoch seconds).
Taking one is a conditional write (no live lease); a failed condition is looked at, never
believed: the item holding our own token means our first attempt took effect (util.helpers.
Write). A holder lets go of its own lease only; the sweep clears a lapsed one only if it is
still that very lease. The two leases of the project and their encodings are below.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from util.helpers import Annotations, Write
from util.schema import NOTIFY_CLAIM, NOTIFY_CLAIM_EXPIRES, RESTORE_EXPIRES, RESTORE_JOB_ID


@dataclass(frozen=True)
class Lease:
    """A lease whose token lives in `holder`, written with `prefix` (the attribute may hold
    other values: a retrieval's id once the claim is done), until `expires`."""

    what: str  # for the sweep's report
    holder: str
    expires: str
    prefix: str = ""

    def new_token(self) -> str:
        return f"{self.prefix}{uuid.uuid4().hex}"

    def is_token(self, value: Any) -> bool:
        return isinstance(value, str) and value.startswith(self.prefix)

    def lapses_at(self, item: dict[str, Any]) -> float | None:
        """When the lease the item holds lapses; None if it holds none."""
        if self.is_token(item.get(self.holder)) and self.expires in item:
            return float(item[self.expires])
        return None

    def stale(self, item: dict[str, Any], now: float) -> bool:
        lapses = self.lapses_at(item)
        return lapses is not None and lapses < now

    def take(
        self,
        jobs: Annotations,
        job_id: str,
        seconds: int,
        now: int,
        when: str = "",
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
        also: str = "",
    ) -> tuple[str, Write]:
        """Take the lease for `seconds` unless a live one is held (and `when` holds); also
        `also` (more of the update). The token, and the write: `held(write, token)`."""
        token = self.new_token()
        free = "(attribute_not_exists(#lease_expires) OR #lease_expires < :lease_now)"
        write = jobs.update_if(
            job_id,
            f"SET #lease_holder = :lease_token, #lease_expires = :lease_expires {also}".strip(),
            f"({when}) AND {free}" if when else free,
            {**(names or {}), "#lease_holder": self.holder, "#lease_expires": self.expires},
            {
                **(values or {}),
                ":lease_token": token,
                ":lease_expires": now + seconds,
                ":lease_now": now,
            },
        )
        return token, write

    def held(self, write: Write, token: str) -> bool:
        """Whether a take (or a write on condition of holding it) left `token` holding it."""
        return write.holds(self.holder, token)

    def release(self, jobs: Annotations, job_id: str, token: str) -> Write:
        """Let go of our own lease (only ours), so that the next attempt need not wait."""
        return jobs.update_if(
            job_id,
            "REMOVE #lease_holder, #lease_expires",
            "#lease_holder = :lease_token",
            {"#lease_holder": self.holder, "#lease_expires": self.expires},
            {":lease_token": token},
        )

    def clear_stale(self, jobs: Annotations, job_id: str, item: dict[str, Any]) -> Write:
        """Clear the lapsed lease `item` holds, only if it is still that very lease: a live
        holder's newer one is never touched."""
        return jobs.update_if(
            job_id,
            "REMOVE #lease_holder, #lease_expires",
            "#lease_holder = :held AND #lease_expires = :expires",
            {"#lease_holder": self.holder, "#lease_expires": self.expires},
            {":held": item[self.holder], ":expires": item[self.expires]},
        )


# Restore (and thaw, restarting one) claims starting a result's retrieval: "claim:<token>" in
# restore_job_id, replaced by the retrieval's id once it is started (util/retrieval.py).
RETRIEVAL_CLAIM = Lease("retrieval claim", RESTORE_JOB_ID, RESTORE_EXPIRES, "claim:")
# Notify claims sending a job's e-mail; the record of the e-mail removes the expiry and keeps
# the token of the copy that sent it (util/notify/notify.py).
EMAIL_CLAIM = Lease("e-mail claim", NOTIFY_CLAIM, NOTIFY_CLAIM_EXPIRES)
LEASES = (RETRIEVAL_CLAIM, EMAIL_CLAIM)
