"""The local stack's DynamoDB: conditional writes are atomic, as in DynamoDB."""

from __future__ import annotations

import threading

from tests.conftest import Stack, put_job
from util.helpers import Annotations


def test_of_many_racing_conditional_writers_exactly_one_wins(stack: Stack) -> None:
    # Given eight threads that each try to claim the same items at the same moment
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    items = [f"j{i}" for i in range(20)]
    for job_id in items:
        put_job(stack, job_id=job_id, size=1)
    wins: list[tuple[str, int]] = []
    together = threading.Barrier(8)

    def claim(worker: int) -> None:
        together.wait()
        for job_id in items:
            if jobs.update_if(
                job_id,
                "SET #c = :w",
                "attribute_not_exists(#c)",
                {"#c": "claimed_by"},
                {":w": worker},
            ).applied:
                wins.append((job_id, worker))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every item was claimed exactly once, and its record names the winner
    assert sorted(job_id for job_id, _ in wins) == sorted(items)
    for job_id, worker in wins:
        assert jobs.get(job_id)["claimed_by"] == worker
