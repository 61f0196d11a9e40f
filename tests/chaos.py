"""The chaos test: no result file is ever lost, whatever SQS, AWS, the network or a crash does.

    python -m tests.chaos [--backend vault|s3|both] [--jobs N] [--users U] [--seed S]
                          [--errors 0.10] [--resets 0.02] [--lost 0.02] [--kill-every SECONDS]
                          [--freeze-every SECONDS] [--freeze-seconds SECONDS]
                          [--sweep-every SECONDS] [--encryption AES256|aws:kms|aws:kms:dsse]
                          [--index-lag SECONDS] [--timeout SECONDS] [--keep-logs DIR]

Per archive back end, through the documented surface only: the local stack
(``python -m util.local serve``), the faults proxy in front of it (``python -m util.local
faults``: throttling and 5xx answers, connection resets, answers lost after the request took
effect), the utilities as real processes (``python -m util.archive|restore|thaw``, pointed at
the proxy), and AWS calls made directly to the stack to set up and to look.

1. setup (faults off): U free users, N COMPLETED jobs with seeded result sizes from 0 bytes
   (kept in S3, never archived) through small files to results over the vault's part size
   and over the S3 copy part size; short queue visibility timeouts, so that a killed worker's
   messages come back quickly (the redrive policy stays as the stack made it). The stack's
   buckets are encrypted by default as ``--encryption`` says (under ``aws:kms`` no ETag is an
   MD5), and its user_id_index lags ``--index-lag`` seconds behind the table;
2. archive (faults on): one archive message per job plus duplicates of a fifth of them, two
   archive workers, one of them SIGKILLed and replaced every few seconds, until every
   non-empty result is archived and gone from S3. Then every item must name an archive that
   exists, with the result's size (and, vault, its SHA-256 tree hash);
3. restore and thaw (faults on): every user upgraded to premium, one restore message each,
   late duplicates of the archive messages (at-least-once delivery, a redriven dead-letter
   queue: a third of the jobs, each at the upgrade, during its retrieval or after its thaw,
   and any job caught between thaw's copy back and its record on the item), one archive, two
   restore and two thaw workers, any one of them killed every few seconds, until every result
   is back in S3 and no item names an archive. Thaw reaches DynamoDB through a second proxy
   that delays those requests, so that the moment between its copy and its record, when a
   late archive message must not delete the copy, lasts long enough to be hit;
   In both phases, with ``--freeze-every``, a worker is also frozen (SIGSTOP) every few
   seconds for ``--freeze-seconds``, longer than the visibility timeout: its messages go to
   another worker meanwhile, and it wakes (SIGCONT) to finish what it was doing, late. With
   ``--sweep-every``, the sweep (``python -m util.reconcile --repair``, through the proxy, its
   orphan age 5 s) runs that often while the workers do: its passes, their exit statuses, the
   restore messages they sent and the orphans they deleted are counted, and a pass that
   reports a lost result fails the run;
4. settle (no more kills, freezes or sweeps): until the utility queues have stayed empty for a
   while;
5. check (faults off, every worker stopped by SIGTERM), reading the stack directly:
   - no result lost: never "no S3 result and no archive that exists";
   - no item naming an archive that does not exist (here and after step 2);
   - every result back in S3 byte-identical (SHA-256), the empty ones included;
   - no message in a dead-letter queue: every message sent here is valid;
   - no orphan archive: after every thaw, the vault (or the archive prefix) is empty;
   - and, as a figure rather than a check, retrievals started per archived result (the
     proxy's count of InitiateJob or RestoreObject requests that reached the stack).

A result seen lost while a phase runs (its item names no archive and S3 has no result,
before and after the item was read) stops the run at once. One summary line per back end; the
exit status is non-zero if any check fails or a phase times out, with the failing jobs, their
states, and the workers' log lines naming them.

Everything random comes from ``--seed``: sizes, owners, duplicates, the kill times and
targets, the proxy's fault decisions. The proxy decides per request in arrival order, so with
concurrent workers a run is reproducible in its inputs and schedule, not request for request.
The only timed thing is the kill schedule; every wait polls the stack's state with a deadline.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config as BotoConfig
from botocore.utils import calculate_tree_hash

from localaws import faults
from localaws import stack as local_stack
from localaws.stack import CREDENTIALS, REGION
from util.retrieval import is_claim
from util.schema import ARCHIVE_ID, COMPLETED, FREE, PREMIUM, RESTORE_JOB_ID, RESTORE_TIER
from util.util_config import Config, load

ROOT = Path(__file__).resolve().parents[1]
KIB, MIB = 1024, 1024 * 1024
T = TypeVar("T")

# -- every setting in one place -----------------------------------------------------------------

BACKENDS = ("vault", "s3")
UTILITIES = ("archive", "restore", "thaw")
RESULTS_PREFIX = "gas"  # result keys: <prefix>/<user_id>/<job_id>~<name>.annot.vcf (DESIGN)
# The local stack's emulations and the back end's settings, read by the stack and every worker.
STACK_SETTINGS = {
    "GAS_LOCAL_EXPEDITED_SECONDS": "1",
    "GAS_LOCAL_STANDARD_SECONDS": "2",
    "GAS_GAS_COPY_PART_SIZE_MIB": "5",
}
# Each utility's settings (environment variables, as its unit's environment file gives them).
WORKER_SETTINGS = {
    # Retries come back within seconds, as the shortened visibility timeout makes crashes do.
    "all": {
        "GAS_WORKER_WAIT_SECONDS": "1",
        "GAS_WORKER_DRAIN_SECONDS": "10",
        "GAS_WORKER_RETRY_BASE_SECONDS": "4",
        "GAS_WORKER_RETRY_MAX_SECONDS": "30",
    },
    "archive": {"GAS_ARCHIVE_GRACE_SECONDS": "0", "GAS_ARCHIVE_PART_SIZE_MIB": "1"},
    "restore": {},  # GAS_RESTORE_CLAIM_SECONDS (restore's and thaw's): Settings.claim_seconds
    "thaw": {"GAS_THAW_PART_SIZE_MIB": "8"},
}
# Thaw reaches DynamoDB through a second proxy, in front of the faults proxy, that delays its
# DynamoDB requests: the moment between thaw's copy back to S3 and its record on the item (when
# a late archive message must not delete the copy) then lasts long enough to be hit.
THAW_DYNAMODB_LATENCY_MS = 300
QUIET_SECONDS = 4  # settled: the queues stayed empty this long (above a Standard retrieval's 2 s)
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 15  # a progress line this often during a phase
STOP_SECONDS = 30  # SIGTERM → exit: above wait_seconds + drain_seconds
# Result sizes: one empty result (two from 100 jobs), one of 1 byte, a share of the jobs (at
# least one) over each part size, the rest small.
EMPTY_FROM_100 = 2
VAULT_PARTS_SHARE, COPY_PARTS_SHARE = 0.10, 0.05
SMALL = (1, 200 * KIB)
VAULT_PARTS = (int(1.5 * MIB), 3 * MIB)  # over the archive part size (1 MiB)
COPY_PARTS = (6 * MIB, 8 * MIB)  # over the S3 copy part size (5 MiB)
DUPLICATE_SHARE, LATE_DUPLICATE_SHARE = 0.2, 1 / 3
SWEEP_ORPHAN_AGE_SECONDS = 5  # the sweep deletes archives no item names once this old


@dataclass(frozen=True)
class Settings:
    """The command line."""

    backends: tuple[str, ...] = BACKENDS
    jobs: int = 200
    users: int = 10
    seed: int = 1
    errors: float = 0.10
    resets: float = 0.02
    lost: float = 0.02
    kill_every: float = 3.0
    timeout: float = 600.0  # per phase
    keep_logs: Path | None = None
    # The utility queues' VisibilityTimeout (an operator's setting): a killed worker's
    # messages come back after it.
    visibility_seconds: int = 8
    # How long a restore worker killed while starting a retrieval blocks it (not 5 minutes).
    claim_seconds: int = 15
    # Frozen workers (SIGSTOP, 0: never), each for longer than the visibility timeout.
    freeze_every: float = 0.0
    freeze_seconds: float = 15.0
    sweep_every: float = 0.0  # util.reconcile --repair while the workers run (0: never)
    encryption: str = "AES256"  # the buckets' default encryption
    index_lag: float = 0.0  # seconds the user_id_index lags behind the table

    def rng(self, purpose: str) -> random.Random:
        """A generator of its own per purpose, so that one changing leaves the others as
        they were."""
        return random.Random(f"{self.seed}:{purpose}")


def base_environment() -> dict[str, str]:
    """This process's environment without any AWS or GAS setting, plus the stack's
    credentials: nothing from the developer's own AWS setup leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
    return {**env, **CREDENTIALS}


def stack_environment(backend: str, settings: Settings) -> dict[str, str]:
    return {
        **base_environment(),
        **STACK_SETTINGS,
        "GAS_GAS_ARCHIVE_BACKEND": backend,
        "GAS_LOCAL_BUCKET_ENCRYPTION": settings.encryption,
        "GAS_LOCAL_INDEX_LAG_SECONDS": str(settings.index_lag),
    }


# -- what each job must come back as ------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A job as the annotator left it, and what its result must be at the end."""

    job_id: str
    user_id: str
    key: str
    size: int
    sha256: str
    tree_hash: str | None  # Glacier's SHA-256 tree hash; None for an empty result

    @property
    def empty(self) -> bool:
        return self.size == 0


def result_sizes(settings: Settings) -> list[int]:
    """N seeded sizes: one or two empty, a 1-byte one, some over each part size, the rest
    small (log-uniform, 1 B … 200 KiB), in a seeded order."""
    rng = settings.rng("sizes")
    n = settings.jobs

    def share(fraction: float) -> int:
        return max(1, round(n * fraction))

    sizes = [0] * (EMPTY_FROM_100 if n >= 100 else 1) + [1]
    sizes += [rng.randint(*VAULT_PARTS) for _ in range(share(VAULT_PARTS_SHARE))]
    sizes += [rng.randint(*COPY_PARTS) for _ in range(share(COPY_PARTS_SHARE))]
    low, high = (value.bit_length() for value in SMALL)
    while len(sizes) < n:
        sizes.append(min(SMALL[1], int(2 ** rng.uniform(low - 1, high))))
    sizes = sizes[:n]
    rng.shuffle(sizes)
    return sizes


def draw_jobs(settings: Settings) -> Iterator[tuple[Expected, bytes]]:
    """The jobs and their results, spread over the users in turn; ids and contents seeded.
    Drawn one at a time: only sizes and hashes are kept."""
    rng = settings.rng("jobs")
    users = user_ids(settings)
    for i, size in enumerate(result_sizes(settings)):
        job_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user_id = users[i % len(users)]
        data = rng.randbytes(size)
        yield (
            Expected(
                job_id,
                user_id,
                f"{RESULTS_PREFIX}/{user_id}/{job_id}~sample-{i}.annot.vcf",
                size,
                hashlib.sha256(data).hexdigest(),
                calculate_tree_hash(io.BytesIO(data)) if size else None,
            ),
            data,
        )


def user_ids(settings: Settings) -> list[str]:
    return [f"chaos-user-{k:03d}" for k in range(settings.users)]


# -- the stack, read and written directly (never through the proxy) ----------------------------


class Stack:
    """Direct access to the local stack: setup, and every look at the state."""

    def __init__(self, endpoint: str, config: Config):
        self.endpoint = endpoint
        self.config = config
        self.session = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )
        self.clients: dict[str, Any] = {}
        self.deserializer = TypeDeserializer()

    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.client(
                service,
                endpoint_url=self.endpoint,
                config=BotoConfig(retries={"mode": "standard", "total_max_attempts": 3}),
            )
        return self.clients[service]

    @property
    def backend(self) -> str:
        return self.config.gas.archive_backend

    def queue_url(self, name: str) -> str:
        return self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]

    def utility_queue(self, utility: str) -> str:
        return getattr(self.config, utility).queue

    # writes

    def put_user(self, user_id: str) -> None:
        self.client("dynamodb").put_item(
            TableName=self.config.gas.users_table,
            Item={
                "user_id": {"S": user_id},
                "name": {"S": f"Chaos {user_id}"},
                "email": {"S": f"{user_id}@example.com"},
                "role": {"S": FREE},
            },
        )

    def upgrade(self, user_id: str) -> None:
        self.client("dynamodb").update_item(
            TableName=self.config.gas.users_table,
            Key={"user_id": {"S": user_id}},
            UpdateExpression="SET #r = :r",
            ExpressionAttributeNames={"#r": "role"},
            ExpressionAttributeValues={":r": {"S": PREMIUM}},
        )

    def put_job(self, job: Expected, data: bytes, complete_time: int) -> None:
        """The result in the results bucket and the COMPLETED item, as the annotator leaves
        them (tests/conftest.py: put_job)."""
        bucket = self.config.gas.results_bucket
        self.client("s3").put_object(Bucket=bucket, Key=job.key, Body=data)
        item = {
            "job_id": job.job_id,
            "user_id": job.user_id,
            "job_status": COMPLETED,
            "input_file_name": job.key.rpartition("~")[2].replace(".annot.vcf", ".vcf"),
            "submit_time": complete_time - 60,
            "complete_time": complete_time,
            "s3_results_bucket": bucket,
            "s3_key_result_file": job.key,
            "s3_key_log_file": job.key + ".log",
        }
        self.client("dynamodb").put_item(
            TableName=self.config.gas.annotations_table,
            Item={k: {"N": str(v)} if isinstance(v, int) else {"S": v} for k, v in item.items()},
        )

    def send(self, queue: str, bodies: list[dict[str, str]]) -> None:
        url, sqs = self.queue_url(queue), self.client("sqs")
        for first in range(0, len(bodies), 10):
            batch = bodies[first : first + 10]
            answer = sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate(batch)
                ],
            )
            if answer.get("Failed"):
                raise RuntimeError(f"SendMessageBatch to {queue} failed: {answer['Failed']}")

    def set_visibility(self, queue: str, seconds: int) -> None:
        self.client("sqs").set_queue_attributes(
            QueueUrl=self.queue_url(queue), Attributes={"VisibilityTimeout": str(seconds)}
        )

    # reads

    def items(self) -> dict[str, dict[str, Any]]:
        """Every annotations item by job id (consistent scan)."""
        pages = (
            self.client("dynamodb")
            .get_paginator("scan")
            .paginate(TableName=self.config.gas.annotations_table, ConsistentRead=True)
        )
        return {
            item["job_id"]: item
            for page in pages
            for item in (
                {k: self.deserializer.deserialize(v) for k, v in raw.items()}
                for raw in page["Items"]
            )
        }

    def results(self) -> dict[str, int]:
        """The results bucket's objects under the results prefix: key → size."""
        return self._listing(self.config.gas.results_bucket, f"{RESULTS_PREFIX}/")

    def _listing(self, bucket: str, prefix: str) -> dict[str, int]:
        pages = (
            self.client("s3")
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix)
        )
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def archives(self) -> dict[str, dict[str, Any]]:
        """Every archive that exists: id → {"size", "tree_hash"?, "description"?}.

        Vault: an inventory-retrieval job (Expedited: the emulation's takes a second), read
        when it has completed. s3: the archive bucket's objects under the archive prefix.
        """
        gas = self.config.gas
        if self.backend == "s3":
            return {
                key: {"size": size}
                for key, size in self._listing(gas.archive_bucket, gas.archive_prefix).items()
            }
        glacier = self.client("glacier")
        job_id = glacier.initiate_job(
            vaultName=gas.vault, jobParameters={"Type": "inventory-retrieval", "Tier": "Expedited"}
        )["jobId"]
        poll(
            lambda: glacier.describe_job(vaultName=gas.vault, jobId=job_id)["Completed"],
            time.monotonic() + 60,
        )
        inventory = json.load(glacier.get_job_output(vaultName=gas.vault, jobId=job_id)["body"])
        return {
            a["ArchiveId"]: {
                "size": a["Size"],
                "tree_hash": a["SHA256TreeHash"],
                "description": a["ArchiveDescription"],
            }
            for a in inventory["ArchiveList"]
        }

    def queue_depth(self, queue: str) -> int:
        """Messages waiting, in flight and delayed."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url(queue),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        """Everything in `<queue>-dlq` (received and hidden for 5 minutes, so each once)."""
        url, sqs, messages = self.queue_url(f"{queue}-dlq"), self.client("sqs"), []
        while batch := sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=300,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", []):
            messages += batch
        return messages

    def sha256(self, key: str) -> str:
        body = self.client("s3").get_object(Bucket=self.config.gas.results_bucket, Key=key)["Body"]
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(MIB), b""):
            digest.update(chunk)
        return digest.hexdigest()


def poll(
    condition: Callable[[], T], deadline: float, tick: Callable[[], None] = lambda: None
) -> T | None:
    """`condition()` once it is truthy, or None at the deadline; `tick` runs between looks."""
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        tick()
        time.sleep(POLL_SECONDS)


# -- the workers, as systemd would run them, and the one who kills them -------------------------


@dataclass
class Worker:
    utility: str
    name: str  # <utility>-<n>: the n-th process of the utility, and its log's name
    process: subprocess.Popen
    log: Path


@dataclass
class Fleet:
    """The utility processes, each with its own log; restarted when killed or dead."""

    env: dict[str, str]  # the stack's settings and the proxy as AWS_ENDPOINT_URL
    log_dir: Path
    endpoints: dict[str, str] = field(default_factory=dict)  # a utility's own, if any
    workers: list[Worker] = field(default_factory=list)
    started: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    freezes: int = 0
    frozen: dict[str, tuple[Worker, float]] = field(default_factory=dict)  # name -> until
    exits: list[str] = field(default_factory=list)  # workers that died by themselves

    def start(self, utility: str) -> Worker:
        self.started[utility] += 1
        name = f"{utility}-{self.started[utility]}"
        log = self.log_dir / f"{name}.log"
        env = {**self.env, **WORKER_SETTINGS["all"], **WORKER_SETTINGS[utility]}
        if utility in self.endpoints:
            env["AWS_ENDPOINT_URL"] = self.endpoints[utility]
        with open(log, "a") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", f"util.{utility}"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = Worker(utility, name, process, log)
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker) -> Worker:
        """SIGKILL (no cleanup of any kind) and a new process in its place."""
        worker.process.kill()
        worker.process.wait()
        self.workers.remove(worker)
        self.frozen.pop(worker.name, None)
        self.kills += 1
        return self.start(worker.utility)

    def freeze(self, worker: Worker, seconds: float) -> None:
        """SIGSTOP: every thread stops where it is, its messages' visibility lapses, and
        another worker takes them; `thaw_due` wakes it `seconds` later to go on, late."""
        worker.process.send_signal(signal.SIGSTOP)
        self.frozen[worker.name] = (worker, time.monotonic() + seconds)
        self.freezes += 1

    def thaw_due(self, everyone: bool = False) -> None:
        """SIGCONT the frozen workers whose time has come (`everyone`: all of them)."""
        now = time.monotonic()
        for name, (worker, until) in list(self.frozen.items()):
            if everyone or now >= until:
                worker.process.send_signal(signal.SIGCONT)
                del self.frozen[name]

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.name not in self.frozen]

    def revive(self) -> None:
        """A worker that exited by itself (e.g. AWS out of reach at start: exit 1) is started
        again, as systemd's Restart= would; a configuration error is the runner's bug."""
        for worker in [w for w in self.workers if w.process.poll() is not None]:
            code = worker.process.returncode
            if code == 2:
                raise RuntimeError(
                    f"{worker.name} refused its configuration: {worker.log.read_text().strip()}"
                )
            self.exits.append(f"{worker.name} exited {code}")
            self.workers.remove(worker)
            self.start(worker.utility)

    def stop(self, workers: list[Worker] | None = None) -> list[str]:
        """SIGTERM, then SIGKILL whatever has not exited within STOP_SECONDS; those names."""
        workers = list(self.workers if workers is None else workers)
        self.thaw_due(everyone=True)  # a stopped process acts on no SIGTERM
        for worker in workers:
            worker.process.send_signal(signal.SIGTERM)
        deadline, stubborn = time.monotonic() + STOP_SECONDS, []
        for worker in workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
                stubborn.append(worker.name)
            self.workers.remove(worker)
        return stubborn


@dataclass
class KillSchedule:
    """Every `every` seconds on average (0.5–1.5 ×, seeded), SIGKILL a seeded choice of the
    workers and start its replacement; every `freeze_every` seconds likewise, freeze one that
    is running for `freeze_seconds`; and every `sweep_every`, a sweep. The timed things in
    the test."""

    fleet: Fleet
    rng: random.Random
    every: float
    freeze_every: float = 0.0
    freeze_seconds: float = 0.0
    sweeper: Sweeper | None = None
    due: float = 0.0
    freeze_due: float = 0.0

    def __post_init__(self) -> None:
        self.due = self.next(self.every)
        self.freeze_due = self.next(self.freeze_every)

    def next(self, every: float) -> float:
        return time.monotonic() + every * self.rng.uniform(0.5, 1.5)

    def tick(self) -> None:
        self.fleet.thaw_due()
        self.fleet.revive()
        now = time.monotonic()
        if self.every > 0 and now >= self.due and self.fleet.workers:
            self.fleet.kill(self.rng.choice(self.fleet.workers))
            self.due = self.next(self.every)
        running = self.fleet.running()
        if self.freeze_every > 0 and now >= self.freeze_due and len(running) > 1:
            self.fleet.freeze(self.rng.choice(running), self.freeze_seconds)
            self.freeze_due = self.next(self.freeze_every)
        if self.sweeper is not None:
            self.sweeper.tick()


@dataclass
class Sweeper:
    """``python -m util.reconcile --repair`` every `every` seconds while the workers run (the
    next pass once the one before has ended), as an operator's timer would, through the
    proxy: what its passes did, counted from their JSON reports."""

    env: dict[str, str]
    log_dir: Path
    every: float
    process: subprocess.Popen | None = None
    output: Path | None = None
    due: float = field(default_factory=time.monotonic)
    passes: int = 0
    exits: Counter[int] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    restore_messages: int = 0
    orphans_deleted: int = 0
    lost: list[str] = field(default_factory=list)

    def tick(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            self.collect()
        if self.process is None and time.monotonic() >= self.due:
            self.passes += 1
            self.output = self.log_dir / f"reconcile-{self.passes}.json"
            with open(self.output, "w") as out, open(self.log_dir / "reconcile.log", "a") as err:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "util.reconcile", "--repair", "--format", "json"],
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            self.due = time.monotonic() + self.every

    def finish(self) -> None:
        """Wait for the pass under way, and count it."""
        if self.process is not None:
            self.process.wait(timeout=STOP_SECONDS * 4)
            self.collect()

    def collect(self) -> None:
        assert self.process is not None and self.output is not None
        self.exits[self.process.returncode] += 1
        self.process = None
        try:
            report = json.loads(self.output.read_text())
        except ValueError:
            return  # AWS failed (exit 1): no report, as an operator would see it
        sent = set()
        for finding in report["findings"]:
            self.findings[finding["kind"]] += 1
            if finding["kind"] == "lost":
                self.lost.append(f"{finding['job_id']}: {finding['detail']}")
            elif finding["kind"] == "orphan-archive" and finding["action"].startswith("done"):
                self.orphans_deleted += 1
            elif finding["action"] == "done: sent the restore message":
                sent.add(finding["user_id"])
        self.restore_messages += len(sent)

    def line(self) -> str:
        exits = ", ".join(f"{n} exit {code}" for code, n in sorted(self.exits.items()))
        return (
            f"sweep: {self.passes} passes ({exits}), {self.restore_messages} restore messages "
            f"sent, {self.orphans_deleted} orphans deleted; findings "
            + (", ".join(f"{n} {k}" for k, n in sorted(self.findings.items())) or "none")
        )


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What one back end's run found; `ok` when every check passed."""

    backend: str
    settings: Settings
    jobs: int = 0
    empty: int = 0
    lost: list[str] = field(default_factory=list)
    missing_archive: list[str] = field(default_factory=list)
    identical: int = 0
    not_identical: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    retrievals: int = 0
    archived_results: int = 0
    orphans: list[str] = field(default_factory=list)
    kills: int = 0
    freezes: int = 0
    sweep: str = ""  # what the sweep's passes did (Sweeper.line), if it ran
    faults: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # timeouts and other failures
    notes: list[str] = field(default_factory=list)  # worth knowing, not failures
    log_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.missing_archive
            or self.not_identical
            or self.identical != self.jobs
            or self.dead_letters
            or self.orphans
            or self.problems
        )

    @property
    def retrievals_per_result(self) -> float:
        return self.retrievals / self.archived_results if self.archived_results else 0.0

    def line(self) -> str:
        s, f = self.settings, self.faults
        return (
            f"chaos {self.backend}: {self.jobs} jobs ({self.empty} empty), "
            f"{len(self.lost)} lost, {len(self.missing_archive)} naming a missing archive, "
            f"{self.identical}/{self.jobs} byte-identical, "
            f"{len(self.dead_letters)} in DLQs, "
            f"{self.retrievals_per_result:.2f} retrievals/result, "
            f"{len(self.orphans)} orphan archives; {self.kills} kills, {self.freezes} freezes; "
            f"faults {s.errors:.1%}/{s.resets:.1%}/{s.lost:.1%}: "
            f"{f.get('error', 0)} errors, {f.get('reset', 0)} resets, "
            f"{f.get('lost', 0)} lost answers of {sum(f.values())} requests; "
            f"buckets {s.encryption}, index lag {s.index_lag:g} s; "
            f"{self.seconds:.0f} s"
            + (f"\n  {self.sweep}" if self.sweep else "")
            + ("" if self.ok else " — FAILED")
        )


class PhaseTimeout(Exception):
    """A phase did not reach its state by its deadline; the message says what is stuck."""


class ResultLost(Exception):
    """A result was seen lost during a phase: the run stops there."""


@dataclass
class Run:
    """One back end's run: the stack, the proxy, the fleet, the jobs."""

    settings: Settings
    stack: Stack
    proxy: str
    fleet: Fleet
    summary: Summary
    sweeper: Sweeper | None = None
    jobs: list[Expected] = field(default_factory=list)  # filled by setup
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        print(
            f"chaos {self.stack.backend} {time.monotonic() - self.started:5.0f} s: {text}",
            flush=True,
        )

    # phases

    def setup(self) -> None:
        """Users, jobs and results, short visibility timeouts; faults off."""
        faults.configure(self.proxy, errors=0, resets=0, lost=0)
        for utility in UTILITIES:
            self.stack.set_visibility(
                self.stack.utility_queue(utility), self.settings.visibility_seconds
            )
        for user_id in user_ids(self.settings):
            self.stack.put_user(user_id)
        complete_time = int(time.time()) - 3600
        for job, data in draw_jobs(self.settings):
            self.stack.put_job(job, data, complete_time)
            self.jobs.append(job)
        self.summary.jobs, self.summary.empty = len(self.jobs), sum(j.empty for j in self.jobs)
        sizes = sorted(job.size for job in self.jobs)
        self.say(
            f"{len(self.jobs)} jobs of {self.settings.users} users, results "
            f"{sizes[0]} B … {sizes[-1] / MIB:.1f} MiB, {sum(sizes) / MIB:.1f} MiB in all"
        )

    def archive(self) -> None:
        """Archive messages (a fifth twice), faults on, two archive workers under the kill
        schedule, until every non-empty result is archived and gone from S3."""
        rng = self.settings.rng("archive messages")
        bodies = [{"job_id": j.job_id, "user_id": j.user_id} for j in self.jobs]
        bodies += rng.sample(bodies, round(len(bodies) * DUPLICATE_SHARE))
        rng.shuffle(bodies)
        self.stack.send(self.stack.utility_queue("archive"), bodies)
        self.faults_on()
        for _ in range(2):
            self.fleet.start("archive")
        self.wait("archive", self.all_archived)
        self.check_archives()

    def restore_and_thaw(self) -> None:
        """Upgrades, restore messages, late archive duplicates; one archive, two restore, two
        thaw workers under the kill schedule, until every result is back in S3."""
        archive_workers = [w for w in self.fleet.workers if w.utility == "archive"]
        self.fleet.stop(archive_workers[1:])
        for user_id in user_ids(self.settings):
            self.stack.upgrade(user_id)
        self.stack.send(
            self.stack.utility_queue("restore"), [{"user_id": u} for u in user_ids(self.settings)]
        )
        late = LateDuplicates(self)
        late.observe({}, {})
        for utility in ("restore", "restore", "thaw", "thaw"):
            self.fleet.start(utility)

        def all_thawed() -> list[str]:
            """Jobs whose item still names an archive, or whose result is not in S3."""
            items, before, results = self.look()
            late.observe(items, before)
            return [
                j.job_id for j in self.jobs if ARCHIVE_ID in items[j.job_id] or j.key not in results
            ]

        self.wait("restore and thaw", all_thawed)
        self.say(f"restore and thaw: {late.report()}")

    def settle(self) -> None:
        """No more kills, freezes or sweeps: wait until the utility queues have been empty
        for QUIET_SECONDS, so that late duplicates and notices are handled before anything is
        judged."""
        self.fleet.thaw_due(everyone=True)
        if self.sweeper is not None:
            self.sweeper.finish()
        quiet_since: float | None = None
        depths: dict[str, int] = {}

        def quiet() -> bool:
            nonlocal quiet_since
            depths.update(
                {u: self.stack.queue_depth(self.stack.utility_queue(u)) for u in UTILITIES}
            )
            if any(depths.values()):
                quiet_since = None
                return False
            quiet_since = quiet_since or time.monotonic()
            return time.monotonic() - quiet_since >= QUIET_SECONDS

        if not poll(quiet, time.monotonic() + self.settings.timeout, self.fleet.revive):
            waiting = ", ".join(f"{u} queue: {n}" for u, n in depths.items() if n)
            raise PhaseTimeout(
                f"settle: the utility queues never stayed empty for {QUIET_SECONDS} s ({waiting})"
            )
        self.say("settled: the utility queues are empty")

    def faults_on(self) -> None:
        s = self.settings
        faults.configure(self.proxy, errors=s.errors, resets=s.resets, lost=s.lost)

    def wait(self, phase: str, condition: Callable[[], list[str]]) -> None:
        """Run the kill schedule until `condition` (the jobs not there yet) returns none."""
        s = self.settings
        schedule = KillSchedule(
            self.fleet,
            s.rng(f"kills {phase}"),
            s.kill_every,
            s.freeze_every,
            s.freeze_seconds,
            self.sweeper,
        )
        deadline = time.monotonic() + self.settings.timeout
        self.say(f"{phase}: {', '.join(w.name for w in self.fleet.workers)}")
        next_progress = time.monotonic() + PROGRESS_SECONDS
        stuck: list[str] = []

        def reached() -> bool:
            nonlocal next_progress
            if self.sweeper is not None and self.sweeper.lost:
                raise ResultLost(f"the sweep reported results lost: {self.sweeper.lost}")
            stuck[:] = condition()
            if stuck and time.monotonic() >= next_progress:
                next_progress += PROGRESS_SECONDS
                self.say(f"{phase}: {len(stuck)} jobs to go, {self.fleet.kills} kills")
            return not stuck

        if not poll(reached, deadline, schedule.tick):
            raise PhaseTimeout(
                f"{phase}: {len(stuck)} jobs not done after "
                f"{self.settings.timeout:.0f} s\n" + self.describe(stuck)
            )
        self.say(f"{phase}: done, {self.fleet.kills} kills so far")

    # states

    def all_archived(self) -> list[str]:
        """Non-empty jobs whose item names no archive yet, or whose S3 result is still there."""
        items, _, results = self.look()
        return [
            j.job_id
            for j in self.jobs
            if not j.empty and (ARCHIVE_ID not in items[j.job_id] or j.key in results)
        ]

    def look(self) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, int]]:
        """The S3 results, the items, the S3 results again, read in that order; ResultLost as
        soon as a result is seen lost.

        Archive records the archive before it deletes the S3 result, thaw copies the result
        back before it removes the archive from the item, and a job is archived once (its
        user is premium after). So a result absent from S3 at one moment was archived by
        then; if its item names no archive a moment later, thaw had copied it back; absent
        from S3 again after that, something deleted it: no worker can bring it back.
        """
        before = self.stack.results()
        items = self.stack.items()
        after = self.stack.results()
        lost = [
            j.job_id
            for j in self.jobs
            if ARCHIVE_ID not in items[j.job_id] and j.key not in before and j.key not in after
        ]
        if lost:
            self.summary.lost += lost
            raise ResultLost(
                f"{len(lost)} results lost (item names no archive, no S3 result): {', '.join(lost)}"
            )
        return items, before, after

    def describe(self, job_ids: list[str], logs: bool = True) -> str:
        """The jobs grouped by state, and (`logs`) the worker logs that name the first few."""
        items, results = self.stack.items(), self.stack.results()
        by_job = {j.job_id: j for j in self.jobs}
        states: dict[str, list[str]] = {}
        for job_id in job_ids:
            states.setdefault(
                state(items.get(job_id, {}), by_job[job_id].key in results), []
            ).append(job_id)
        lines = [
            f"  {name}: {len(ids)}: {', '.join(ids[:8])}" + (" …" if len(ids) > 8 else "")
            for name, ids in sorted(states.items())
        ]
        for job_id in job_ids[:5] if logs else []:
            names = sorted(
                p.name
                for p in self.fleet.log_dir.glob("*.log")
                if job_id in p.read_text(errors="replace")
            )
            lines.append(f"  {job_id} is named in {', '.join(names) or 'no worker log'}")
        return "\n".join(lines)

    def check_archives(self) -> None:
        """After archiving: every non-empty job's item names an archive that exists and
        holds the result (its size; the vault's tree hash too), every empty one none."""
        items, archives = self.stack.items(), self.stack.archives()
        for job in self.jobs:
            archive_id = items[job.job_id].get(ARCHIVE_ID)
            if job.empty:
                if archive_id is not None:
                    self.summary.problems.append(f"{job.job_id}: empty result archived")
                continue
            archive = archives.get(archive_id)
            if archive is None:
                self.summary.missing_archive.append(job.job_id)
                self.summary.problems.append(
                    f"{job.job_id}: after archiving, its item names {archive_id}, which does "
                    f"not exist"
                )
            elif (
                archive["size"] != job.size
                or archive.get("tree_hash", job.tree_hash) != job.tree_hash
            ):
                self.summary.problems.append(
                    f"{job.job_id}: archive {archive_id} holds {archive} instead of "
                    f"{job.size} B, tree hash {job.tree_hash}"
                )
        named = {item.get(ARCHIVE_ID) for item in items.values()}
        extra = len(set(archives) - named)
        self.say(f"archive: {len(archives)} archives, {extra} named by no item (yet)")

    # the checks

    def check(self) -> None:
        """Every check of the module docstring, reading the stack directly."""
        summary, stack = self.summary, self.stack
        items, results, archives = stack.items(), stack.results(), stack.archives()
        for job in self.jobs:
            item = items.get(job.job_id, {})
            archive_id = item.get(ARCHIVE_ID)
            if (
                job.key not in results
                and archive_id not in archives
                and job.job_id not in summary.lost
            ):
                summary.lost.append(job.job_id)
            if (
                archive_id is not None
                and archive_id not in archives
                and job.job_id not in summary.missing_archive
            ):
                summary.missing_archive.append(job.job_id)
            if job.key in results:
                if results[job.key] == job.size and stack.sha256(job.key) == job.sha256:
                    summary.identical += 1
                else:
                    summary.not_identical.append(job.job_id)
        named = {item.get(ARCHIVE_ID) for item in items.values()}
        summary.orphans = sorted(set(archives) - named)
        for utility in UTILITIES:
            for message in stack.dead_letters(stack.utility_queue(utility)):
                summary.dead_letters.append(dead_letter_line(utility, message))
        summary.archived_results = sum(not job.empty for job in self.jobs)
        summary.retrievals = retrievals_started(faults.counts(self.proxy), stack.backend)

    def job_log(self, job_id: str, limit: int = 60) -> str:
        """Every worker log line naming the job, in time order, with its log's name."""
        lines = []
        for path in sorted(self.fleet.log_dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if job_id in line:
                    lines.append(f"    {line}  [{path.name}]")
        lines.sort()
        return "\n".join(
            lines[:limit] + ([f"    … {len(lines) - limit} more"] if len(lines) > limit else [])
        )

    def failures(self) -> str:
        """What failed: the problems, then each failing job once with what is wrong with it,
        its state and the worker log lines naming it, then dead letters and orphans."""
        s = self.summary
        items, results = self.stack.items(), self.stack.results()
        wrong: dict[str, list[str]] = {}
        for title, ids in (
            ("lost", s.lost),
            ("names a missing archive", s.missing_archive),
            ("not byte-identical", s.not_identical),
        ):
            for job_id in ids:
                wrong.setdefault(job_id, []).append(title)
        out = [f"  {p}" for p in s.problems]
        by_job = {j.job_id: j for j in self.jobs}
        for n, (job_id, titles) in enumerate(wrong.items()):
            job = by_job[job_id]
            out.append(
                f"  job {job_id} ({job.user_id}, {job.size} B): {', '.join(titles)}; "
                f"state: {state(items.get(job_id, {}), job.key in results)}"
            )
            if n < 5:
                out.append(self.job_log(job_id))
        unfinished = [j.job_id for j in self.jobs if j.key not in results and j.job_id not in wrong]
        if unfinished:
            out.append(
                f"  {len(unfinished)} other results not in S3 at the end, by state:\n"
                + self.describe(unfinished, logs=False)
            )
        out += [f"  in a dead-letter queue: {line}" for line in s.dead_letters]
        out += [f"  orphan archive: {a}" for a in s.orphans[:20]]
        return "\n".join(out)


class LateDuplicates:
    """Archive messages sent again while results come back (at-least-once delivery, an
    operator redriving a dead-letter queue): the message must never delete what thaw put back.

    A third of the jobs (seeded) get one, each at a seeded moment: at the upgrade, once its
    retrieval is under way, or once its result is back in S3. And any job seen with its result
    back in S3 while its item still names the archive (thaw between its copy and its record,
    the most dangerous moment for an archive message) gets one then.
    """

    MOMENTS = ("upgrade", "retrieving", "back")

    def __init__(self, run: Run):
        self.run = run
        rng = run.settings.rng("late duplicates")
        late = rng.sample(run.jobs, round(len(run.jobs) * LATE_DUPLICATE_SHARE))
        self.due = {job.job_id: rng.choice(self.MOMENTS) for job in late}
        self.sent: Counter[str] = Counter()  # by moment, and "window"
        self.caught: set[str] = set()  # jobs caught between thaw's copy and its record

    def observe(self, items: dict[str, dict[str, Any]], results: dict[str, int]) -> None:
        """Send the duplicates whose moment has come, given the items and the S3 results
        listed just before them (so that a result listed and an item still naming its archive
        mean that, when the item was read, thaw had copied the result and not recorded it)."""
        batch = []
        for job in self.run.jobs:
            item = items.get(job.job_id, {})
            back, archived = job.key in results, ARCHIVE_ID in item
            retrieval = item.get(RESTORE_JOB_ID)
            retrieving = archived and retrieval is not None and not is_claim(retrieval)
            moment = self.due.get(job.job_id)
            if (
                moment == "upgrade"
                or (moment == "retrieving" and (retrieving or back))
                or (moment == "back" and back)
            ):
                del self.due[job.job_id]
                self.sent[moment] += 1
                batch.append(job)
            if back and archived and job.job_id not in self.caught:
                self.caught.add(job.job_id)
                self.sent["window"] += 1
                batch.append(job)
        if batch:
            self.run.stack.send(
                self.run.stack.utility_queue("archive"),
                [{"job_id": j.job_id, "user_id": j.user_id} for j in batch],
            )

    def report(self) -> str:
        return (
            f"late archive duplicates: {self.sent['upgrade']} at the upgrade, "
            f"{self.sent['retrieving']} during retrieval, {self.sent['back']} after thaw, "
            f"{self.sent['window']} between thaw's copy and its record"
        )


def state(item: dict[str, Any], in_s3: bool) -> str:
    """A job's state, from its item and whether its S3 result exists."""
    archive, retrieval = item.get(ARCHIVE_ID), item.get(RESTORE_JOB_ID)
    if not item:
        return "no item"
    if archive is None:
        return "in S3, not archived" if in_s3 else "NO S3 RESULT AND NO ARCHIVE"
    where = "archived, S3 copy still there" if in_s3 else "archived"
    if retrieval is None:
        return where
    if is_claim(retrieval):
        return f"{where}, retrieval claimed"
    return f"{where}, {item.get(RESTORE_TIER, '?')} retrieval under way"


def dead_letter_line(utility: str, message: dict[str, Any]) -> str:
    attributes = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
    reason = attributes.get("gas_reason") or (
        "moved by the redrive policy after "
        f"{message.get('Attributes', {}).get('ApproximateReceiveCount', '?')} receives"
    )
    return f"{utility}-dlq: message {message['MessageId']}: {message['Body'][:300]} — {reason}"


def retrievals_started(report: dict[str, Any], backend: str) -> int:
    """Retrieval requests that reached the stack (forwarded, or answered and the answer lost):
    InitiateJob of archive retrievals (vault; the runner's inventories go around the proxy) or
    RestoreObject (s3)."""
    service, operation = (
        ("glacier", "InitiateJob") if backend == "vault" else ("s3", "RestoreObject")
    )
    counts = report["counts"].get(service, {}).get(operation, {})
    return counts.get(faults.FORWARDED, 0) + counts.get(faults.LOST, 0)


def run_backend(settings: Settings, backend: str, log_dir: Path) -> Summary:
    """One back end, from a fresh stack to its summary."""
    summary = Summary(backend, settings, log_dir=log_dir)
    started = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = stack_environment(backend, settings)
    with ExitStack() as cleanup:
        stack_process, exports = local_stack.launch(env=env)
        cleanup.callback(stop_process, stack_process)
        proxy_process, proxy = faults.launch(exports["AWS_ENDPOINT_URL"], seed=settings.seed)
        cleanup.callback(stop_process, proxy_process)
        slow_process, slow = faults.launch(
            proxy, latency_ms=THAW_DYNAMODB_LATENCY_MS, services=["dynamodb"]
        )
        cleanup.callback(stop_process, slow_process)
        config = load(None, local_stack.utility_config_files(), environ=env)
        stack = Stack(exports["AWS_ENDPOINT_URL"], config)
        fleet = Fleet(
            {
                **env,
                "AWS_ENDPOINT_URL": proxy,
                "GAS_RESTORE_CLAIM_SECONDS": str(settings.claim_seconds),
            },
            log_dir,
            {"thaw": slow},
        )
        cleanup.callback(fleet.stop)
        sweeper = (
            Sweeper(
                {**fleet.env, "GAS_RECONCILE_ORPHAN_AGE_SECONDS": str(SWEEP_ORPHAN_AGE_SECONDS)},
                log_dir,
                settings.sweep_every,
            )
            if settings.sweep_every > 0
            else None
        )
        run = Run(settings, stack, proxy, fleet, summary, sweeper)
        try:
            run.setup()
            run.archive()
            run.restore_and_thaw()
            run.settle()
        except PhaseTimeout as exc:
            summary.problems.append(f"timed out: {exc}")
        except ResultLost as exc:
            summary.problems.append(f"stopped: {exc}")
        faults.configure(proxy, errors=0, resets=0, lost=0)
        stubborn = fleet.stop()
        if stubborn:
            summary.problems.append(
                f"not stopped by SIGTERM within {STOP_SECONDS} s: {', '.join(stubborn)}"
            )
        if sweeper is not None:
            sweeper.finish()
            summary.sweep = sweeper.line()
            summary.problems += [f"the sweep reported lost: {lost}" for lost in sweeper.lost]
        summary.notes += fleet.exits
        summary.kills, summary.freezes = fleet.kills, fleet.freezes
        run.check()
        summary.faults = faults.counts(proxy)["totals"]
        summary.seconds = time.monotonic() - started
        if not summary.ok:
            print(f"chaos {backend}: FAILED\n{run.failures()}", flush=True)
    return summary


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def run(settings: Settings) -> list[Summary]:
    """Every back end asked for, in turn; the logs kept if asked, or if anything failed."""
    log_root = settings.keep_logs or Path(tempfile.mkdtemp(prefix="gas-chaos-"))
    summaries = []
    for backend in settings.backends:
        summaries.append(run_backend(settings, backend, log_root / backend))
    for summary in summaries:
        print(summary.line(), flush=True)
        for note in summary.notes:
            print(f"  note: {note}")
    if all(s.ok for s in summaries) and settings.keep_logs is None:
        shutil.rmtree(log_root, ignore_errors=True)
    else:
        print(f"worker logs: {log_root}", flush=True)
    return summaries


def parse(argv: list[str] | None = None) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--errors",
        type=float,
        default=defaults.errors,
        help="share of requests answered with throttling or a 5xx",
    )
    parser.add_argument(
        "--resets",
        type=float,
        default=defaults.resets,
        help="share of connections reset before forwarding",
    )
    parser.add_argument(
        "--lost",
        type=float,
        default=defaults.lost,
        help="share of answers dropped after the request took effect",
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=defaults.kill_every,
        metavar="SECONDS",
        help="SIGKILL a worker this often (0: never)",
    )
    parser.add_argument(
        "--freeze-every",
        type=float,
        default=defaults.freeze_every,
        metavar="SECONDS",
        help="SIGSTOP a worker this often (0: never), for --freeze-seconds",
    )
    parser.add_argument(
        "--freeze-seconds",
        type=float,
        default=defaults.freeze_seconds,
        metavar="SECONDS",
        help="how long a frozen worker stays frozen (above the visibility timeout, 8 s)",
    )
    parser.add_argument(
        "--sweep-every",
        type=float,
        default=defaults.sweep_every,
        metavar="SECONDS",
        help="run util.reconcile --repair this often while the workers run (0: never)",
    )
    parser.add_argument(
        "--encryption",
        choices=["AES256", "aws:kms", "aws:kms:dsse"],
        default=defaults.encryption,
        help="the buckets' default encryption (aws:kms: ETags are not MD5s)",
    )
    parser.add_argument(
        "--index-lag",
        type=float,
        default=defaults.index_lag,
        metavar="SECONDS",
        help="how far the user_id_index lags behind the table",
    )
    parser.add_argument(
        "--timeout", type=float, default=defaults.timeout, metavar="SECONDS", help="per phase"
    )
    parser.add_argument("--keep-logs", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    if args.jobs < 1 or not 1 <= args.users <= args.jobs:
        parser.error("--jobs must be at least 1 and --users from 1 to --jobs")
    return Settings(
        backends=BACKENDS if args.backend == "both" else (args.backend,),
        jobs=args.jobs,
        users=args.users,
        seed=args.seed,
        errors=args.errors,
        resets=args.resets,
        lost=args.lost,
        kill_every=args.kill_every,
        freeze_every=args.freeze_every,
        freeze_seconds=args.freeze_seconds,
        sweep_every=args.sweep_every,
        encryption=args.encryption,
        index_lag=args.index_lag,
        timeout=args.timeout,
        keep_logs=args.keep_logs,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    # SIGTERM as Ctrl-C: the stack, the proxy and every worker are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return 0 if all(s.ok for s in run(settings)) else 1


if __name__ == "__main__":
    sys.exit(main())
