"""ann_load's run apart from AWS: the schedule, a record per job, the open loop that hands each
job to a sender at its time, and the run's figures and files (docs/ann_load.md).

Open workload model: before the run, job k is given the time it is due (from the target rate
and ramp); at that time it is handed to a sender, whatever became of earlier sends, with every
other job due by then (up to BATCH_MAX). Each record keeps when its job was due and when its
send started, so a slow endpoint shows as late sends and a lower achieved rate instead of
silently stretching the schedule (no coordinated omission). The loop is given the function
that submits (util/ann_load_aws.py's Submitter): nothing here calls AWS.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from util.ann_load_report import distribution, ranked, render
from util.schema import COMPLETED, FAILED, JOB_ID, JOB_STATUS

SYNTHETIC_JOB_PREFIX = "load-"  # every synthetic job id starts with it: load-<run id>-<n>
BATCH_MAX = 10  # jobs sent together at most (SNS PublishBatch's limit)
SAMPLE_EVERY_SECONDS = 5  # default interval of the job-requests backlog samples
PERCENTILE_METHOD = "nearest rank (the smallest value with at least p % of values at or below it)"


# -- the schedule (pure) ----------------------------------------------------------------------


def intended_times(
    rate: float, ramp: float = 0.0, duration: float | None = None, jobs: int | None = None
) -> list[float]:
    """Seconds after the start at which each job is due.

    The rate climbs linearly from 0 to `rate` over `ramp` seconds, then holds, so by time t
    (t <= ramp) rate * t^2 / (2 * ramp) jobs are due, and job k is due when that reaches k.
    Jobs are due until `duration` (exclusive) or up to `jobs` of them.
    """
    times: list[float] = []
    ramp_jobs = rate * ramp / 2  # how many jobs fall within the ramp
    while True:
        k = len(times)
        due = math.sqrt(2 * k * ramp / rate) if k < ramp_jobs else ramp + (k - ramp_jobs) / rate
        # The tolerance keeps 15 / 5 from landing just inside a 3 s run by rounding.
        if (duration is not None and due >= duration - 1e-9) or (jobs is not None and k >= jobs):
            return times
        times.append(due)


def schedule_span(times: Sequence[float], rate: float, duration: float | None) -> float:
    """The seconds the schedule covers: the duration, or up to the end of the last job's slot."""
    if duration is not None:
        return duration
    return times[-1] + 1 / rate if times else 0.0


@dataclass
class JobRecord:
    """One job's life as ann_load saw it; times are seconds after the start of sending."""

    seq: int
    job_id: str
    user_id: str
    intended: float  # when it was due
    sent: float | None = None  # when its submission started
    submitted: float | None = None  # when its job request was published
    completed: float | None = None  # when its job-results message arrived
    status: str | None = None  # job_status of that message: COMPLETED or FAILED
    error: str | None = None  # why its submission failed
    dropped: bool = False  # not sent: its send could not start within the maximum lag

    @property
    def lag(self) -> float | None:
        """How late its send started."""
        return None if self.sent is None else self.sent - self.intended

    @property
    def submit_latency(self) -> float | None:
        """How long its submission took."""
        return None if self.sent is None or self.submitted is None else self.submitted - self.sent

    @property
    def end_to_end(self) -> float | None:
        """From when it was due to when its COMPLETED result was seen."""
        if self.status != COMPLETED or self.completed is None:
            return None
        return self.completed - self.intended

    def as_json(self) -> dict[str, Any]:
        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 3)

        def s(value: float | None) -> float | None:
            return None if value is None else round(value, 6)

        return {
            "seq": self.seq,
            "job_id": self.job_id,
            "user_id": self.user_id,
            "intended_s": s(self.intended),
            "sent_s": s(self.sent),
            "submitted_s": s(self.submitted),
            "completed_s": s(self.completed),
            "status": self.status,
            "error": self.error,
            "dropped": self.dropped,
            "lag_ms": ms(self.lag),
            "submit_ms": ms(self.submit_latency),
            "e2e_ms": ms(self.end_to_end),
        }


def plan(times: Sequence[float], users: Sequence[str], run_id: str) -> list[JobRecord]:
    """One record per due time, users taking turns."""
    return [
        JobRecord(seq, f"{SYNTHETIC_JOB_PREFIX}{run_id}-{seq:06d}", users[seq % len(users)], due)
        for seq, due in enumerate(times)
    ]


# -- the open loop ----------------------------------------------------------------------------

Submit = Callable[[list["JobRecord"]], dict[str, str]]  # jobs -> {job id: error} of failures


class OpenLoop:
    """Hands each job to a sender thread at its due time, with the others due by then (up to
    BATCH_MAX; `batch_seconds` holds it that long for more to join), and keeps count of what
    became of it.

    `submit` submits jobs together; the schedule never waits for it. A job the senders cannot
    start on time waits in the pool's queue, and its lateness is recorded; with `max_lag`, one
    that would start more than `max_lag` seconds late is dropped instead. The running figures
    of the progress line (late sends, end-to-end latencies so far) are kept as jobs go, so
    that showing them costs the same an hour into a run as at its start.
    """

    def __init__(
        self,
        records: Sequence[JobRecord],
        submit: Submit,
        senders: int,
        max_lag: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch_seconds: float = 0.0,
        late_ms: float = math.inf,
    ):
        self.records = records
        self.by_id = {record.job_id: record for record in records}
        self.submit = submit
        self.senders = senders
        self.max_lag = max_lag
        self.batch_seconds = batch_seconds
        self.late_ms = late_ms
        self.clock = clock
        self.stop = threading.Event()
        self.stopped: float | None = None  # when `halt` was called (seconds after the start)
        self.drained: float | None = None  # how long the drain waited, once one has
        self.start = clock()
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.sent = self.submitted = self.finished = self.late_sends = 0
        self.end_to_end: list[float] = []  # of the jobs COMPLETED so far, ascending (seconds)

    def begin(self) -> None:
        """Time zero of the schedule: now."""
        self.start, self.started_at = self.clock(), time.time()

    def now(self) -> float:
        return self.clock() - self.start

    def halt(self) -> None:
        """Stop now (Ctrl-C): jobs not started stay unsent, and no drain begins."""
        if self.stopped is None:
            self.stopped = self.now()
        self.stop.set()

    def send_all(self) -> None:
        """Send every job at its time, or until stopped; return once every send has ended."""
        pool = ThreadPoolExecutor(self.senders, thread_name_prefix="send")
        try:
            first = 0
            while first < len(self.records):
                delay = self.records[first].intended + self.batch_seconds - self.now()
                if (delay > 0 and self.stop.wait(delay)) or self.stop.is_set():
                    break
                now, last = self.now(), first + 1
                while (
                    last < len(self.records)
                    and last - first < BATCH_MAX
                    and self.records[last].intended <= now
                ):
                    last += 1
                pool.submit(self._send, list(self.records[first:last]))  # queues, never blocks
                first = last
        finally:
            pool.shutdown(wait=True)

    def _send(self, batch: list[JobRecord]) -> None:
        if self.stop.is_set():
            return  # stopping: a job not started yet stays unsent
        now = self.now()
        live = []
        for record in batch:
            if self.max_lag is not None and now - record.intended > self.max_lag:
                record.dropped = True
            else:
                record.sent = now
                live.append(record)
        if not live:
            return
        late = sum((now - record.intended) * 1000 > self.late_ms for record in live)
        with self._lock:
            self.sent += len(live)
            self.late_sends += late
        try:
            failed = self.submit(live)
        except Exception as exc:  # botocore has retried; a failed send is a figure, not a crash
            failed = {record.job_id: f"{type(exc).__name__}: {exc}" for record in live}
        submitted = self.now()
        for record in live:
            record.error = failed.get(record.job_id)
            if record.error is None:
                record.submitted = submitted
        with self._lock:
            self.submitted += len(live) - len(failed)

    def on_result(self, message: dict[str, Any], arrived: float) -> None:
        """A job-results message: the first COMPLETED or FAILED one of each of our jobs counts."""
        job_id, status = message.get(JOB_ID), message.get(JOB_STATUS)
        record = self.by_id.get(job_id) if isinstance(job_id, str) else None
        if record is None or status not in (COMPLETED, FAILED):
            return  # another run's job, the web app's own, or not finished
        with self._lock:
            if record.completed is None:
                record.completed, record.status = arrived - self.start, status
                self.finished += 1
                if (end_to_end := record.end_to_end) is not None:
                    bisect.insort(self.end_to_end, end_to_end)

    def end_to_end_so_far(self, p: float) -> float | None:
        """The `p`th percentile of the end-to-end latencies seen so far, in seconds."""
        with self._lock:
            return ranked(self.end_to_end, p)

    def wait_drained(self, seconds: float) -> bool:
        """Wait up to `seconds` for every submitted job to finish, unless halted; True if all
        did. `drained` is how long it waited (None: halted before it began)."""
        if self.stop.is_set():
            return False
        began = self.now()
        while self.finished < self.submitted and self.now() < began + seconds:
            if self.stop.wait(0.1):
                break
        self.drained = min(self.now() - began, seconds)
        return self.finished >= self.submitted


# -- the run's figures and files --------------------------------------------------------------


def summarize(
    records: Sequence[JobRecord],
    timeline: Sequence[dict[str, Any]],
    rate: float,
    ramp: float,
    span: float,
    late_ms: float,
    drain: float | None,
    sample_every: int = SAMPLE_EVERY_SECONDS,
    stopped: float | None = None,
) -> dict[str, Any]:
    """The run's figures (times in ms); `drain`: the seconds the drain waited (None: none
    ran), `stopped`: when the run was halted (None: it was not).

    Achieved rate: jobs submitted per second of the schedule's span, stretched by how late the
    last job was sent (on time, it is the target); of a run halted before that, per second
    until the halt."""
    sent = [r for r in records if r.sent is not None]
    submitted = [r for r in records if r.submitted is not None]
    lags = [lag * 1000 for r in sent if (lag := r.lag) is not None]
    last_sent = max(sent, key=lambda r: r.sent or 0.0, default=None)
    stretch = max(0.0, last_sent.lag or 0.0) if last_sent else 0.0
    sending = span + stretch if stopped is None else min(span + stretch, stopped)
    end_to_end = [e2e * 1000 for r in submitted if (e2e := r.end_to_end) is not None]
    backlog = [s["backlog"] for s in timeline if s["backlog"] is not None]
    return {
        "target": {"rate": rate, "ramp_s": ramp, "span_s": round(span, 3)},
        "target_rate": round(len(records) / span, 3) if span else 0.0,
        "achieved_rate": round(len(submitted) / sending, 3) if submitted and sending else 0.0,
        "late_sends": sum(lag > late_ms for lag in lags),
        "late_threshold_ms": late_ms,
        "jobs": {
            "scheduled": len(records),
            "sent": len(sent),
            "submitted": len(submitted),
            "send_errors": sum(r.error is not None for r in records),
            "not_sent": len(records) - len(sent),
            "dropped": sum(r.dropped for r in records),
            "completed": len(end_to_end),
            "failed": sum(r.status == FAILED for r in submitted),
            "never_completed": sum(r.completed is None for r in submitted),
        },
        "send_lag_ms": distribution(lags),
        "submit_latency_ms": distribution(
            [latency * 1000 for r in submitted if (latency := r.submit_latency) is not None]
        ),
        "end_to_end_ms": distribution(end_to_end),
        "drain_s": None if drain is None else round(drain, 1),
        "backlog": {
            "max": max(backlog, default=None),
            "final": backlog[-1] if backlog else None,
            "every_s": sample_every,
        },
        "percentile_method": PERCENTILE_METHOD,
    }


OUTPUTS = ("jobs.jsonl", "summary.json", "report.html")


def make_outputs(out: Path) -> None:
    """Make `out` and its (empty) files now: an OSError here, before the run, not after it."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / name).write_bytes(b"")


def write_outputs(
    out: Path,
    records: Sequence[JobRecord],
    summary: dict[str, Any],
    timeline: Sequence[dict[str, Any]],
) -> None:
    """jobs.jsonl (one record a line), summary.json (with the samples), report.html."""
    jobs, summary_file, report = (out / name for name in OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    rows = [record.as_json() for record in records]
    with open(jobs, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    summary_file.write_text(
        json.dumps({**summary, "samples": list(timeline)}, indent=2) + "\n", encoding="utf-8"
    )
    report.write_text(render(summary, rows, timeline), encoding="utf-8")
