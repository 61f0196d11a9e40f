"""Each handler stopped at its k-th AWS call, for every k: before the call, after it took
effect with its answer lost (a worker killed there), or with its answer lost and the call made
again (botocore's retry after a dropped connection). Then the message is delivered again to a
fresh handler and everything runs until nothing is left (tests/pipeline.py); the invariants
of tests/scenarios.py hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from localaws.ses import sent_emails_in_process
from tests import interleave
from tests.conftest import Stack
from tests.pipeline import Pipeline
from tests.scenarios import World, message, upgraded, use_backend
from util.aws import Aws
from util.schema import FREE, PREMIUM

pytestmark = pytest.mark.exhaustive


def archive(world: World) -> tuple[str, dict[str, Any]]:
    job = world.job(world.user(FREE), size=3)
    return "archive", {"job_id": job.job_id, "user_id": job.user_id}


def archive_multipart(world: World) -> tuple[str, dict[str, Any]]:
    job = world.job(world.user(FREE), size=6 * 1024 * 1024)  # parts of both back ends
    return "archive", {"job_id": job.job_id, "user_id": job.user_id}


def restore(world: World) -> tuple[str, dict[str, Any]]:
    user_id = world.user(FREE)
    for job in (world.job(user_id), world.job(user_id)):
        world.archived(job)
    world.upgrade(user_id)
    return "restore", {"user_id": user_id}


def thaw(world: World) -> tuple[str, dict[str, Any]]:
    return "thaw", world.retrieved(upgraded(world))


def notify(world: World) -> tuple[str, dict[str, Any]]:
    job = world.job(world.user(PREMIUM))
    return "notify", {"job_id": job.job_id, "user_id": job.user_id, "job_status": "COMPLETED"}


SCENARIOS: dict[str, Callable[[World], tuple[str, dict[str, Any]]]] = {
    "archive": archive,
    "archive-multipart": archive_multipart,
    "restore": restore,
    "thaw": thaw,
    "notify": notify,
}
FAULTS = ("before", "after", "lost")


def run_with_fault(
    stack: Stack, setup: Callable[[World], tuple[str, dict[str, Any]]], k: int, fault: str
) -> int:
    """Run the scenario with the fault at the handler's k-th call, deliver again, check;
    how many calls the faulted handler reached."""
    world = World(stack)
    utility, body = setup(world)
    session = interleave.session()
    if fault == "lost":
        interleave.lose_answer(session, k)
    else:
        interleave.crash_at(session, k, fault)  # type: ignore[arg-type]
    handler = world.handler(utility, Aws(stack.config, session))
    outcomes: list[Any] = []

    def handle() -> None:
        try:
            outcomes.append(handler(message(body)))
        except BaseException as exc:  # noqa: BLE001 - what a dead process would have raised
            outcomes.append(exc)

    # In its own thread: a crash in a transfer thread leaves the handler waiting for good, as
    # a killed process would; it is left there.
    worker = threading.Thread(target=handle, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while worker.is_alive() and not interleave.crashed(session):
        assert time.monotonic() < deadline, f"{utility} neither finished nor crashed"
        worker.join(0.01)
    if not (outcomes and getattr(outcomes[0], "action", None) == "done"):
        world.pending.append((utility, body))
    pipeline = Pipeline(stack)
    world.redeliver(pipeline)
    world.check(pipeline)
    if utility == "notify":
        address = f"{body['user_id']}@example.com"
        sent = [m for m in sent_emails_in_process() if address in m["to"]]
        # At least once, never none; twice only if it died between sending and recording.
        assert 1 <= len(sent) <= 2, f"{len(sent)} e-mails"
    return interleave.calls(session)


@pytest.mark.parametrize(
    "scenario, backend",
    [
        (name, backend)
        for name in SCENARIOS
        for backend in (("vault",) if name == "notify" else ("vault", "s3"))
    ],
)
def test_a_fault_at_any_call_loses_nothing(stack: Stack, scenario: str, backend: str) -> None:
    use_backend(stack, backend)
    for fault in FAULTS:
        k = 1
        while True:
            try:
                reached = run_with_fault(stack, SCENARIOS[scenario], k, fault)
            except AssertionError as exc:
                raise AssertionError(f"{fault} call {k}: {exc}") from None
            if reached < k:  # the handler made fewer than k calls: every one was tried
                break
            k += 1
