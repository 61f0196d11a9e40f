"""``make demo``: the whole GAS pipeline on a laptop, step by step.

The local stack plays AWS, the simulated annotator plays the fleet, and the four utilities
run as separate processes, as systemd runs them. ann_load submits jobs for free and premium
users exactly as the web app does; the demo then follows them: e-mails sent, free users'
results archived after their grace period (and a forged archive message sent to the
dead-letter queue), one user upgrades, restore starts the retrievals, the stack announces
them, thaw puts the files back — byte-identical. A reconcile pass then finds nothing to
repair, util.status shows the state, and ``python -m util.doctor`` finds the stack as a
deployment should be. It ends with a table of every step, the
ann_load summary and where its HTML report is, and exits non-zero if any step failed.

``GAS_GAS_ARCHIVE_BACKEND=s3 make demo`` archives with S3 Glacier storage classes instead of
the vault; ``GAS_LOCAL_EXPEDITED_CAPACITY=false make demo`` shows restore falling back to
Standard retrievals.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from localaws.ses import sent_emails
from localaws.stack import launch, utility_config_files
from util.archives import backend_class
from util.aws import Aws
from util.helpers import Annotations
from util.schema import (
    ARCHIVE_ID,
    COMPLETED,
    JOB_STATUS,
    RESTORE_TIER,
    RESULT_KEY,
    RESULTS_BUCKET,
    THAW_JOB_ID,
)
from util.util_config import UTILITY_DIR, Config, load

OUT = UTILITY_DIR.parent / "demo-out"
ROOT = UTILITY_DIR.parent
GRACE_SECONDS = 20  # long enough to see the free users' results before they are archived
USERS = {"u-alice": "free, upgrades later", "u-bob": "premium", "u-carol": "free"}
JOBS = 6
WORKER_SETTINGS = {
    "GAS_ARCHIVE_GRACE_SECONDS": str(GRACE_SECONDS),
    "GAS_ARCHIVE_PART_SIZE_MIB": "1",
    "GAS_THAW_PART_SIZE_MIB": "8",
    "GAS_WORKER_WAIT_SECONDS": "1",
    "GAS_LOCAL_EXPEDITED_SECONDS": "2",
    "GAS_LOCAL_STANDARD_SECONDS": "4",
}
UTILITIES = ("archive", "restore", "thaw", "notify")


@dataclass
class Step:
    text: str
    ok: bool


class Demo:
    """The stack, the processes the demo started, and every step's result."""

    def __init__(self, config: Config, aws: Aws, endpoint: str):
        self.config = config
        self.aws = aws
        self.endpoint = endpoint
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.steps: list[Step] = []
        self.processes: dict[str, subprocess.Popen] = {}
        self.ann_load_summary = ""

    def say(self, text: str) -> None:
        print(f"\n== {text}", flush=True)

    def check(self, ok: bool, text: str) -> bool:
        print(f"   {'✔' if ok else '✘'} {text}", flush=True)
        self.steps.append(Step(text, bool(ok)))
        return bool(ok)

    # -- processes ---------------------------------------------------------------------------

    def start(self, name: str, *args: str) -> None:
        """Start `python args...` as its own process, its log in demo-out/<name>.log."""
        log = OUT / f"{name}.log"
        print(f"   started {name}: python {' '.join(args)}  (log: {log.relative_to(ROOT)})")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, **WORKER_SETTINGS},
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),
        )

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                code = process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                code = None
            self.check(
                code == 0,
                f"{name} stopped by SIGTERM, as systemd stops it "
                f"(exit {'killed' if code is None else code})",
            )

    # -- the stack -----------------------------------------------------------------------------

    def item(self, job_id: str) -> dict:
        return self.jobs.get(job_id) or {}

    def result_digest(self, job_id: str) -> str | None:
        """SHA-256 of the job's result file in S3, or None if it is not there."""
        item = self.item(job_id)
        try:
            body = self.aws.client("s3").get_object(
                Bucket=item[RESULTS_BUCKET], Key=item[RESULT_KEY]
            )["Body"]
        except (ClientError, KeyError):
            return None
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def archived(self, job_id: str) -> bool:
        return ARCHIVE_ID in self.item(job_id)

    def archive_count(self) -> int:
        """Archives in the configured back end: the vault, or the archive bucket."""
        if backend_class(self.config).IN_BUCKET:
            return (
                self.aws.client("s3")
                .list_objects_v2(Bucket=self.config.gas.archive_bucket)
                .get("KeyCount", 0)
            )
        return self.aws.client("glacier").describe_vault(vaultName=self.config.gas.vault)[
            "NumberOfArchives"
        ]

    def dead_letter_reasons(self, queue: str) -> list[str]:
        messages = (
            self.aws.client("sqs")
            .receive_message(
                QueueUrl=self.aws.queue_url(f"{queue}-dlq"),
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                WaitTimeSeconds=1,
                VisibilityTimeout=0,
            )
            .get("Messages", [])
        )  # left visible, for util.status
        return [m["MessageAttributes"]["gas_reason"]["StringValue"] for m in messages]


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def submit_jobs(demo: Demo) -> dict[str, str]:
    """ann_load plays the web app; returns {job_id: user_id} of the jobs it submitted."""
    demo.say(
        f"ann_load submits {JOBS} jobs as the web app does, for "
        + ", ".join(f"{user} ({kind})" for user, kind in USERS.items())
    )
    out = OUT / "ann_load"
    command = [
        sys.executable,
        "util/ann_load.py",
        "--rate",
        "2",
        "--jobs",
        str(JOBS),
        "--drain",
        "60",
        "--out",
        str(out),
        *(a for u in USERS for a in ("--user", u)),
    ]
    print(f"   $ python {' '.join(command[1:])}")
    run = subprocess.run(
        command, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=180
    )
    demo.check(
        run.returncode == 0,
        f"every job submitted and COMPLETED by the simulated "
        f"annotator (ann_load exit {run.returncode})",
    )
    (OUT / "ann_load.log").write_text(run.stderr)
    demo.ann_load_summary = run.stdout.strip()
    records = [json.loads(line) for line in (out / "jobs.jsonl").read_text().splitlines()]
    return {r["job_id"]: r["user_id"] for r in records}


def check_emails(demo: Demo, jobs: dict[str, str]) -> None:
    demo.say("notify e-mails each user about each finished job")
    wait_until(lambda: len(sent_emails(demo.endpoint)) >= len(jobs), 30)
    emails = sent_emails(demo.endpoint)
    for email in emails:
        link = next((w for w in email["body"].split('"') if "/annotations/" in w), "")
        print(f"   ✉ {email['to'][0]}: {email['subject']!r} {link}")
    owners = sorted(f"{jobs[j][2:]}@example.com" for j in jobs)
    demo.check(
        sorted(e["to"][0] for e in emails) == owners,
        f"{len(emails)} e-mails, one per job, each to the job's owner",
    )
    demo.check(
        all(any(f"/annotations/{j}" in e["body"] for e in emails) for j in jobs),
        "each links to its job's page on the web app",
    )


def check_archive(demo: Demo, jobs: dict[str, str], digests: dict[str, str]) -> None:
    free = [j for j, u in jobs.items() if u != "u-bob"]
    premium = [j for j, u in jobs.items() if u == "u-bob"]
    demo.say(
        f"archive: free users' results move to the archive ({demo.config.gas.archive_backend}"
        f" back end) {GRACE_SECONDS} s after completion; a forged message is refused"
    )
    forged = {"job_id": premium[0], "user_id": "u-carol"}
    demo.aws.client("sqs").send_message(
        QueueUrl=demo.aws.queue_url(demo.config.archive.queue), MessageBody=json.dumps(forged)
    )
    print(f"   sent a forged archive message: {json.dumps(forged)}")
    demo.check(
        all(demo.result_digest(j) for j in free) and not any(map(demo.archived, free)),
        "right after completion, free users' results are still in S3 (grace period)",
    )
    done = wait_until(lambda: all(map(demo.archived, free)), GRACE_SECONDS + 60)
    demo.check(
        done and not any(demo.result_digest(j) for j in free),
        f"all {len(free)} free results archived, their S3 copies deleted",
    )
    demo.check(demo.archive_count() == len(free), f"the archive holds {demo.archive_count()}")
    demo.check(
        all(demo.result_digest(j) == digests[j] and not demo.archived(j) for j in premium),
        f"u-bob's {len(premium)} results untouched: premium users keep theirs",
    )
    reasons = demo.dead_letter_reasons(demo.config.archive.queue)
    print(f"   dead-letter queue {demo.config.archive.queue}-dlq: {reasons}")
    demo.check(
        reasons == [f"user u-carol does not own job {premium[0]}"],
        "the forged message is in the dead-letter queue, with its reason",
    )


def check_restore(demo: Demo, jobs: dict[str, str], digests: dict[str, str]) -> None:
    alice = [j for j, u in jobs.items() if u == "u-alice"]
    carol = [j for j, u in jobs.items() if u == "u-carol"]
    demo.say("u-alice upgrades to premium; the web app asks restore for her results")
    demo.aws.client("dynamodb").update_item(
        TableName=demo.config.gas.users_table,
        Key={"user_id": {"S": "u-alice"}},
        UpdateExpression="SET #r = :r",
        ExpressionAttributeNames={"#r": "role"},
        ExpressionAttributeValues={":r": {"S": "premium_user"}},
    )
    demo.aws.client("sqs").send_message(
        QueueUrl=demo.aws.queue_url(demo.config.restore.queue),
        MessageBody=json.dumps({"user_id": "u-alice"}),
    )
    started = wait_until(
        lambda: all(RESTORE_TIER in demo.item(j) or not demo.archived(j) for j in alice), 30
    )
    tiers = sorted({demo.item(j).get(RESTORE_TIER, "done") for j in alice})
    demo.check(started, f"restore started a retrieval per archived result ({', '.join(tiers)})")
    back = wait_until(lambda: all(THAW_JOB_ID in demo.item(j) for j in alice), 60)
    demo.check(
        back and all(demo.result_digest(j) == digests[j] for j in alice),
        f"thaw put u-alice's {len(alice)} results back, byte-identical (SHA-256)",
    )
    demo.check(
        all(demo.archived(j) for j in carol) and demo.archive_count() == len(carol),
        f"only u-carol's {len(carol)} results are still archived",
    )


def run_command(module: str) -> subprocess.CompletedProcess:
    """`python -m <module>` against the stack, as an operator types it; its output shown."""
    print(f"   $ python -m {module}")
    run = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**os.environ, **WORKER_SETTINGS},
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in (run.stdout + run.stderr).strip().splitlines():
        print(f"   {line}")
    return run


def check_reconcile(demo: Demo) -> None:
    """A reconcile pass over what the pipeline left: nothing to repair; then the status
    screen an operator would look at."""
    demo.say("reconcile looks for anything the pipeline missed; util.status shows the state")
    run = run_command("util.reconcile")
    demo.check(
        run.returncode == 0 and "findings: none" in run.stdout,
        f"reconcile finds nothing to repair (exit {run.returncode})",
    )
    demo.check(
        run_command("util.status").returncode == 0,
        "util.status shows queues, dead letters, retrievals and the last reconcile",
    )


def check_doctor(demo: Demo) -> None:
    demo.say("the doctor looks at the stack as at an AWS account")
    demo.check(
        run_command("util.doctor").returncode == 0,
        "util.doctor: every resource the utilities need is right",
    )


def print_table(demo: Demo) -> None:
    print("\n== summary")
    width = max(len(s.text) for s in demo.steps)
    print(f"   {'step':<{width}}  ok")
    for step in demo.steps:
        print(f"   {step.text:<{width}}  {'✔' if step.ok else '✘'}")
    print("\n== ann_load's summary")
    for line in demo.ann_load_summary.splitlines():
        print(f"   {line}")
    print(
        f"\n   HTML report: {(OUT / 'ann_load' / 'report.html').relative_to(ROOT)}; "
        f"logs: {OUT.relative_to(ROOT)}/*.log"
    )


def run() -> int:
    OUT.mkdir(exist_ok=True)
    backend = os.environ.get("GAS_GAS_ARCHIVE_BACKEND", "vault")
    print(f"GAS on a laptop: the whole pipeline on a local AWS (moto); archive back end: {backend}")
    started = time.monotonic()
    stack, exports = launch(
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **WORKER_SETTINGS}
    )
    os.environ.update(exports)
    config = load(None, utility_config_files())
    demo = Demo(config, Aws(config), exports["AWS_ENDPOINT_URL"])
    try:
        demo.say(f"local stack ready at {exports['AWS_ENDPOINT_URL']}")
        demo.start(
            "annotator", "-m", "localaws", "annotator", "--concurrency", "4", "--seconds", "0.5"
        )
        for utility in UTILITIES:
            demo.start(utility, f"util/{utility}/{utility}.py")

        jobs = submit_jobs(demo)
        digests = {j: demo.result_digest(j) or "" for j in jobs}
        demo.check(
            all(digests.values()) and all(demo.item(j).get(JOB_STATUS) == COMPLETED for j in jobs),
            f"{len(jobs)} results and logs in the results bucket",
        )
        check_emails(demo, jobs)
        check_archive(demo, jobs, digests)
        check_restore(demo, jobs, digests)
        demo.say("every process stopped as systemd stops it")
        demo.stop_all()
        check_reconcile(demo)
        check_doctor(demo)
    finally:
        for process in demo.processes.values():
            if process.poll() is None:
                process.kill()
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=10)
    print_table(demo)
    failed = sum(not s.ok for s in demo.steps)
    print(
        f"\n{'all steps passed' if not failed else f'{failed} step(s) FAILED'} "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run())
