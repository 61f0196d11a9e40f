"""ann_load's open loop on this machine's clock: does it keep its schedule?

    python -m bench.open_loop

Three runs of 20 jobs at 50 jobs/s whose every send takes 100 ms: with 20 senders (the
schedule is kept: no send starts 100 ms late, the target rate is reached), with 2 (sends are
late, lateness accumulates, the achieved rate says so) and with 1 and a maximum lag of 150 ms
(jobs too late are dropped and counted). Timing figures depend on the machine and its load,
which is why they are checked here and not in the tests; exits 1 if one is off.
"""

from __future__ import annotations

import sys
import time

from util.ann_load_schedule import JobRecord, OpenLoop, intended_times, plan, summarize

RATE, SECONDS, SEND_SECONDS = 50, 0.4, 0.1


def submit(records: list[JobRecord]) -> dict[str, str]:
    """Every send takes SEND_SECONDS and succeeds: no failures ({job id: error})."""
    time.sleep(SEND_SECONDS)
    return {}


def run(senders: int, max_lag: float | None = None) -> tuple[OpenLoop, dict]:
    records = plan(intended_times(RATE, duration=SECONDS), ["u-alice"], "bench")
    loop = OpenLoop(records, submit, senders, max_lag)
    loop.begin()
    loop.send_all()
    return loop, summarize(records, [], RATE, 0, SECONDS, late_ms=50, drain=0)


def main() -> int:
    checks: list[tuple[str, bool, object]] = []
    _, enough = run(senders=20)
    checks += [
        ("20 senders: every job submitted", enough["jobs"]["submitted"] == 20, enough["jobs"]),
        (
            "20 senders: max send lag < 100 ms",
            enough["send_lag_ms"]["max"] < 100,
            enough["send_lag_ms"],
        ),
        (
            "20 senders: achieved rate >= 90 % of 50/s",
            enough["achieved_rate"] >= 45,
            enough["achieved_rate"],
        ),
    ]
    loop, few = run(senders=2)
    lags = [r.lag or 0.0 for r in loop.records]
    checks += [
        ("2 senders: at least 15 late sends", few["late_sends"] >= 15, few["late_sends"]),
        ("2 senders: max send lag >= 400 ms", few["send_lag_ms"]["max"] >= 400, few["send_lag_ms"]),
        (
            "2 senders: achieved rate <= 60 % of 50/s",
            few["achieved_rate"] <= 30,
            few["achieved_rate"],
        ),
        ("2 senders: lateness accumulates", lags[-1] > lags[0] + 0.3, (lags[0], lags[-1])),
    ]
    _, dropping = run(senders=1, max_lag=0.15)
    jobs = dropping["jobs"]
    checks += [
        ("1 sender, max lag 150 ms: at least 10 dropped", jobs["dropped"] >= 10, jobs),
        (
            "1 sender, max lag 150 ms: max send lag <= 200 ms",
            dropping["send_lag_ms"]["max"] <= 200,
            dropping["send_lag_ms"],
        ),
    ]
    for what, ok, figure in checks:
        print(f"{'ok  ' if ok else 'OFF '} {what}: {figure}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
