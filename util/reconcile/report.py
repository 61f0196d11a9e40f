"""What one sweep pass found and did: the kinds of findings, the report each pass leaves at
``s3://<results_bucket>/<report_key>`` (JSON, read by util.status and by the next pass), its
text form, and the exit status (docs/reconcile-and-metrics.md)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from util.aws import S3_NOT_FOUND
from util.cli import counted

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
EXIT_OK, EXIT_AWS, EXIT_CONFIG, EXIT_LOST, EXIT_FINDINGS = 0, 1, 2, 3, 4


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
        f"{report.backend}): scanned {counted(report.scanned)}"
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
