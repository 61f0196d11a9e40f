"""``python -m util.status``: the one screen an operator reads when paged.

    python -m util.status [--format text|json] [--reasons N] [option]...   # see --help

Per utility queue its depth and oldest message, its dead-letter queue's depth and latest
reasons (peeked, not consumed), the retrievals in progress, and the last reconcile pass's
report (docs/reconcile-and-metrics.md#status). Exit status: 0 shown; 1 AWS failed; 2 bad
configuration.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from util import cli
from util.aws import Aws, queue_name
from util.helpers import Annotations
from util.parsers import argument, int_range
from util.process import configure_logging
from util.reconcile.report import load_report
from util.retrieval import is_claim
from util.schema import JOB_ID, RESTORE_JOB_ID, RESTORE_TIER, RESTORE_TIME
from util.util_config import UTILITY_DIR, Config, ConfigError, load

UTILITIES = ("archive", "restore", "thaw", "notify")
DEAD_LETTER_SUFFIX = "-dlq"  # the local stack's convention; the queue's RedrivePolicy wins
MAX_REASONS = 10  # ReceiveMessage's MaxNumberOfMessages: 1 to 10


def queue_status(aws: Aws, queue: str, reasons: int) -> dict[str, Any]:
    sqs = aws.client("sqs")
    url = aws.queue_url(queue)
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "RedrivePolicy",
        ],
    )["Attributes"]
    status = {
        "queue": queue,
        "visible": int(attributes["ApproximateNumberOfMessages"]),
        "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        "delayed": int(attributes["ApproximateNumberOfMessagesDelayed"]),
        "oldest_seconds": oldest_age(aws, queue_name(queue)),
    }
    dead_letter = queue + DEAD_LETTER_SUFFIX
    if "RedrivePolicy" in attributes:
        dead_letter = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].rsplit(":", 1)[
            -1
        ]
    dlq_url = aws.queue_url(dead_letter)
    depth = sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    status["dead_letters"] = sum(map(int, depth.values()))
    status["latest_reasons"] = peek_reasons(aws, dlq_url, reasons) if status["dead_letters"] else []
    return status


def oldest_age(aws: Aws, name: str) -> float | None:
    """CloudWatch's latest ApproximateAgeOfOldestMessage (5-minute maximum), if it has one."""
    now = datetime.now(timezone.utc)
    points = aws.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SQS",
        MetricName="ApproximateAgeOfOldestMessage",
        Dimensions=[{"Name": "QueueName", "Value": name}],
        StartTime=now - timedelta(minutes=15),
        EndTime=now,
        Period=300,
        Statistics=["Maximum"],
    )["Datapoints"]
    if not points:
        return None
    return max(points, key=lambda p: p["Timestamp"])["Maximum"]


def peek_reasons(aws: Aws, url: str, count: int) -> list[dict[str, Any]]:
    """Up to `count` dead letters' reasons, newest first, left on the queue."""
    messages = (
        aws.client("sqs")
        .receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=MAX_REASONS,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["SentTimestamp"],
            MessageAttributeNames=["gas_reason", "gas_utility"],
        )
        .get("Messages", [])
    )
    peeked = [
        {
            "sent": int(m["Attributes"]["SentTimestamp"]) / 1000,
            "reason": m.get("MessageAttributes", {})
            .get("gas_reason", {})
            .get("StringValue", "(no reason recorded)"),
        }
        for m in messages
    ]
    return sorted(peeked, key=lambda p: -p["sent"])[:count]


def retrievals(aws: Aws, config: Config, now: float) -> list[dict[str, Any]]:
    """Retrievals recorded on the annotations items (not claims), oldest first."""
    items = Annotations(aws, config.gas.annotations_table).having(
        RESTORE_JOB_ID, (JOB_ID, RESTORE_TIER, RESTORE_TIME), config.reconcile.page_size
    )
    return sorted(
        (
            {
                "job_id": item[JOB_ID],
                "tier": item.get(RESTORE_TIER, ""),
                "age_seconds": round(now - item.get(RESTORE_TIME, now)),
            }
            for item in items
            if not is_claim(item[RESTORE_JOB_ID])
        ),
        key=lambda r: -r["age_seconds"],
    )


def gather(config: Config, aws: Aws, reasons: int) -> dict[str, Any]:
    now = time.time()
    return {
        "time": now,
        "queues": {u: queue_status(aws, getattr(config, u).queue, reasons) for u in UTILITIES},
        "retrievals": retrievals(aws, config, now),
        "reconcile": load_report(
            aws.client("s3"), config.gas.results_bucket, config.reconcile.report_key
        ),
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_text(status: dict[str, Any]) -> str:
    lines = [
        f"GAS status at {_when(status['time'])}",
        "",
        f"{'utility':8} {'visible':>7} {'in flight':>9} {'delayed':>7} {'oldest':>7} {'DLQ':>5}",
    ]
    for utility, q in status["queues"].items():
        lines.append(
            f"{utility:8} {q['visible']:7d} {q['in_flight']:9d} {q['delayed']:7d} "
            f"{_age(q['oldest_seconds']):>7} {q['dead_letters']:5d}"
        )
        for peeked in q["latest_reasons"]:
            lines.append(f"         dead-lettered {_when(peeked['sent'])}: {peeked['reason']}")
        if q["dead_letters"] and not q["latest_reasons"]:
            lines.append("         (reasons hidden: the dead letters are being read elsewhere)")
    lines.append("(oldest: CloudWatch ApproximateAgeOfOldestMessage; - when it has no datapoint)")
    found = status["retrievals"]
    lines += ["", f"retrievals in progress: {len(found)}"]
    lines += [f"  {r['job_id']}  {r['tier'] or '?':9} {_age(r['age_seconds'])}" for r in found[:10]]
    if len(found) > 10:
        lines.append(f"  ... and {len(found) - 10} more")
    report = status["reconcile"]
    lines.append("")
    if report is None:
        lines.append("reconcile: no pass has left a report")
    else:
        mode = "repair" if report["repair"] else "dry run"
        counts = (
            ", ".join(f"{n} {k}" for k, n in sorted(report["counts"].items())) or "nothing found"
        )
        lines.append(f"last reconcile ({mode}) {_when(report['started'])}: {counts}")
        lines += [
            f"  {f['kind']:22} job={f['job_id']}  {f['detail']}  -> {f['action']}"
            for f in report["findings"][:10]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "status", "GAS status, one screen", results="the same figures, one document"
    )
    parser.add_argument(
        "--reasons",
        type=argument(int_range(1, MAX_REASONS)),
        default=5,
        metavar="N",
        help=f"latest dead-letter reasons shown per queue, 1-{MAX_REASONS}: one "
        "ReceiveMessage peeks at most that many (default 5)",
    )
    args = parser.parse_args(argv)
    try:
        # Every utility's settings: the queues are named in each utility's own file.
        config = load(None, [*sorted(UTILITY_DIR.glob("*/*_config.ini")), *args.config])
    except ConfigError as exc:
        print(f"status: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(*cli.log_settings(args, config))
    try:
        status = gather(config, Aws(config), args.reasons)
    except (BotoCoreError, ClientError) as exc:
        print(f"status: AWS failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=1) if args.format == "json" else render_text(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
