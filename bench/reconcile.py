"""One reconcile pass over 10,000 jobs in the local stack: its time and AWS calls by operation.

    python -m bench.reconcile [--items 10000] [--segments 4] [--findings 20]

Starts the local stack (``localaws.stack.launch``, archive back end s3: a vault would need
10,000 uploads to seed) and seeds a steady state as GAS leaves it: 70 % free users' jobs
archived (an archive object each, no S3 result), 30 % premium users' jobs with their result
in S3. The first ``--findings`` jobs keep their result in S3 (the free users' among them
had their archive message lost), and as many orphan archives are added, so that the pass
also confirms, and repairs, candidates. Then a dry run and a repairing pass run in this
process against the stack, each timed, with botocore's calls counted by operation.

The stack serves about 115 requests/s on a small machine (its CPU, not the client's), so the
time of a pass is bounded by it; the calls per operation are the figures that carry over to
AWS. Seeding takes a minute or two.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from localaws.stack import SAMPLE_USERS, launch, utility_config_files
from util.aws import Aws
from util.reconcile.reconcile import Reconciler
from util.schema import ARCHIVE_ID, COMPLETED, PREMIUM, RESULT_ETAG
from util.util_config import load

LONG_AGO = int(time.time()) - 100_000


def seed(aws: Aws, config: Any, items: int, findings: int) -> None:
    """The jobs, their results (premium) or archive objects (free), and the findings."""
    gas = config.gas
    premium = [u.user_id for u in SAMPLE_USERS if u.role == PREMIUM]
    free = [u.user_id for u in SAMPLE_USERS if u.role != PREMIUM]
    s3, dynamodb = aws.client("s3"), aws.client("dynamodb")
    serializer = TypeSerializer()

    def job(i: int) -> dict[str, Any]:
        user = premium[i % len(premium)] if i % 10 < 3 else free[i % len(free)]
        item = {
            "job_id": f"b{i:06d}",
            "user_id": user,
            "job_status": COMPLETED,
            "submit_time": LONG_AGO - 60,
            "complete_time": LONG_AGO,
            "s3_results_bucket": gas.results_bucket,
            "s3_key_result_file": f"gas/{user}/b{i:06d}~sample.annot.vcf",
        }
        if user in premium or i < findings:  # premium, or an archive message lost
            s3.put_object(Bucket=gas.results_bucket, Key=item["s3_key_result_file"], Body=b"result")
        else:
            key = f"{gas.archive_prefix}{item['job_id']}/0123456789abcdef"
            s3.put_object(
                Bucket=gas.archive_bucket, Key=key, Body=b"result", StorageClass="GLACIER"
            )
            item.update({ARCHIVE_ID: key, RESULT_ETAG: '"0123456789abcdef"'})
        return item

    def batch(start: int) -> None:
        jobs = [job(i) for i in range(start, min(start + 25, items))]
        dynamodb.batch_write_item(
            RequestItems={
                gas.annotations_table: [
                    {"PutRequest": {"Item": {k: serializer.serialize(v) for k, v in j.items()}}}
                    for j in jobs
                ]
            }
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(batch, range(0, items, 25)))
        list(
            pool.map(
                lambda i: s3.put_object(
                    Bucket=gas.archive_bucket, Key=f"{gas.archive_prefix}gone{i}/0a", Body=b"x"
                ),
                range(findings),
            )
        )


def timed_pass(config: Any, repair: bool) -> tuple[float, Counter, dict[str, int]]:
    calls: Counter = Counter()
    aws = Aws(config, connections=config.reconcile.scan_segments * 2)
    aws.session.events.register(
        "before-call.*.*",
        lambda model, **_: calls.update([f"{model.service_model.service_name}:{model.name}"]),
    )
    started = time.perf_counter()
    report = Reconciler(config, aws, repair).run()
    return time.perf_counter() - started, calls, report.counts()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--findings", type=int, default=20)
    args = parser.parse_args()

    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
    stack, exports = launch(env={**environment, "GAS_GAS_ARCHIVE_BACKEND": "s3"})
    os.environ.update(
        {
            **exports,
            "GAS_GAS_ARCHIVE_BACKEND": "s3",
            "GAS_RECONCILE_SCAN_SEGMENTS": str(args.segments),
            "GAS_RECONCILE_ORPHAN_AGE_SECONDS": "0",
        }
    )
    try:
        config = load(None, utility_config_files())
        started = time.perf_counter()
        seed(Aws(config, connections=32), config, args.items, args.findings)
        print(
            f"seeded {args.items} jobs and {args.findings} orphans in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        for repair in (False, True):
            seconds, calls, counts = timed_pass(config, repair)
            print(
                f"\n{'repair' if repair else 'dry run'}: {seconds:.1f} s, "
                f"{sum(calls.values())} AWS calls, {args.segments} Scan segments; "
                f"findings {counts}"
            )
            for operation, n in sorted(calls.items(), key=lambda c: -c[1]):
                print(f"  {n:6d}  {operation}")
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
