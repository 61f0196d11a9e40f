"""``make demo``: the archive utility end to end on the local stack, step by step.

Starts the local stack, writes three completed jobs as the annotator leaves them, sends
their archive messages plus a forged one, runs ``util/archive/archive.py`` as its own
process, and checks every outcome against the stack. Exits non-zero if any check fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import ClientError

from util.helpers import ARCHIVE_ID, COMPLETED, Annotations, Aws
from util.local.stack import launch, utility_config_files
from util.util_config import UTILITY_DIR, Config, load

MIB = 1024 * 1024
OUT = UTILITY_DIR.parent / "demo-out"
GRACE_SECONDS = 5
# Small parts so even a demo-sized file shows a real multipart upload.
WORKER_SETTINGS = {"GAS_ARCHIVE_GRACE_SECONDS": str(GRACE_SECONDS),
                   "GAS_ARCHIVE_PART_SIZE_MIB": "1", "GAS_WORKER_WAIT_SECONDS": "1"}


class Demo:
    def __init__(self, config: Config, aws: Aws):
        self.config = config
        self.aws = aws
        self.jobs = Annotations(aws, config.gas.annotations_table)
        self.failures = 0
        self.originals: dict[str, bytes] = {}

    def step(self, text: str) -> None:
        print(f"\n== {text}", flush=True)

    def check(self, ok: bool, text: str) -> None:
        print(f"   {'✔' if ok else '✘'} {text}", flush=True)
        self.failures += not ok

    def add_job(self, job_id: str, user_id: str, size: int, completed_ago: float) -> None:
        """A COMPLETED job with its result in S3, as the annotator leaves it."""
        key = f"demo/{user_id}/{job_id}~sample.vcf.annot"
        data = os.urandom(size)
        self.aws.client("s3").put_object(Bucket=self.config.gas.results_bucket, Key=key, Body=data)
        now = time.time()
        self.jobs.put({"job_id": job_id, "user_id": user_id, "job_status": COMPLETED,
                       "input_file_name": "sample.vcf", "submit_time": int(now - completed_ago - 30),
                       "complete_time": int(now - completed_ago),
                       "s3_results_bucket": self.config.gas.results_bucket,
                       "s3_key_result_file": key, "s3_key_log_file": key + ".log"})
        self.originals[job_id] = data
        print(f"   {job_id}: {user_id}, {size / MIB:.1f} MiB result, completed "
              f"{'just now' if completed_ago < 1 else f'{completed_ago:.0f} s ago'}")

    def send(self, body: dict[str, str]) -> None:
        self.aws.client("sqs").send_message(
            QueueUrl=self.aws.queue_url(self.config.archive.queue), MessageBody=json.dumps(body))
        print(f"   sent {json.dumps(body)}")

    def in_s3(self, job_id: str) -> bool:
        item = self.jobs.get(job_id)
        try:
            self.aws.client("s3").head_object(Bucket=item["s3_results_bucket"],
                                              Key=item["s3_key_result_file"])
        except ClientError:
            return False
        return True

    def archived(self, job_id: str) -> bool:
        return ARCHIVE_ID in (self.jobs.get(job_id) or {})

    def vault_copy(self, archive_id: str) -> bytes:
        glacier = self.aws.client("glacier")
        vault = self.config.gas.vault
        job_id = glacier.initiate_job(vaultName=vault, jobParameters={
            "Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited"})["jobId"]
        wait_until(lambda: glacier.describe_job(vaultName=vault, jobId=job_id)["Completed"], 30)
        return glacier.get_job_output(vaultName=vault, jobId=job_id)["body"].read()

    def dead_letters(self) -> list[dict]:
        url = self.aws.queue_url(f"{self.config.archive.queue}-dlq")
        return self.aws.client("sqs").receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
            WaitTimeSeconds=1).get("Messages", [])


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def run() -> int:
    OUT.mkdir(exist_ok=True)
    print("GAS archive demo: the archive utility against a local AWS (moto)")
    stack, exports = launch(env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    os.environ.update(exports)
    worker = None
    try:
        config = load(None, utility_config_files())
        demo = Demo(config, Aws(config))
        demo.step(f"local stack ready at {exports['AWS_ENDPOINT_URL']}")

        demo.step("three completed jobs, as the annotator leaves them")
        demo.add_job("job-alice", "u-alice", 3 * MIB + MIB // 2, completed_ago=3600)
        demo.add_job("job-bob", "u-bob", MIB // 4, completed_ago=3600)
        demo.add_job("job-carol", "u-carol", MIB // 2, completed_ago=0)

        demo.step("archive messages, as the annotator sends them for free users (and one forged)")
        demo.send({"job_id": "job-alice", "user_id": "u-alice"})
        demo.send({"job_id": "job-bob", "user_id": "u-bob"})
        demo.send({"job_id": "job-carol", "user_id": "u-carol"})
        demo.send({"job_id": "job-alice", "user_id": "u-carol"})

        log_path = OUT / "archive.log"
        demo.step(f"archive worker started: python util/archive/archive.py (log: {log_path})")
        worker = subprocess.Popen(
            [sys.executable, str(UTILITY_DIR / "archive" / "archive.py")],
            env={**os.environ, **WORKER_SETTINGS}, stderr=open(log_path, "w"),
        )

        demo.step(f"what happened (free users keep results {GRACE_SECONDS} s after completion)")
        ok = wait_until(lambda: demo.archived("job-alice"), 30)
        archive_id = (demo.jobs.get("job-alice") or {}).get(ARCHIVE_ID, "")
        demo.check(ok and not demo.in_s3("job-alice"),
                   f"job-alice archived (id {archive_id[:16]}…), its S3 result deleted")
        demo.check(ok and demo.vault_copy(archive_id) == demo.originals["job-alice"],
                   "job-alice's vault copy is byte-identical to the original (4 parts)")
        demo.check(not demo.archived("job-carol") and demo.in_s3("job-carol"),
                   "job-carol deferred: still inside its grace period")
        demo.check(wait_until(lambda: demo.archived("job-carol"), GRACE_SECONDS + 30)
                   and not demo.in_s3("job-carol"), "job-carol archived once the grace was over")
        demo.check(not demo.archived("job-bob") and demo.in_s3("job-bob"),
                   "job-bob untouched: u-bob is a premium user")
        dead = demo.dead_letters()
        reasons = [m["MessageAttributes"]["gas_reason"]["StringValue"] for m in dead]
        demo.check(reasons == ["user u-carol does not own job job-alice"],
                   f"forged message in the dead-letter queue, reason: {reasons}")

        demo.step("worker stopped as systemd would (SIGTERM)")
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        demo.check(code == 0, f"worker exited with {code}")
        print("\n   the worker's log, one line per message:")
        for line in log_path.read_text().splitlines():
            if "outcome=" in line:
                print(f"   | {line}")
        print(f"\n{'all steps passed' if not demo.failures else f'{demo.failures} step(s) FAILED'}")
        return 1 if demo.failures else 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(run())
