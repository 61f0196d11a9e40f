"""Reconcile: one anti-entropy pass comparing what should be with what is, repairing the gap.

Messages can be lost before they reach the utilities, a retrieval can lapse, a crash can leave
an orphan archive. One pass reads the users table, the results bucket (one listing), the
archive store (the archive bucket's listing, or the vault's latest inventory), then the
annotations table (parallel Scan segments), and finds:

1. ``archive-not-requested``: a free user's COMPLETED job past grace + slack + the archive
   queue's visibility timeout, its result in S3, no archive: the archive message is sent;
2. ``result-not-deleted``: an archive recorded and the archived S3 result (its recorded ETag)
   still there, as long past: the archive message is sent (archive finishes the deletion);
3. ``restore-not-requested``: a premium user's archived result with no retrieval: the restore
   message is sent (one per user), unless one may still be on its way: then the finding
   says until when it waits for it (`Reconciler.restore_wait`);
4. ``retrieval-lapsed``: a recorded retrieval past its lifetime, the result not back: the
   restore message is sent, as for 3;
5. ``orphan-archive``: an archive no job names, older than ``orphan_age_seconds`` when the
   listing was taken, and not deleted since (`Reconciler.orphans`): checked again (the
   archive, then the job, consistently) right before it is deleted;
6. ``lost``: a job naming an archive that does not exist while its S3 result is gone. Never
   repaired: reported, and the exit status is 3;
7. ``stale-claim``: a retrieval or e-mail claim past its expiry: cleared by a conditional
   write on that exact claim, so a live holder's newer claim is never touched.

Every candidate seen in the listings and the Scan (eventually consistent, and taken at
different moments) is confirmed by point reads before it is reported or acted on. Repairs are
only the utilities' ordinary messages (they decide, idempotently), orphan deletes, and claim
clears: reconcile never writes an archive id and never deletes a result. So it is safe while
the workers run, and two passes at once only send a message twice.

The vault has no listing: each pass starts an inventory-retrieval job and uses the newest
finished one on a later pass. An inventory is a snapshot (``InventoryDate``) up to a day old,
so an archive a job names but the inventory lacks is only a suspect: it is lost once an
inventory taken after the pass that first suspected it lacks it too (suspects are kept in the
report). Without a finished inventory, orphans and lost archives are not looked for.

Each pass leaves its report (JSON) at ``s3://<results_bucket>/<report_key>``; util.status
shows it. Exit status: 0 nothing wrong (or, with --repair, everything repaired); 1 AWS
failed; 2 bad configuration; 3 a result is lost; 4 repairable findings left (a dry run, or a
message not sent; a restore message waited for is not left).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/reconcile/reconcile.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from botocore.exceptions import BotoCoreError, ClientError

from util import metrics
from util.archives import backend_for
from util.helpers import (
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
    S3_NOT_FOUND,
    THAW_TIME,
    USER_ID,
    Annotations,
    Aws,
    Users,
    head_object,
)
from util.leases import LEASES, Lease
from util.process import configure_logging
from util.retrieval import is_claim
from util.util_config import Config, ConfigError, add_config_option, load

log = logging.getLogger("gas")

ARCHIVE_NOT_REQUESTED = "archive-not-requested"
RESULT_NOT_DELETED = "result-not-deleted"
RESTORE_NOT_REQUESTED = "restore-not-requested"
RETRIEVAL_LAPSED = "retrieval-lapsed"
ORPHAN_ARCHIVE = "orphan-archive"
LOST = "lost"
STALE_CLAIM = "stale-claim"
KINDS = (
    ARCHIVE_NOT_REQUESTED,
    RESULT_NOT_DELETED,
    RESTORE_NOT_REQUESTED,
    RETRIEVAL_LAPSED,
    ORPHAN_ARCHIVE,
    LOST,
    STALE_CLAIM,
)
THAWED = "thawed since the listing"
EXIT_OK, EXIT_AWS, EXIT_CONFIG, EXIT_LOST, EXIT_FINDINGS = 0, 1, 2, 3, 4
# A queue's messages: visible, received and not yet deleted, and delayed (or deferred).
QUEUED = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
SQS_BATCH = 10


@dataclass
class Finding:
    kind: str
    job_id: str
    user_id: str
    detail: str
    action: str = ""  # what the pass did (or, dry, would do)


@dataclass
class Report:
    """What one pass saw and did; written as JSON for util.status and the next pass."""

    started: float
    backend: str
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    scanned: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Vault only: archive id -> {"job_id", "since"}: named by a job, missing from the inventory.
    suspects: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Archive id -> when a pass deleted it as an orphan, while the listing read is older.
    deleted: dict[str, float] = field(default_factory=dict)
    # User id -> {"since", "sent"}: no restore message for the user before since + the grace
    # (sent: a pass sent one then; else the restore queue held messages then).
    restores: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}

    def exit_code(self) -> int:
        if any(f.kind == LOST for f in self.findings):
            return EXIT_LOST
        if any(not f.action.startswith(("done", "waits")) for f in self.findings):
            return EXIT_FINDINGS
        return EXIT_OK


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
        self.act(report, restore_users, previous.get("restores", {}))
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

    # -- repairs ---------------------------------------------------------------------------

    def act(
        self,
        report: Report,
        restore_users: dict[str, list[Finding]],
        restores: dict[str, dict[str, Any]],
    ) -> None:
        """Send the archive and restore messages the findings call for; `restores`: the
        restore messages the previous pass waited for or sent (its report)."""
        archive = [
            f for f in report.findings if f.kind in (ARCHIVE_NOT_REQUESTED, RESULT_NOT_DELETED)
        ]
        self.send(
            self.config.archive.queue,
            archive,
            lambda f: {JOB_ID: f.job_id, USER_ID: f.user_id},
            "archive message",
        )
        sending = []
        for user_id, findings in restore_users.items():
            wait = self.restore_wait(restores.get(user_id))
            if wait is None:
                sending.append(findings)
                continue
            report.restores[user_id] = wait
            for finding in findings:
                finding.action = self.waits(wait)
        self.send(
            self.config.restore.queue,
            [findings[0] for findings in sending],
            lambda f: {USER_ID: f.user_id},
            "restore message",
        )
        for first, *others in sending:
            if first.action.startswith("done"):
                report.restores[first.user_id] = {"since": self.clock(), "sent": True}
            for finding in others:
                finding.action = first.action

    def restore_wait(self, previous: dict[str, Any] | None) -> dict[str, Any] | None:
        """Whether a user's restore message may still be on its way, so none is sent now:
        {"since", "sent"}, the grace running from "since"; None: send one.

        On its way: the one a pass sent (`previous`, from its report), or, where no pass sent
        or waited for one yet, any restore message queued (the web app's after the upgrade,
        perhaps: a queue does not say for whom its messages are). Once the grace is over, one
        is sent whatever the queue holds.
        """
        wait = previous
        if wait is None and self.restores_queued:
            wait = {"since": self.now, "sent": False}
        if wait is not None and self.now < wait["since"] + self.settings.restore_grace_seconds:
            return wait
        return None

    def waits(self, wait: dict[str, Any]) -> str:
        """The action of a finding whose restore message is waited for."""
        since = datetime.fromtimestamp(wait["since"])
        until = since + timedelta(seconds=self.settings.restore_grace_seconds)
        at = since.isoformat(timespec="seconds")
        why = (
            f"a restore message was sent at {at}"
            if wait["sent"]
            else f"the restore queue held messages at {at}, perhaps this user's"
        )
        return f"waits until {until.isoformat(timespec='seconds')}: {why}"

    def send(
        self,
        queue: str,
        findings: list[Finding],
        body: Callable[[Finding], dict[str, str]],
        what: str,
    ) -> None:
        if not self.repair:
            for finding in findings:
                finding.action = f"would send the {what}"
            return
        url = self.aws.queue_url(queue)
        for start in range(0, len(findings), SQS_BATCH):
            chunk = findings[start : start + SQS_BATCH]
            response = self.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": json.dumps(body(f))} for i, f in enumerate(chunk)
                ],
            )
            failed = {int(f["Id"]): f.get("Message", "") for f in response.get("Failed", [])}
            for i, finding in enumerate(chunk):
                finding.action = (
                    f"failed to send the {what}: {failed[i]}"
                    if i in failed
                    else f"done: sent the {what}"
                )

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


def load_report(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The last pass's report, or None if no pass has left one."""
    try:
        return json.load(s3.get_object(Bucket=bucket, Key=key)["Body"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] in S3_NOT_FOUND:
            return None
        raise


def render_text(report: Report) -> str:
    lines = [
        f"reconcile ({'repair' if report.repair else 'dry run'}, backend "
        f"{report.backend}): scanned {report.scanned}"
    ]
    lines += [f"note: {note}" for note in report.notes]
    for f in report.findings:
        lines.append(
            f"{f.kind:22} job={f.job_id} user={f.user_id or '-'}  {f.detail}  -> {f.action}"
        )
    if report.suspects:
        lines.append(
            f"{len(report.suspects)} archive(s) missing from the inventory, to "
            "look at again on the next inventory"
        )
    counts = report.counts()
    lines.append(
        "findings: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reconcile", description="GAS anti-entropy pass")
    add_config_option(parser)
    parser.add_argument(
        "--repair", action="store_true", help="act on what is found (default: report only)"
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        config = load("reconcile", args.config)
    except ConfigError as exc:
        print(f"reconcile: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.worker.log_format, config.worker.log_level)
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
