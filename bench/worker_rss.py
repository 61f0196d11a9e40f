"""Peak RSS of the archive and thaw workers moving one large result, next to its size.

    python -m bench.worker_rss [--size-mib 512] [--part-size-mib 16]

Starts the local stack, puts a result of the given size (made as it is uploaded, never
whole in memory), then runs each worker as its own process with ``--once``: archive moves
the result to the vault, restore starts its retrieval, thaw brings it back. Each worker's
own peak RSS (VmHWM) is printed, and the result must come back with the same SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from localaws.stack import launch, utility_config_files
from util.aws import Aws
from util.helpers import Annotations
from util.schema import ARCHIVE_ID, COMPLETED
from util.util_config import UTILITY_DIR, load

MIB = 1024 * 1024


class Pattern:
    """A readable file-like object of `size` pseudo-random bytes, made as it is read."""

    def __init__(self, size: int):
        self.size, self.position = size, 0
        self.block = os.urandom(MIB)
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.position if n < 0 else min(n, self.size - self.position)
        start = self.position % MIB
        chunk = (self.block[start:] + self.block * (n // MIB + 1))[:n]
        self.position += n
        self.sha256.update(chunk)
        return chunk


def peak_rss_mib(process: subprocess.Popen) -> float:
    """The process's own peak RSS (VmHWM), read until it exits.

    Not `wait4`'s ru_maxrss: Linux carries the parent's RSS at fork into the child's
    maximum across exec, so a large parent would be counted as the worker's.
    """
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:  # exited between poll() and the read
            break
        time.sleep(0.05)
    return peak / 1024


def run(utility: str, settings: dict[str, str]) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS in MiB) of one `--once` run of a utility."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(UTILITY_DIR / utility / f"{utility}.py"), "--once"],
        env={**os.environ, "GAS_WORKER_WAIT_SECONDS": "1", **settings},
        stderr=subprocess.DEVNULL,
    )
    peak = peak_rss_mib(process)
    return process.wait(), time.monotonic() - started, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--part-size-mib", type=int, default=16)
    args = parser.parse_args()
    size = args.size_mib * MIB
    parts = {
        "GAS_ARCHIVE_PART_SIZE_MIB": str(args.part_size_mib),
        "GAS_THAW_PART_SIZE_MIB": str(max(8, args.part_size_mib)),
    }

    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
    stack, exports = launch(env={**environment, "GAS_LOCAL_EXPEDITED_SECONDS": "0"})
    os.environ.update(exports)
    try:
        config = load(None, utility_config_files())
        aws = Aws(config)
        sqs, jobs = aws.client("sqs"), Annotations(aws, config.gas.annotations_table)
        key = "bench/u-alice/bench~big.vcf.annot"
        source = Pattern(size)
        aws.client("s3").upload_fileobj(source, config.gas.results_bucket, key)
        now = int(time.time())
        jobs.put(
            {
                "job_id": "bench",
                "user_id": "u-alice",
                "job_status": COMPLETED,
                "submit_time": now - 7200,
                "complete_time": now - 3600,
                "s3_results_bucket": config.gas.results_bucket,
                "s3_key_result_file": key,
            }
        )

        print(f"{args.size_mib} MiB result, {args.part_size_mib} MiB parts")
        sqs.send_message(
            QueueUrl=aws.queue_url(config.archive.queue),
            MessageBody=json.dumps({"job_id": "bench", "user_id": "u-alice"}),
        )
        report("archive", *run("archive", parts), size)
        archived = ARCHIVE_ID in (jobs.get("bench") or {})

        aws.client("dynamodb").update_item(
            TableName=config.gas.users_table,
            Key={"user_id": {"S": "u-alice"}},
            UpdateExpression="SET #r = :r",
            ExpressionAttributeNames={"#r": "role"},
            ExpressionAttributeValues={":r": {"S": "premium_user"}},
        )
        sqs.send_message(
            QueueUrl=aws.queue_url(config.restore.queue),
            MessageBody=json.dumps({"user_id": "u-alice"}),
        )
        run("restore", {})
        report("thaw", *run("thaw", parts), size)

        thawed = hashlib.sha256()
        body = aws.client("s3").get_object(Bucket=config.gas.results_bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(MIB), b""):
            thawed.update(chunk)
        identical = thawed.digest() == source.sha256.digest()
        print(f"archived: {archived}, back in S3 byte-identical: {identical}")
        return 0 if archived and identical else 1
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=30)


def report(utility: str, code: int, seconds: float, peak: float, size: int) -> None:
    print(
        f"  {utility:8} exit {code}  {seconds:6.1f} s  {size / MIB / seconds:6.1f} MiB/s  "
        f"peak RSS {peak:5.0f} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
