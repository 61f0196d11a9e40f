"""Peak RSS of the archive worker archiving one large result, next to the file's size.

    python -m bench.archive_rss [--size-mib 512] [--part-size-mib 16]

Starts the local stack, puts a result of the given size (streamed, never whole in memory),
runs ``util/archive/archive.py --once`` as its own process and reads that process's own
peak RSS, so neither the moto server's memory nor this script's is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from util.helpers import ARCHIVE_ID, COMPLETED, Annotations, Aws
from util.local.stack import launch, utility_config_files
from util.util_config import UTILITY_DIR, load

MIB = 1024 * 1024


class Pattern:
    """A readable file-like object of `size` pseudo-random bytes, made as it is read."""

    def __init__(self, size: int):
        self.size, self.position = size, 0
        self.block = os.urandom(MIB)

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.position if n < 0 else min(n, self.size - self.position)
        start = self.position % MIB
        chunk = (self.block[start:] + self.block * (n // MIB + 1))[:n]
        self.position += n
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--part-size-mib", type=int, default=16)
    args = parser.parse_args()

    stack, exports = launch(env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    os.environ.update(exports)
    try:
        config = load(None, utility_config_files())
        aws = Aws(config)
        size = args.size_mib * MIB
        key = "bench/u-alice/bench~big.vcf.annot"
        aws.client("s3").upload_fileobj(Pattern(size), config.gas.results_bucket, key)
        now = int(time.time())
        jobs = Annotations(aws, config.gas.annotations_table)
        jobs.put({"job_id": "bench", "user_id": "u-alice", "job_status": COMPLETED,
                  "submit_time": now - 7200, "complete_time": now - 3600,
                  "s3_results_bucket": config.gas.results_bucket, "s3_key_result_file": key})
        aws.client("sqs").send_message(QueueUrl=aws.queue_url(config.archive.queue),
                                       MessageBody=json.dumps({"job_id": "bench",
                                                               "user_id": "u-alice"}))
        started = time.monotonic()
        worker = subprocess.Popen(
            [sys.executable, str(UTILITY_DIR / "archive" / "archive.py"), "--once"],
            env={**os.environ, "GAS_WORKER_WAIT_SECONDS": "1",
                 "GAS_ARCHIVE_PART_SIZE_MIB": str(args.part_size_mib)},
        )
        peak = peak_rss_mib(worker)
        elapsed = time.monotonic() - started
        archived = ARCHIVE_ID in (jobs.get("bench") or {})
        print(f"archive of a {args.size_mib} MiB result, {args.part_size_mib} MiB parts: "
              f"exit {worker.returncode}, archived={archived}, {elapsed:.1f} s, "
              f"{size / MIB / elapsed:.1f} MiB/s, peak RSS {peak:.0f} MiB")
        return 0 if worker.returncode == 0 and archived else 1
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
