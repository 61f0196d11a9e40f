"""Reconcile: one anti-entropy pass comparing what should be with what is, repairing the gap.

It reads the users, the results bucket, the archive back end's listing and the annotations
table, and finds what the event-driven workers missed: an archive or restore message lost, a
result not deleted, a retrieval lapsed, an orphan archive, a stale claim, a result lost. Every
candidate is confirmed by consistent point reads before it is reported or acted on; repairs
are only the utilities' ordinary messages, orphan deletes and claim clears, so a pass is safe
while the workers run. Findings, the report and exit status: util/reconcile/report.py and
docs/reconcile-and-metrics.md.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/reconcile/reconcile.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from botocore.exceptions import BotoCoreError, ClientError

from util import cli, metrics
from util.archives import backend_for
from util.aws import Aws, head_object
from util.helpers import Annotations, Users
from util.leases import LEASES, Lease
from util.process import configure_logging
from util.reconcile.repairs import Repairs
from util.reconcile.report import (
    ARCHIVE_NOT_REQUESTED,
    EXIT_AWS,
    EXIT_CONFIG,
    KINDS,
    LOST,
    ORPHAN_ARCHIVE,
    RESTORE_NOT_REQUESTED,
    RESULT_NOT_DELETED,
    RETRIEVAL_LAPSED,
    STALE_CLAIM,
    Finding,
    Report,
    load_report,
    render_text,
)
from util.retrieval import is_claim
from util.schema import (
    ARCHIVE_ID,
    ARCHIVE_UPLOAD,
    COMPLETE_TIME,
    COMPLETED,
    JOB_ID,
    JOB_STATUS,
    PREMIUM,
    RESTORE_EXPIRES,
    RESTORE_JOB_ID,
    RESULT_ETAG,
    RESULT_KEY,
    RESULTS_BUCKET,
    THAW_TIME,
    USER_ID,
)
from util.util_config import Config, ConfigError, load

log = logging.getLogger("gas")

THAWED = "thawed since the listing"
# A queue's messages: visible, received and not yet deleted, and delayed (or deferred).
QUEUED = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class Reconciler:
    """One pass (see module docstring)."""

    def __init__(
        self, config: Config, aws: Aws, repair: bool, clock: Callable[[], float] = time.time
    ):
        self.config = config
        self.aws = aws
        self.repair = repair
        self.clock = clock
        self.settings = config.reconcile
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.users = Users(aws, config.gas.users_table)
        self.s3 = aws.client("s3")
        self.sqs = aws.client("sqs")
        self.results_bucket = config.gas.results_bucket
        self.backend = backend_for(config, aws)
        self.lock = threading.Lock()

    # -- the pass ------------------------------------------------------------------------

    def run(self) -> Report:
        now = self.clock()
        report = Report(now, self.config.gas.archive_backend, self.repair)
        self.report = report
        self.now = now
        previous = load_report(self.s3, self.results_bucket, self.settings.report_key) or {}
        self.roles = {u.user_id: u.role for u in self.users.all(self.settings.page_size)}
        self.results = self.list_objects(self.results_bucket, "")
        listing = self.backend.listing(now)
        self.archives, inventory_date = listing.archives, listing.taken
        report.notes += [listing.note] if listing.note else []
        visibility = self.queue_attributes(self.config.archive.queue, "VisibilityTimeout")
        self.overdue = (
            self.config.archive.grace_seconds
            + self.settings.slack_seconds
            + visibility["VisibilityTimeout"]
        )
        # Before the items are read: a restore message handled (and deleted) before this has
        # its retrievals recorded when they are.
        self.restores_queued = sum(
            self.queue_attributes(self.config.restore.queue, *QUEUED).values()
        )
        self.named: set[str] = set()
        self.candidates: list[tuple[str, dict[str, Any]]] = []
        segments = self.settings.scan_segments
        with ThreadPoolExecutor(segments, thread_name_prefix="scan") as pool:
            counts = list(pool.map(self.scan_segment, range(segments)))
        report.scanned = {
            "items": sum(counts),
            "users": len(self.roles),
            "results": len(self.results),
            "archives": None if self.archives is None else len(self.archives),
        }

        restore_users: dict[str, list[Finding]] = {}
        for kind, item in self.candidates:
            finding = self.confirm(kind, item, inventory_date, previous.get("suspects", {}))
            if finding is None:
                continue
            report.findings.append(finding)
            if kind in (RESTORE_NOT_REQUESTED, RETRIEVAL_LAPSED):
                restore_users.setdefault(finding.user_id, []).append(finding)
        Repairs(self, self.restores_queued).act(report, restore_users, previous.get("restores", {}))
        if self.archives is not None:
            report.findings += self.orphans(inventory_date, previous.get("deleted", {}))
        if note := self.backend.prepare_listing():
            report.notes.append(note)
        report.finished = self.clock()
        self.save(report)
        metrics.emit_findings(self.config, report.counts(), KINDS)
        return report

    def queue_attributes(self, queue: str, *names: str) -> dict[str, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.aws.queue_url(queue), AttributeNames=list(names)
        )["Attributes"]
        return {name: int(attributes[name]) for name in names}

    def list_objects(self, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
        """key -> {"etag", "size", "modified"} of every object under the prefix."""
        objects = {}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self.settings.page_size}
        )
        for page in pages:
            for o in page.get("Contents", []):
                objects[o["Key"]] = {
                    "etag": o["ETag"],
                    "size": o["Size"],
                    "modified": o["LastModified"].timestamp(),
                }
        return objects

    def scan_segment(self, segment: int) -> int:
        seen = 0
        for item in self.jobs.scan(segment, self.settings.scan_segments, self.settings.page_size):
            seen += 1
            kinds = list(self.classify(item))
            with self.lock:
                if ARCHIVE_ID in item:
                    self.named.add(item[ARCHIVE_ID])
                self.candidates += [(kind, item) for kind in kinds]
        return seen

    # -- what an item looks like it needs (from the Scan and the listings) -----------------

    def classify(self, item: dict[str, Any]) -> Iterable[str]:
        now = self.now
        if self.stale_claims(item):
            yield STALE_CLAIM
        if (
            item.get(JOB_STATUS) != COMPLETED
            or item.get(RESULTS_BUCKET) != self.results_bucket
            or not isinstance(item.get(COMPLETE_TIME), (int, float))
        ):
            return
        result = self.results.get(item.get(RESULT_KEY, ""))
        overdue = item[COMPLETE_TIME] + self.overdue < now
        premium = self.roles.get(str(item.get(USER_ID, ""))) == PREMIUM
        archive_id = item.get(ARCHIVE_ID)
        if archive_id is None:
            if (
                overdue
                and not premium
                and item.get(USER_ID) in self.roles
                and result
                and result["size"] > 0
            ):
                yield ARCHIVE_NOT_REQUESTED
            return
        if overdue and result and result["etag"] == item.get(RESULT_ETAG):
            yield RESULT_NOT_DELETED
        if premium:
            recorded = item.get(RESTORE_JOB_ID)
            if recorded is None or (is_claim(recorded) and item.get(RESTORE_EXPIRES, now) < now):
                yield RESTORE_NOT_REQUESTED
            elif not is_claim(recorded) and item.get(RESTORE_EXPIRES, now) < now:
                yield RETRIEVAL_LAPSED
        if self.archives is not None and archive_id not in self.archives and result is None:
            yield LOST

    # -- confirmed by point reads ---------------------------------------------------------

    def confirm(
        self,
        kind: str,
        seen: dict[str, Any],
        inventory_date: float,
        previous: dict[str, dict[str, Any]],
    ) -> Finding | None:
        """The finding, if the item (read again, consistently) and S3 still show it."""
        job_id, user_id = seen[JOB_ID], seen.get(USER_ID, "")
        item = self.jobs.get(job_id)
        if item is None:
            return None
        archive_id = item.get(ARCHIVE_ID)
        if kind == STALE_CLAIM:
            return self.stale_claim(item)
        if kind in (
            RESULT_NOT_DELETED,
            RESTORE_NOT_REQUESTED,
            RETRIEVAL_LAPSED,
            LOST,
        ) and archive_id != seen.get(ARCHIVE_ID):
            return None  # moved on since the Scan
        if kind == ARCHIVE_NOT_REQUESTED:
            head = self.head(item[RESULTS_BUCKET], item[RESULT_KEY])
            if archive_id is None and head and head["ContentLength"] > 0:
                return Finding(kind, job_id, user_id, "result in S3 past its grace, no archive")
        elif kind == RESULT_NOT_DELETED:
            head = self.head(item[RESULTS_BUCKET], item[RESULT_KEY])
            if head and head["ETag"] == item.get(RESULT_ETAG):
                return Finding(
                    kind,
                    job_id,
                    user_id,
                    f"archived as {str(archive_id)[:40]}, the archived S3 result still there",
                )
        elif kind in (RESTORE_NOT_REQUESTED, RETRIEVAL_LAPSED):
            recorded = item.get(RESTORE_JOB_ID)
            lapsed = item.get(RESTORE_EXPIRES, self.now) < self.now
            if kind == RESTORE_NOT_REQUESTED and (
                recorded is None or is_claim(recorded) and lapsed
            ):
                return Finding(
                    kind, job_id, user_id, "premium user's result archived, no retrieval"
                )
            if kind == RETRIEVAL_LAPSED and recorded and not is_claim(recorded) and lapsed:
                return Finding(
                    kind, job_id, user_id, f"retrieval {recorded[:40]} lapsed, result not back"
                )
        elif kind == LOST:
            return self.lost(item, inventory_date, previous)
        return None

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        return head_object(self.s3, bucket, key)

    def lost(
        self, item: dict[str, Any], inventory_date: float, previous: dict[str, dict[str, Any]]
    ) -> Finding | None:
        job_id, archive_id = item[JOB_ID], item[ARCHIVE_ID]
        known = self.backend.exists(archive_id)
        if (known and known[0]) or self.head(item[RESULTS_BUCKET], item[RESULT_KEY]):
            return None
        again = self.jobs.get(job_id) or {}
        if again.get(ARCHIVE_ID) != archive_id:
            return None  # thawed (or re-archived) meanwhile
        detail = f"names archive {archive_id[:40]}, which does not exist; S3 result gone"
        if known is None:  # a back end known only through listings (the vault's inventories)
            since = previous.get(archive_id, {}).get("since", self.clock())
            # Kept while the job names it: every later pass reports it too.
            self.report.suspects[archive_id] = {"job_id": job_id, "since": since}
            if since >= inventory_date:
                return None  # perhaps made after the inventory was taken: the next one says
            detail = (
                f"names archive {archive_id[:40]}, absent from an inventory taken after "
                f"{datetime.fromtimestamp(since).isoformat()}; S3 result gone"
            )
        return Finding(LOST, job_id, item.get(USER_ID, ""), detail, "none: reported")

    def stale_claims(self, item: dict[str, Any]) -> list[Lease]:
        """The item's lapsed leases (util/leases.py)."""
        return [lease for lease in LEASES if lease.stale(item, self.now)]

    def stale_claim(self, item: dict[str, Any]) -> Finding | None:
        """Lapsed leases, each cleared only if it is still that very lease."""
        leases = self.stale_claims(item)
        if not leases:
            return None
        finding = Finding(
            STALE_CLAIM,
            item[JOB_ID],
            item.get(USER_ID, ""),
            ", ".join(
                f"{lease.what} expired at {datetime.fromtimestamp(item[lease.expires]).isoformat()}"
                for lease in leases
            ),
            "would clear it",
        )
        if self.repair:
            for lease in leases:
                # Not applied: gone already (this write's own first attempt, or its holder
                # moved on): either way no longer stale.
                lease.clear_stale(self.jobs, item[JOB_ID], item)
            finding.action = "done: cleared"
        return finding

    def orphans(self, taken: float, deleted: dict[str, float]) -> list[Finding]:
        """Archives no job names, old enough, checked again right before each delete.

        The listing is a snapshot as of `taken` (the vault's inventory: up to a day old), so
        it may list an archive deleted since: by an earlier pass (`deleted`, from its report);
        by a racing copy of archive right after making it (its record lost), so the age that
        counts is the archive's when the listing was taken; or by thaw right after the thaw
        its job shows (within `slack_seconds` of it).
        """
        assert self.archives is not None
        findings = []
        thawed = 0
        gone = {archive_id: when for archive_id, when in deleted.items() if when >= taken}
        self.report.deleted = dict(gone)  # the next pass may read the same listing
        oldest = taken - self.settings.orphan_age_seconds
        for archive_id, archive in self.archives.items():
            if archive_id in self.named or archive_id in gone or archive[1] > oldest:
                continue
            kept = self.kept(archive_id, archive[0], oldest, taken)
            thawed += kept == THAWED
            if kept:
                continue
            made = datetime.fromtimestamp(archive[1]).isoformat()
            finding = Finding(
                ORPHAN_ARCHIVE,
                archive[0],
                "",
                f"archive {archive_id[:40]} of {made} named by no job",
                "would delete it",
            )
            if self.repair:
                self.backend.delete(archive_id)
                finding.action = "done: deleted"
                self.report.deleted[archive_id] = self.clock()
            findings.append(finding)
        earlier = len(gone.keys() & self.archives.keys())
        if thawed or earlier:
            self.report.notes.append(
                f"archives listed but deleted since: {thawed} thawed, {earlier} deleted by an "
                "earlier pass; not orphans"
            )
        return findings

    def kept(self, archive_id: str, job_id: str, oldest: float, taken: float) -> str | None:
        """Why the archive is no orphan, from the archive (where the back end can say) and
        then its job, read again; None if it is one."""
        known = self.backend.exists(archive_id)
        if known is not None and (not known[0] or known[1] > oldest):
            return "gone, or made again"
        item = self.jobs.get(job_id)
        if item is None:
            return None
        if item.get(ARCHIVE_ID) == archive_id or ARCHIVE_UPLOAD in item:
            return "named"  # now, or a vault upload a redelivery will complete and record
        # Thaw deletes the archive right after recording the thaw (a notice delivered again
        # makes sure): thawed later than `slack_seconds` before the listing was taken, it is
        # thaw's to delete. (thaw_time is in whole seconds.)
        if item.get(THAW_TIME, 0) + 1 + self.settings.slack_seconds > taken:
            return THAWED
        if ARCHIVE_ID not in item:
            # archive adopts an archive of the result's content it finds made already
            head = self.head(item.get(RESULTS_BUCKET, ""), item.get(RESULT_KEY, ""))
            if head and self.backend.of_content(archive_id, head["ETag"]):
                return "adopted"
        return None

    # -- the report ------------------------------------------------------------------------

    def save(self, report: Report) -> None:
        self.s3.put_object(
            Bucket=self.results_bucket,
            Key=self.settings.report_key,
            Body=json.dumps(report.to_json(), indent=1).encode(),
            ContentType="application/json",
        )


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "reconcile", "GAS anti-entropy pass", results="the pass's report, as saved for util.status"
    )
    parser.add_argument(
        "--repair", action="store_true", help="act on what is found (default: report only)"
    )
    args = parser.parse_args(argv)
    try:
        config = load("reconcile", args.config)
    except ConfigError as exc:
        print(f"reconcile: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(*cli.log_settings(args, config))
    try:
        report = Reconciler(
            config, Aws(config, connections=config.reconcile.scan_segments * 2), args.repair
        ).run()
    except (BotoCoreError, ClientError) as exc:
        print(f"reconcile: AWS failed: {exc}", file=sys.stderr)
        return EXIT_AWS
    print(json.dumps(report.to_json(), indent=1) if args.format == "json" else render_text(report))
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
