"""Jobs in every state a result passes through, made fresh for each run of a scenario, and the
invariants that must hold of them whatever happened on the way.

Used by the interleaving and crash tests: each schedule (or crash point) gets new users and
jobs in the same local stack, so no run sees another's state.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto.glacier.models import glacier_backends

from localaws import settings as local_settings
from localaws.stack import announce_restores
from tests.conftest import NOW, Stack, put_job, set_role, wait_for
from tests.pipeline import HANDLERS, Pipeline
from util.archive.archive import Archiver
from util.aws import Aws
from util.helpers import Annotations
from util.messages import Message, decode_body
from util.restore.restore import Restorer
from util.schema import ARCHIVE_ID, FREE, PREMIUM, RESULT_KEY, RESULTS_BUCKET

ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's, for the credentials "testing"
_ids = itertools.count()


def use_backend(stack: Stack, backend: str) -> None:
    """The local stack with one archive back end; retrievals finish at once."""
    stack.config.gas.archive_backend = backend
    if backend == "s3":
        announce_restores(stack.aws, stack.config, stack.aws.topic_arn(stack.config.gas.thaw_topic))
        stack.config.gas.copy_part_size_mib = 5
    stack.config.archive.part_size_mib = 1
    stack.config.thaw.part_size_mib = 8
    # One result at a time within a restore: orders between handlers are what is explored.
    stack.config.restore.concurrency = 1
    local_settings.configure(expedited_seconds=0, standard_seconds=0)


def message(body: dict[str, Any]) -> Message:
    return Message("m", "r", json.dumps(body), 1, {}, 0, 0, data=body, job_id=body.get("job_id"))


@dataclass
class Job:
    """One job made for a run, with the bytes its result must always have."""

    job_id: str
    user_id: str
    data: bytes


@dataclass
class World:
    """The stack, and the jobs and messages of one run."""

    stack: Stack
    jobs: list[Job] = field(default_factory=list)
    # Messages the run's actors were handling, to deliver again if they did not finish them.
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.stack.config.gas.archive_backend

    # -- making state ------------------------------------------------------------------------

    def user(self, role: str = FREE) -> str:
        user_id = f"u{next(_ids)}"
        self.stack.client("dynamodb").put_item(
            TableName=self.stack.config.gas.users_table,
            Item={
                "user_id": {"S": user_id},
                "name": {"S": user_id},
                "email": {"S": f"{user_id}@example.com"},
                "role": {"S": role},
            },
        )
        return user_id

    def job(self, user_id: str, size: int = 3) -> Job:
        job_id = f"j{next(_ids)}"
        job = Job(job_id, user_id, put_job(self.stack, job_id, user_id, size))
        self.jobs.append(job)
        return job

    def archived(self, job: Job) -> None:
        outcome = Archiver(self.stack.config, self.stack.aws, clock=lambda: NOW)(
            message({"job_id": job.job_id, "user_id": job.user_id})
        )
        assert outcome.reason == "archived", outcome

    def upgrade(self, user_id: str) -> None:
        set_role(self.stack, user_id, PREMIUM)

    def retrieved(self, job: Job) -> dict[str, Any]:
        """Restore the job's user (premium by now), and the completion notice of its job."""
        outcome = Restorer(self.stack.config, self.stack.aws, clock=lambda: NOW)(
            message({"user_id": job.user_id})
        )
        assert outcome.action == "done", outcome
        return self.notice_of(job)

    def notice_of(self, job: Job) -> dict[str, Any]:
        """Take the job's completion notice from the thaw queue (others stay there)."""
        sqs = self.stack.client("sqs")
        url = self.stack.queue_url(self.stack.config.thaw.queue)
        found: list[dict[str, Any]] = []

        def receive() -> bool:
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                notice = decode_body(m["Body"])
                if job.job_id in json.dumps(notice) and not found:
                    found.append(notice)
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                else:
                    sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                    )
            return bool(found)

        wait_for(receive, timeout=10, what=f"the completion notice of {job.job_id}")
        return found[0]

    def handler(self, utility: str, aws: Aws) -> Callable[[Message], Any]:
        """A utility's handler making its AWS calls through `aws`."""
        handler = HANDLERS[utility](self.stack.config, aws, clock=lambda: NOW)
        if utility == "restore":
            handler.retrievals.claim_wait_seconds = 0
        return handler

    # -- after the run -------------------------------------------------------------------------

    def redeliver_after(self, *messages: tuple[str, dict[str, Any]]) -> None:
        """Send these messages to their utilities, then run until nothing is left."""
        self.pending.extend(messages)
        self.redeliver(Pipeline(self.stack))
        self.pending.clear()

    def redeliver(self, pipeline: Pipeline) -> None:
        """Deliver again what the actors did not finish, then run until nothing is left."""
        sqs = self.stack.client("sqs")
        for utility, body in self.pending:
            sqs.send_message(
                QueueUrl=self.stack.queue_url(getattr(self.stack.config, utility).queue),
                MessageBody=json.dumps(body),
            )
        pipeline.settle(until=lambda: self.nothing_lost() and self.converged(), timeout=20)

    def converged(self) -> bool:
        """Every result where its user's role says: in S3 for a premium user, archived (and
        gone from S3) for a free one, unless it is empty."""
        for job in self.jobs:
            item = self.item(job)
            if self.role(job.user_id) == PREMIUM or not job.data:
                done = ARCHIVE_ID not in item and self.in_s3(item)
            else:
                done = ARCHIVE_ID in item and not self.in_s3(item)
            if not done:
                return False
        return True

    def nothing_lost(self) -> bool:
        """The invariants that hold at every moment, not only at the end: every result is in
        S3 or in the archive its item names, and no item names a missing archive."""
        for job in self.jobs:
            item = self.item(job)
            archive_id = item.get(ARCHIVE_ID)
            exists = archive_id is not None and self.archive_exists(archive_id)
            assert self.in_s3(item) or exists, f"{job.job_id}: LOST (no S3 result, no archive)"
            assert archive_id is None or exists, f"{job.job_id}: names missing {archive_id}"
        return True

    def check(self, pipeline: Pipeline) -> None:
        """The invariants, for every job of the run, once nothing is left to do."""
        self.nothing_lost()
        for job in self.jobs:
            item = self.item(job)
            archive_id = item.get(ARCHIVE_ID)
            if self.in_s3(item):
                assert self.s3_bytes(item) == job.data, f"{job.job_id}: S3 bytes differ"
            orphans = [a for a in self.archives_of(job) if a != archive_id]
            assert not orphans, f"{job.job_id}: orphan archives {orphans}"
        assert not pipeline.dead, f"dead-lettered: {pipeline.dead}"

    # -- looking at the stack ----------------------------------------------------------------

    def item(self, job: Job) -> dict[str, Any]:
        return (
            Annotations(self.stack.aws, self.stack.config.gas.annotations_table).get(job.job_id)
            or {}
        )

    def role(self, user_id: str) -> str:
        item = self.stack.client("dynamodb").get_item(
            TableName=self.stack.config.gas.users_table, Key={"user_id": {"S": user_id}}
        )
        return item["Item"]["role"]["S"]

    def in_s3(self, item: dict[str, Any]) -> bool:
        listing = self.stack.client("s3").list_objects_v2(
            Bucket=item[RESULTS_BUCKET], Prefix=item[RESULT_KEY]
        )
        return any(o["Key"] == item[RESULT_KEY] for o in listing.get("Contents", []))

    def s3_bytes(self, item: dict[str, Any]) -> bytes:
        return (
            self.stack.client("s3")
            .get_object(Bucket=item[RESULTS_BUCKET], Key=item[RESULT_KEY])["Body"]
            .read()
        )

    def archive_exists(self, archive_id: str) -> bool:
        if self.backend == "s3":
            listing = self.stack.client("s3").list_objects_v2(
                Bucket=self.stack.config.gas.archive_bucket, Prefix=archive_id
            )
            return any(o["Key"] == archive_id for o in listing.get("Contents", []))
        return archive_id in self._vault().archives

    def archives_of(self, job: Job) -> list[str]:
        """Every archive of the job, whichever item names it (orphans included)."""
        if self.backend == "s3":
            gas = self.stack.config.gas
            listing = self.stack.client("s3").list_objects_v2(
                Bucket=gas.archive_bucket, Prefix=f"{gas.archive_prefix}{job.job_id}/"
            )
            return [o["Key"] for o in listing.get("Contents", [])]
        return [
            a.archive_id
            for a in self._vault().archives.values()
            if json.loads(a.description or "{}").get("job_id") == job.job_id
        ]

    def _vault(self) -> Any:
        # The emulation's own state: an inventory would say the same, three calls later.
        return glacier_backends[ACCOUNT][REGION].vaults[self.stack.config.gas.vault]


def upgraded(world: World) -> Job:
    """A job archived while its user was free; the user has just upgraded."""
    job = world.job(world.user(FREE))
    world.archived(job)
    world.upgrade(job.user_id)
    return job
