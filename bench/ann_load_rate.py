"""ann_load at a high rate against the local stack and the simulated annotator.

    python -m bench.ann_load_rate [--rate 200] [--duration 30] [--max-lag 5] [--drain 30]
                                  [--concurrency 50] [--seconds 0.1] [--shared-input]

Starts the local stack (``localaws.stack.launch``) and the simulated annotator fleet, each
its own process, runs ``util/ann_load.py`` as its own process at the target rate, and prints
from its summary.json: achieved and target rate, send lag p50/p99, end-to-end latency
p50/p99, and ann_load's own CPU per job (here with every job's result to receive). The
figures are those of this machine: the stack, the annotator and ann_load share its cores, so
where they fall short of the target the send lag shows by how much; jobs that could not be
sent within ``--max-lag`` seconds are dropped and counted, so the run ends on time however
far the stack falls behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from localaws.stack import launch
from util.ann_load import EXIT_INCOMPLETE
from util.util_config import UTILITY_DIR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--max-lag", type=float, default=5)
    parser.add_argument("--drain", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=50, help="annotator fleet size")
    parser.add_argument("--seconds", type=float, default=0.1, help="annotator time per job")
    parser.add_argument("--shared-input", action="store_true", help="ann_load's --shared-input")
    args = parser.parse_args()

    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
    stack, exports = launch(env=environment)
    environment.update(exports)
    out = Path(tempfile.mkdtemp(prefix="ann_load_rate-"))
    annotator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localaws",
            "annotator",
            "--concurrency",
            str(args.concurrency),
            "--seconds",
            str(args.seconds),
        ],
        cwd=UTILITY_DIR.parent,
        env={**environment, "GAS_WORKER_WAIT_SECONDS": "1", "GAS_WORKER_LOG_LEVEL": "WARNING"},
        stderr=open(out / "annotator.log", "w"),
    )
    try:
        print(
            f"ann_load {args.rate:g} jobs/s for {args.duration:g} s; simulated annotator: "
            f"{args.concurrency} at once, {args.seconds:g} s a job",
            flush=True,
        )
        load = subprocess.run(
            [
                sys.executable,
                str(UTILITY_DIR / "ann_load.py"),
                "--rate",
                str(args.rate),
                "--duration",
                str(args.duration),
                "--max-lag",
                str(args.max_lag),
                "--drain",
                str(args.drain),
                "--out",
                str(out),
                *(["--shared-input"] if args.shared_input else []),
            ],
            cwd=UTILITY_DIR.parent,
            env=environment,
            stdout=subprocess.DEVNULL,
        )
        summary = json.loads((out / "summary.json").read_text())
    finally:
        for process in (annotator, stack):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)

    jobs, lag, e2e = summary["jobs"], summary["send_lag_ms"], summary["end_to_end_ms"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    def s(value: float | None) -> str:
        return "-" if value is None else f"{value / 1000:.2f} s"

    print(
        f"achieved {summary['achieved_rate']:g} / target {summary['target_rate']:g} jobs/s "
        f"({jobs['submitted']}/{jobs['scheduled']} jobs sent, {summary['late_sends']} of them "
        f"late by more than {summary['late_threshold_ms']:g} ms; {jobs['dropped']} dropped, "
        f"not sendable within {args.max_lag:g} s)\n"
        f"send lag     p50 {ms(lag['p50'])}  p99 {ms(lag['p99'])}  max {ms(lag['max'])}\n"
        f"end to end   p50 {s(e2e['p50'])}  p99 {s(e2e['p99'])}  "
        f"({jobs['completed']} completed, {jobs['never_completed']} not within the drain)\n"
        f"ann_load's own CPU {summary['cpu_ms_per_job']:.1f} ms per job, "
        f"{summary['aws_requests']['per_job']:.2f} AWS requests per job (sending, receiving "
        "results, sampling)\n"
        f"backlog max {summary['backlog']['max']}; report: {out / 'report.html'}"
    )
    # Jobs not sent or not completed are figures here, not a failure of the benchmark.
    return 0 if load.returncode in (0, EXIT_INCOMPLETE) else load.returncode


if __name__ == "__main__":
    sys.exit(main())
