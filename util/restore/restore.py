"""Restore: start retrievals of every archived result of a user who became premium
(docs/utilities.md#restore).

For each ``{"user_id"}``: the user must be premium now (a forged or stale message starts no
paid retrieval); every archived result of the user (``user_id_index``) gets one retrieval,
Expedited, Standard when there is no Expedited capacity, recorded on its item so that no
second message or worker starts a duplicate (util/retrieval.py). A message younger than
``index_settle_seconds`` is looked at once more when it is that old: the index is eventually
consistent, and may not yet show an archive recorded just before the upgrade.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/restore/restore.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from util import process
from util.archives import backend_for
from util.aws import Aws
from util.helpers import Annotations, InvalidMessage, Users
from util.messages import Message, Outcome, defer, done, require_str, retry
from util.retrieval import Retrievals, Start, under_way
from util.schema import JOB_ID, RESTORE_TIER
from util.util_config import Config

log = logging.getLogger("gas")


class Restorer:
    """The restore handler: one message in, one outcome out."""

    def __init__(self, config: Config, aws: Aws, clock=time.time):
        self.clock = clock
        self.users = Users(aws, config.gas.users_table)
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.retrievals = Retrievals(config, aws, backend_for(config, aws), clock)
        self.page_size = config.restore.page_size
        self.settle_seconds = config.restore.index_settle_seconds
        self.pool = ThreadPoolExecutor(config.restore.concurrency, thread_name_prefix="restore")

    def __call__(self, message: Message) -> Outcome:
        (user_id,) = require_str(message.data, "user_id")
        user = self.users.get(user_id)
        if user is None:
            raise InvalidMessage(f"unknown user {user_id}")
        if not user.is_premium:
            raise InvalidMessage(f"user {user_id} is not premium: no retrieval started")

        results = self.pool.map(
            lambda job: self.start(job, message),
            self.jobs.archived_results(user_id, self.page_size),
        )
        starts: list[Start] = []
        failures: list[str] = []
        for result in results:
            if isinstance(result, Start):
                starts.append(result)
            else:
                failures.append(result)
        for start in starts:
            if start.status == "started":
                name = f"Retrievals{start.tier}"
                message.metrics[name] = message.metrics.get(name, 0) + 1
        return self.look_again_if_young(self.outcome(starts, failures), message)

    def start(self, job: dict[str, Any], message: Message) -> Start | str:
        """Start one result's retrieval; a failure is returned, so the others go on."""
        if message.cancelled.is_set():
            return f"job {job[JOB_ID]}: worker stopping"
        if under_way(job, self.clock()):
            # Seen from the index (which may lag, never ahead): a redelivered message skips
            # what it started already without a write bound to fail its condition (and to
            # cost botocore's retry quota each time it was retried).
            return Start("in progress", job.get(RESTORE_TIER, ""))
        try:
            return self.retrievals.start(job)
        except Exception as exc:
            log.warning("restore: job %s: retrieval not started: %s", job[JOB_ID], exc)
            return f"job {job[JOB_ID]}: {type(exc).__name__}: {exc}"

    def outcome(self, starts: list[Start], failures: list[str]) -> Outcome:
        counts = Counter(s.status if s.status != "started" else f"started {s.tier}" for s in starts)
        summary = (
            ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            or "no archived results"
        )
        if failures:
            return retry(f"{len(failures)} not started ({failures[0]}); {summary}")
        pending = [s.retry_at for s in starts if s.status == "claimed elsewhere"]
        if pending:
            # Another worker is starting these right now, or crashed doing so: look again
            # once its claim has lapsed.
            return defer(max(pending) - self.clock() + 1, summary)
        return done(summary)

    def look_again_if_young(self, outcome: Outcome, message: Message) -> Outcome:
        """A message the index may not have caught up with comes back once it has (step 5).

        Once: a copy the worker sends again (the deferral itself) has a SentTimestamp of its
        own, so its age says nothing; it was delivered before, and that is its second look.
        """
        young = message.sent_at + self.settle_seconds > self.clock()
        if outcome.action == "retry" or message.delivered_before or not young:
            return outcome
        return defer(
            max(outcome.delay, self.settle_seconds),
            f"{outcome.reason}; looking again once the index shows every archive",
        )


def main(argv: list[str] | None = None) -> int:
    return process.main("restore", Restorer, argv)


if __name__ == "__main__":
    sys.exit(main())
