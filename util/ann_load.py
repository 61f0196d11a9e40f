"""ann_load: load-test the annotator fleet by submitting jobs exactly as the web app does.

    python util/ann_load.py --rate R (--duration S | --jobs N) [option]...   # see --help
    python util/ann_load.py --cleanup [--config FILE]...   # remove every synthetic job
    python -m util.ann_load ...                            # the same

This module is the command: its options, one run (`load_test`: send each job at its due time,
drain, report, optionally clean up) and the summary it prints. The schedule, the open loop and
the run's figures are in util/ann_load_schedule.py, the AWS side in util/ann_load_aws.py,
cleanup in util/ann_load_cleanup.py, the HTML report in util/ann_load_report.py. Options,
outputs, exit codes and the workload model: docs/ann_load.md.
"""

from __future__ import annotations

import argparse
import math
import secrets
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python util/ann_load.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.exceptions import BotoCoreError, ClientError

from util import cli
from util.ann_load_aws import (
    TEMP_QUEUE_PREFIX,
    Requests,
    ResultsQueue,
    Sampler,
    Submitter,
    process_aws,
)
from util.ann_load_cleanup import CLEANUP_THREADS, CleanupError, clean_only, cleanup, say_removed
from util.ann_load_schedule import (
    BATCH_MAX,
    SAMPLE_EVERY_SECONDS,
    SYNTHETIC_JOB_PREFIX,
    OpenLoop,
    intended_times,
    make_outputs,
    plan,
    schedule_span,
    summarize,
    write_outputs,
)
from util.aws import Aws
from util.helpers import Users
from util.parsers import argument, float_range, int_range
from util.process import configure_logging
from util.util_config import UTILITY_DIR, Config, ConfigError, load

CONFIG_FILE = UTILITY_DIR / "ann_load_config.ini"
SAMPLE_INPUT = UTILITY_DIR / "ann_load_data" / "sample.vcf"
# Senders per job/s of target rate: enough threads for submissions taking up to 500 ms.
SEND_HEADROOM_SECONDS = 0.5
MIN_SENDERS = 8
# Bounds of the options: what one ann_load can send (about 0.5 ms of CPU a job with
# --shared-input --batch-ms, docs/runtime.md), and records it can hold (about 1.2 KB a job).
MAX_RATE = 1000  # jobs/s
MAX_JOBS = 1_000_000
MAX_SENDERS = 1000
MAX_SECONDS = 86_400  # a day: any time option
RESULTS_PER_RECEIVER = 100  # job results per second one receiving thread keeps up with
EXIT_INCOMPLETE = 3  # the run ended, but some jobs were not sent, failed or never completed
EXIT_INTERRUPTED = 130


def _stop_on_signals(loop: OpenLoop) -> None:
    """First SIGINT/SIGTERM: stop sending, skip the drain, report. Second: leave at once
    (the temporary queue is still removed on the way out)."""

    def handler(signum: int, _frame: Any) -> None:
        if loop.stop.is_set():
            raise KeyboardInterrupt
        loop.halt()
        print(
            f"\nann_load: {signal.Signals(signum).name}: stopping (again to leave at once)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def load_test(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    """One run: print what is about to be loaded, send, drain, report, optionally clean up."""
    requests = Requests(aws)  # before the first client is made
    users = args.user or list(config.ann_load.users)
    known = Users(aws, config.gas.users_table)
    unknown = [user for user in users if known.get(user) is None]
    if unknown:
        print(
            f"ann_load: unknown user(s) {', '.join(unknown)} in table {config.gas.users_table}",
            file=sys.stderr,
        )
        return 2
    run_id = new_run_id()
    out = args.out or Path("ann_load-out") / run_id
    try:
        make_outputs(out)
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"ann_load: --out {out}: cannot write there: {reason}", file=sys.stderr)
        return 2
    times = intended_times(args.rate, args.ramp, args.duration, args.jobs)
    span = schedule_span(times, args.rate, args.duration)
    late_ms = config.ann_load.late_ms if args.late_ms is None else args.late_ms
    drain = config.ann_load.drain_seconds if args.drain is None else args.drain
    records = plan(times, users, run_id)
    submitter = Submitter(
        config,
        aws,
        args.input,
        config.ann_load.prefix,
        run_id if args.shared_input else None,
        users,
    )
    requests_queue = aws.queue_url(config.gas.job_requests_queue)
    results_topic = aws.topic_arn(config.gas.job_results_topic)
    endpoint = aws.client("sns").meta.endpoint_url
    print(
        f"ann_load: loading account {aws.account_id()} at {endpoint}\n"
        f"  job requests to {submitter.topic_arn}, backlog of {requests_queue}\n"
        f"  target {args.rate:g} jobs/s, ramp {args.ramp:g} s: {len(records)} jobs over "
        f"{span:g} s, for {', '.join(users)}, input {args.input} "
        f"({args.input.stat().st_size} bytes)\n"
        f"  run {run_id}, report in {out}",
        flush=True,
    )

    loop = OpenLoop(
        records,
        submitter,
        args.senders or _senders(args.rate),
        args.max_lag,
        batch_seconds=args.batch_ms / 1000,
        late_ms=late_ms,
    )
    _stop_on_signals(loop)
    receivers = min(8, math.ceil(args.rate / RESULTS_PER_RECEIVER))
    show = sys.stderr.isatty()
    with ResultsQueue(
        aws, results_topic, f"{TEMP_QUEUE_PREFIX}{run_id}", receivers, loop.on_result, loop.clock
    ):
        loop.begin()
        cpu_started, requests_before = time.process_time(), requests.so_far()
        with Sampler(loop, aws, requests_queue, show, args.sample_every) as sampler:
            loop.send_all()
            loop.wait_drained(drain)
        cpu = time.process_time() - cpu_started
        made = requests.so_far() - requests_before
    summary = {
        "run_id": run_id,
        "started_at": datetime.fromtimestamp(loop.started_at, timezone.utc).isoformat(
            timespec="seconds"
        ),
        "account": aws.account_id(),
        "endpoint": endpoint,
        "interrupted": loop.stop.is_set(),
        "shared_input": args.shared_input,
        **summarize(
            records,
            sampler.timeline,
            args.rate,
            args.ramp,
            span,
            late_ms,
            loop.drained,
            args.sample_every,
            loop.stopped,
        ),
    }
    # ann_load's own cost, sending, receiving results and sampling, from the schedule's start:
    # its CPU, and the AWS requests that most of it goes to.
    per_job = max(summary["jobs"]["submitted"], 1)
    summary["cpu_ms_per_job"] = round(1000 * cpu / per_job, 3)
    summary["aws_requests"] = {
        "per_job": round(made.total() / per_job, 3),
        "by_operation": dict(sorted(made.items())),
    }
    write_outputs(out, records, summary, sampler.timeline)
    print_summary(summary, out)
    if args.cleanup:
        say_removed(cleanup(config, aws, f"{SYNTHETIC_JOB_PREFIX}{run_id}-"))
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_INCOMPLETE if summary["jobs"]["completed"] < len(records) else 0


def _senders(rate: float) -> int:
    return max(MIN_SENDERS, math.ceil(rate * SEND_HEADROOM_SECONDS))


def print_summary(summary: dict[str, Any], out: Path) -> None:
    jobs = summary["jobs"]

    def figures(key: str, scale: float = 1, unit: str = "ms") -> str:
        d = summary[key]
        return (
            "  ".join(
                f"{k} {'-' if d[k] is None else f'{d[k] / scale:.3g}'}"
                for k in ("p50", "p90", "p99", "max")
            )
            + f" ({unit})"
        )

    drain = "" if summary["drain_s"] is None else f" (drain {summary['drain_s']:g} s)"
    print(
        f"sent {jobs['submitted']}/{jobs['scheduled']} ({jobs['send_errors']} errors, "
        f"{jobs['not_sent']} not sent, {jobs['dropped']} of them dropped), "
        f"{summary['late_sends']} late "
        f"(> {summary['late_threshold_ms']:g} ms)\n"
        f"rate achieved {summary['achieved_rate']:g} jobs/s, target "
        f"{summary['target_rate']:g} jobs/s\n"
        f"send lag       {figures('send_lag_ms')}\n"
        f"submit latency {figures('submit_latency_ms')}\n"
        f"end to end     {figures('end_to_end_ms', 1000, 's')}\n"
        f"completed {jobs['completed']}, failed {jobs['failed']}, never completed "
        f"{jobs['never_completed']}{drain}; job-requests backlog "
        f"max {summary['backlog']['max']}, at the end {summary['backlog']['final']}\n"
        f"ann_load's own CPU {summary['cpu_ms_per_job']:g} ms per job, "
        f"{summary['aws_requests']['per_job']:g} AWS requests per job\n"
        f"report: {out / 'report.html'}",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser(
        "ann_load",
        "Load-test the annotator fleet: submit jobs as the web app does at a target rate, "
        "report achieved rate and end-to-end latency. Times are at most a day "
        f"({MAX_SECONDS} s).",
    )
    seconds, milliseconds = float_range(0, MAX_SECONDS), float_range(0, MAX_SECONDS * 1000)
    parser.add_argument(
        "--rate",
        type=argument(float_range(0, MAX_RATE, above=True)),
        metavar="R",
        help=f"target jobs per second after the ramp, up to {MAX_RATE}: about what one "
        "ann_load can send (docs/runtime.md); for more, run several",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--duration",
        type=argument(float_range(0, MAX_SECONDS, above=True)),
        metavar="S",
        help="send for S seconds",
    )
    length.add_argument(
        "--jobs",
        type=argument(int_range(1, MAX_JOBS)),
        metavar="N",
        help=f"send N jobs; a run is at most {MAX_JOBS:,} (R x S with --duration): "
        "ann_load keeps a record of each",
    )
    parser.add_argument(
        "--ramp",
        type=argument(seconds),
        default=0.0,
        metavar="S",
        help="climb linearly from 0 to R jobs/s over the first S seconds",
    )
    parser.add_argument(
        "--drain",
        type=argument(seconds),
        metavar="S",
        help="after the last send, wait up to S s for completions "
        "(default: [ann_load] drain_seconds)",
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=SAMPLE_INPUT,
        metavar="FILE",
        help="input file of every job (default: a small bundled VCF)",
    )
    parser.add_argument(
        "--user",
        action="append",
        metavar="ID",
        help="submit for this user (repeatable; default: [ann_load] users)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the records and report go, made before anything is sent "
        "(default: ann_load-out/<run>)",
    )
    parser.add_argument(
        "--late-ms",
        type=argument(milliseconds),
        metavar="MS",
        help="a send later than this counts as late (default: [ann_load] late_ms)",
    )
    parser.add_argument(
        "--max-lag",
        type=argument(seconds),
        metavar="S",
        help="drop (and count) a job not sent within S s of its time "
        "(default: send every job, however late)",
    )
    parser.add_argument(
        "--senders",
        type=argument(int_range(1, MAX_SENDERS)),
        metavar="N",
        help=f"sending threads, up to {MAX_SENDERS} "
        f"(default: rate x {SEND_HEADROOM_SECONDS} s, at least {MIN_SENDERS})",
    )
    parser.add_argument(
        "--shared-input",
        action="store_true",
        help="upload the input once per user for the run, not once per job",
    )
    parser.add_argument(
        "--batch-ms",
        type=argument(milliseconds),
        default=0.0,
        metavar="MS",
        help="hold a due job up to MS for later ones to be sent with it "
        f"(up to {BATCH_MAX}; default 0: only jobs already due)",
    )
    parser.add_argument(
        "--sample-every",
        type=argument(int_range(1, MAX_SECONDS)),
        default=SAMPLE_EVERY_SECONDS,
        metavar="S",
        help="sample the job-requests backlog every S seconds, one call each "
        f"(default {SAMPLE_EVERY_SECONDS})",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="after the run, remove its jobs; alone, remove every synthetic job",
    )
    args = parser.parse_args(argv)
    if args.rate is None and (args.duration or args.jobs or not args.cleanup):
        parser.error("--rate is required, with --duration or --jobs (or --cleanup alone)")
    if args.rate is not None and args.duration is None and args.jobs is None:
        parser.error("--duration or --jobs is required with --rate")
    if args.duration is not None and args.rate * args.duration > MAX_JOBS:
        parser.error(
            f"--rate {args.rate:g} --duration {args.duration:g} is "
            f"{args.rate * args.duration:,.0f} jobs: at most {MAX_JOBS:,} a run"
        )
    if args.rate is not None and not args.input.is_file():
        parser.error(f"--input {args.input}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load(None, [CONFIG_FILE, *args.config])
    except ConfigError as exc:
        print(f"ann_load: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(*cli.log_settings(args, config))
    threads = args.senders or (_senders(args.rate) if args.rate else CLEANUP_THREADS)
    aws = process_aws(config, threads)
    try:
        if args.rate is None:
            return clean_only(config, aws)
        return load_test(args, config, aws)
    except (BotoCoreError, ClientError, CleanupError) as exc:
        print(f"ann_load: AWS error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
