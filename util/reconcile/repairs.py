"""The sweep's repairs: the utilities' ordinary messages its findings call for (an archive
message, a restore message per user), sent ten to a batch, each finding's action saying what
was done; a restore message is not sent while one may still be on its way (the grace:
docs/reconcile-and-metrics.md). A dry run sends nothing and says what it would send."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from util.reconcile.report import ARCHIVE_NOT_REQUESTED, RESULT_NOT_DELETED, Finding, Report
from util.schema import JOB_ID, USER_ID
from util.sqs import SQS_BATCH

if TYPE_CHECKING:
    from util.reconcile.reconcile import Reconciler


class Repairs:
    """The messages one pass (`sweep`) sends; `restores_queued`: the restore queue's messages
    when the pass began."""

    def __init__(self, sweep: Reconciler, restores_queued: int):
        self.config, self.aws, self.repair = sweep.config, sweep.aws, sweep.repair
        self.sqs, self.settings, self.clock = sweep.sqs, sweep.settings, sweep.clock
        self.now, self.restores_queued = sweep.now, restores_queued

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
