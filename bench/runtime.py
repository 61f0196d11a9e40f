"""The worker runtime's figures on the local stack, behind a proxy as slow as a distant region.

    python -m bench.runtime [--big-mib 1024] [--transfer-mib 2048] [--jobs 100]
                            [--latency-ms 20] [--rate-mb-s 20] [--backend vault|s3]
                            [--only SECTION ...]

Starts the local stack and the faults proxy (localaws/faults.py) in front of it, adding
``--latency-ms`` to every request and capping each connection at ``--rate-mb-s``; every
worker runs as its own process through the proxy, while the bench sets up through the
stack directly. Sections:

- ``head-of-line``: one ``--big-mib`` result and ``--jobs`` 100 KB ones on one archive
  worker (concurrency 4); when each finishes, from the worker's log as it is written;
- ``transfer``: a ``--transfer-mib`` result archived, restored and thawed with 1 and with 8
  transfer threads: rate, peak RSS (VmHWM) of each worker, the CPU seconds of the worker, the
  stack and the proxy meanwhile (all share the machine's cores), and the bytes back identical;
- ``calls``: AWS calls by operation (the proxy's counts) per archived job, per result a
  restore starts and per thaw, over ``--jobs`` 100 KB results, and each worker's CPU per job;
- ``ann_load``: ann_load's own CPU per submitted job at 5 and 50 jobs/s, its input uploaded
  per job, shared (``--shared-input``), and shared with 200 ms batches (``--batch-ms``). It
  goes through a second faults proxy, with no faults and no delay: the local stack closes
  every connection after its answer, the proxy keeps ann_load's open as a region does, so
  that a new connection per request does not count in ann_load's CPU. No annotator runs, so
  no result comes back: receiving costs only its idle polls here (``bench.ann_load_rate``
  measures it with every result).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.worker_rss import Pattern, peak_rss_mib
from localaws import faults
from localaws.stack import launch, utility_config_files
from util.aws import Aws
from util.helpers import Annotations
from util.schema import ARCHIVE_ID, COMPLETED
from util.util_config import UTILITY_DIR, load

MIB = 1024 * 1024
SMALL = 100_000
SECTIONS = ("head-of-line", "transfer", "calls", "ann_load")
# Each section's own user: a restore brings back every archived result of its user.
USERS = {"head-of-line": "u-carol", "transfer": "u-alice", "calls": "u-bob"}
DONE = re.compile(r"archive message=\S+ job=(\S+) receives=\d+ outcome=done")


class Bench:
    """The stack, the proxy in front of it, and clients that bypass the proxy."""

    def __init__(self, latency_ms: float, rate_mb_s: float, backend: str):
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
        base["GAS_GAS_ARCHIVE_BACKEND"] = backend
        self.stack, exports = launch(env={**base, "GAS_LOCAL_EXPEDITED_SECONDS": "0"})
        os.environ.update(exports)
        self.proxy, self.endpoint = faults.launch(
            exports["AWS_ENDPOINT_URL"], latency_ms=latency_ms, rate_mb_s=rate_mb_s
        )
        self.worker_env = {
            **base,
            **exports,
            "AWS_ENDPOINT_URL": self.endpoint,
            "GAS_WORKER_WAIT_SECONDS": "1",
            "GAS_ARCHIVE_GRACE_SECONDS": "0",
        }
        self.config = load(None, utility_config_files())
        self.aws = Aws(self.config)
        self.jobs = Annotations(self.aws, self.config.gas.annotations_table)
        self.s3, self.sqs = self.aws.client("s3"), self.aws.client("sqs")

    def close(self) -> None:
        for process in (self.proxy, self.stack):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    # -- set-up, straight to the stack

    def put_result(self, user: str, job_id: str, size: int) -> Pattern:
        source = Pattern(size)
        key = f"bench/{user}/{job_id}~result.vcf.annot"
        self.s3.upload_fileobj(source, self.config.gas.results_bucket, key)
        now = int(time.time())
        self.jobs.put(
            {
                "job_id": job_id,
                "user_id": user,
                "job_status": COMPLETED,
                "submit_time": now - 7200,
                "complete_time": now - 3600,
                "s3_results_bucket": self.config.gas.results_bucket,
                "s3_key_result_file": key,
            }
        )
        return source

    def send(self, utility: str, *bodies: dict) -> None:
        url = self.aws.queue_url(getattr(self.config, utility).queue)
        for start in range(0, len(bodies), 10):
            self.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": json.dumps(b)}
                    for i, b in enumerate(bodies[start : start + 10])
                ],
            )

    def archive_messages(self, user: str, *job_ids: str) -> None:
        self.send("archive", *({"job_id": j, "user_id": user} for j in job_ids))

    def set_role(self, user: str, role: str) -> None:
        self.aws.client("dynamodb").update_item(
            TableName=self.config.gas.users_table,
            Key={"user_id": {"S": user}},
            UpdateExpression="SET #r = :r",
            ExpressionAttributeNames={"#r": "role"},
            ExpressionAttributeValues={":r": {"S": role}},
        )

    def waiting(self, utility: str) -> int:
        url = self.aws.queue_url(getattr(self.config, utility).queue)
        return int(
            self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
        )

    def empty(self, queue: str) -> None:
        """Take every message off a queue nothing consumes (the local stack's SQS slows down
        as a queue grows; PurgeQueue is allowed once a minute)."""
        url = self.aws.queue_url(queue)
        while batch := self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
            "Messages"
        ):
            self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
                ],
            )

    def result_sha256(self, job_id: str) -> bytes:
        digest = hashlib.sha256()
        job = self.jobs.get(job_id) or {}
        body = self.s3.get_object(Bucket=job["s3_results_bucket"], Key=job["s3_key_result_file"])[
            "Body"
        ]
        for chunk in iter(lambda: body.read(MIB), b""):
            digest.update(chunk)
        return digest.digest()

    def calls(self) -> Counter[str]:
        """Requests the proxy has seen, by service and operation."""
        counted: Counter[str] = Counter()
        for service, operations in faults.counts(self.endpoint)["counts"].items():
            for operation, by_fault in operations.items():
                counted[f"{service} {operation}"] += sum(by_fault.values())
        return counted

    # -- workers, through the proxy

    def start(self, utility: str, *args: str, **settings: str) -> subprocess.Popen:
        env = {**self.worker_env, **{f"GAS_{k.upper()}": v for k, v in settings.items()}}
        return subprocess.Popen(
            [sys.executable, str(UTILITY_DIR / utility / f"{utility}.py"), *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )

    def once(self, utility: str, **settings: str) -> dict[str, float]:
        """One ``--once`` run: seconds, peak RSS (MiB) and CPU seconds of the worker, and
        the CPU seconds the stack and the proxy spent meanwhile."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        stack_before, proxy_before = cpu_seconds(self.stack), cpu_seconds(self.proxy)
        started = time.monotonic()
        process = self.start(utility, "--once", **settings)
        log: list[str] = []
        assert process.stderr is not None
        stderr = process.stderr
        reader = threading.Thread(target=lambda: log.extend(stderr), daemon=True)
        reader.start()
        peak = peak_rss_mib(process)
        code = process.wait()
        seconds = time.monotonic() - started
        reader.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code != 0:
            raise RuntimeError(f"{utility} exited {code}:\n{''.join(log[-20:])}")
        return {
            "seconds": seconds,
            "rss": peak,
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "stack_cpu": cpu_seconds(self.stack) - stack_before,
            "proxy_cpu": cpu_seconds(self.proxy) - proxy_before,
        }


def cpu_seconds(process: subprocess.Popen) -> float:
    """User and system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def head_of_line(bench: Bench, big_mib: int, jobs: int) -> None:
    print(
        f"\n== head-of-line: one {big_mib} MiB result and {jobs} of 100 KB, one archive "
        f"worker, concurrency 4",
        flush=True,
    )
    user = USERS["head-of-line"]
    bench.set_role(user, "free_user")
    bench.put_result(user, "hol-big", big_mib * MIB)
    small = [f"hol-{i:03}" for i in range(jobs)]
    for job_id in small:
        bench.put_result(user, job_id, SMALL)
    bench.archive_messages(user, "hol-big", *small)
    started = time.monotonic()
    worker = bench.start("archive", worker_concurrency="4")
    finished: dict[str, float] = {}

    def follow() -> None:
        assert worker.stderr is not None
        for line in worker.stderr:
            match = DONE.search(line)
            if match:
                finished[match.group(1)] = time.monotonic() - started

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    deadline = time.monotonic() + 3600
    while len(finished) < jobs + 1 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=120)
    big = finished.get("hol-big")
    times = sorted(finished[j] for j in small if j in finished)
    print(
        f"  small results done: {len(times)}/{jobs}; first at {times[0]:.1f} s, half by "
        f"{times[len(times) // 2]:.1f} s, last at {times[-1]:.1f} s"
        if times
        else "  no small result done"
    )
    print(f"  the {big_mib} MiB result done at " + (f"{big:.1f} s" if big else "- (not done)"))
    if big and times:
        print(
            f"  small ones finished while the big one was uploading: "
            f"{sum(t < big for t in times)}/{jobs}"
        )


def transfer(bench: Bench, size_mib: int) -> None:
    print(
        f"\n== transfer: {size_mib} MiB archived (16 MiB parts) and thawed ([thaw] "
        f"part_size_mib 8: 16 MiB parts, the original's being 8 MiB); CPU seconds of the "
        f"worker, the stack and the proxy on {os.cpu_count()} cores",
        flush=True,
    )
    rates: dict[tuple[str, int], float] = {}
    user = USERS["transfer"]
    for threads in (1, 8):
        job_id = f"transfer-{threads}"
        bench.set_role(user, "free_user")
        source = bench.put_result(user, job_id, size_mib * MIB)
        bench.archive_messages(user, job_id)
        settings = {"gas_transfer_threads": str(threads), "thaw_part_size_mib": "8"}
        archived = bench.once("archive", **settings)
        if ARCHIVE_ID not in (bench.jobs.get(job_id) or {}):
            raise RuntimeError(f"{job_id} was not archived")
        bench.set_role(user, "premium_user")
        bench.send("restore", {"user_id": user})
        bench.once("restore")
        deadline = time.monotonic() + 120
        while bench.waiting("thaw") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        thawed = bench.once("thaw", **settings)
        identical = bench.result_sha256(job_id) == source.sha256.digest()
        for utility, run in (("archive", archived), ("thaw", thawed)):
            rates[(utility, threads)] = size_mib / run["seconds"]
            print(
                f"  {threads} thread(s) {utility:8} {run['seconds']:6.1f} s "
                f"{rates[(utility, threads)]:6.1f} MiB/s  peak RSS {run['rss']:5.0f} MiB  "
                f"CPU {run['cpu']:5.1f} / {run['stack_cpu']:5.1f} / {run['proxy_cpu']:5.1f} s",
                flush=True,
            )
        print(f"  back in S3 byte-identical: {identical}")
    for utility in ("archive", "thaw"):
        print(
            f"  {utility}: 8 threads at {rates[(utility, 8)] / rates[(utility, 1)]:.1f}x "
            f"the one-thread rate"
        )


def per_job(label: str, calls: Counter[str], count: int, cpu: float | None = None) -> None:
    total = sum(calls.values())
    detail = ", ".join(f"{op} {n / count:.2f}" for op, n in sorted(calls.items()) if n)
    cpu_text = f"; worker CPU {1000 * cpu / count:.1f} ms per job" if cpu is not None else ""
    print(f"  {label}: {total / count:.2f} AWS calls{cpu_text}\n    {detail}", flush=True)


def calls(bench: Bench, jobs: int) -> None:
    print(f"\n== calls: {jobs} results of 100 KB archived, restored and thawed", flush=True)
    user = USERS["calls"]
    bench.set_role(user, "free_user")
    job_ids = [f"calls-{i:03}" for i in range(jobs)]
    for job_id in job_ids:
        bench.put_result(user, job_id, SMALL)
    bench.archive_messages(user, *job_ids)
    before = bench.calls()
    archived = bench.once("archive")
    per_job("per archived job", bench.calls() - before, jobs, archived["cpu"])

    bench.set_role(user, "premium_user")
    bench.send("restore", {"user_id": user})
    before = bench.calls()
    restored = bench.once("restore")
    per_job("per result restored", bench.calls() - before, jobs, restored["cpu"])

    deadline = time.monotonic() + 120
    while bench.waiting("thaw") < jobs and time.monotonic() < deadline:
        time.sleep(0.2)
    before = bench.calls()
    thawed = bench.once("thaw")
    per_job("per thaw", bench.calls() - before, jobs, thawed["cpu"])


def ann_load(bench: Bench) -> None:
    print(
        "\n== ann_load: its own CPU per submitted job (from its summary: sending, polling for "
        "results, sampling; start-up not included; no annotator, so no result to receive), "
        "through a proxy that keeps its connections open",
        flush=True,
    )
    proxy, endpoint = faults.launch(os.environ["AWS_ENDPOINT_URL"])
    try:
        ann_load_runs(bench, endpoint)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=60)


def ann_load_runs(bench: Bench, endpoint: str) -> None:
    variants: list[tuple[str, list[str]]] = [
        ("input per job", []),
        ("input shared", ["--shared-input"]),
        ("input shared, 200 ms batches", ["--shared-input", "--batch-ms", "200"]),
    ]
    for label, options in variants:
        for rate, duration in ((5, 20), (50, 10)):
            bench.empty(bench.config.gas.job_requests_queue)
            out = Path(tempfile.mkdtemp(prefix="bench-ann_load-"))
            subprocess.run(
                [
                    sys.executable,
                    str(UTILITY_DIR / "ann_load.py"),
                    "--rate",
                    str(rate),
                    "--duration",
                    str(duration),
                    "--drain",
                    "0",
                    "--out",
                    str(out),
                    *options,
                ],
                env={**bench.worker_env, "AWS_ENDPOINT_URL": endpoint},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            summary = json.loads((out / "summary.json").read_text())
            print(
                f"  {rate:3} jobs/s, {label}: {summary['jobs']['submitted']} jobs, "
                f"{summary['cpu_ms_per_job']:.1f} ms CPU per job, "
                f"{summary['aws_requests']['per_job']:.2f} AWS requests per job, send lag p99 "
                f"{summary['send_lag_ms']['p99']:.0f} ms",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--transfer-mib", type=int, default=2048)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--rate-mb-s", type=float, default=20)
    parser.add_argument("--backend", choices=("vault", "s3"), default="vault")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    print(
        f"local stack behind a proxy: +{args.latency_ms:g} ms per request, "
        f"{args.rate_mb_s:g} MB/s per connection; archive back end {args.backend}"
    )
    bench = Bench(args.latency_ms, args.rate_mb_s, args.backend)
    sections: dict[str, Any] = {
        "head-of-line": lambda: head_of_line(bench, args.big_mib, args.jobs),
        "transfer": lambda: transfer(bench, args.transfer_mib),
        "calls": lambda: calls(bench, args.jobs),
        "ann_load": lambda: ann_load(bench),
    }
    try:
        for name in args.only:
            sections[name]()
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
