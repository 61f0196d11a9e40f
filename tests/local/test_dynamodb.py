"""The local stack's DynamoDB: conditional writes are atomic, and reads of a global secondary
index lag the table by ``[local] index_lag_seconds``, as DynamoDB's may."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from moto.dynamodb.models import dynamodb_backends

from localaws import dynamodb as dynamodb_emulation
from localaws.settings import configure
from tests.conftest import Server, Stack, put_job, wait_for
from util.helpers import Annotations
from util.schema import ARCHIVE_ID, USER_INDEX

# Long enough that a read made right after a write always falls within it, short enough
# that a test waits it out in a few seconds.
LAG = 2.0


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


# -- index reads lag ----------------------------------------------------------------------------


def by_user_index(stack: Stack, user_id: str = "u-alice", scan: bool = False) -> dict[str, Any]:
    """job id -> status of the user's jobs, as a Query (or a Scan) of user_id_index sees them."""
    dynamodb = stack.client("dynamodb")
    table = stack.config.gas.annotations_table
    if scan:
        items = dynamodb.scan(TableName=table, IndexName=USER_INDEX)["Items"]
    else:
        items = dynamodb.query(
            TableName=table,
            IndexName=USER_INDEX,
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": user_id}},
        )["Items"]
    return {i["job_id"]["S"]: i["job_status"]["S"] for i in items if i["user_id"]["S"] == user_id}


def write_three(stack: Stack) -> None:
    """j-new put, j-upd updated (COMPLETED to DONE), j-del deleted."""
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    put_job(stack, job_id="j-new", size=1)
    jobs.update_if("j-upd", "SET job_status = :s", "attribute_exists(#job_id)", {}, {":s": "DONE"})
    stack.client("dynamodb").delete_item(
        TableName=stack.config.gas.annotations_table, Key={"job_id": {"S": "j-del"}}
    )


BEFORE = {"j-upd": "COMPLETED", "j-del": "COMPLETED"}
AFTER = {"j-new": "COMPLETED", "j-upd": "DONE"}


def test_a_gsi_read_sees_the_table_as_it_was_lag_seconds_ago(stack: Stack) -> None:
    # Given two jobs written before the lag was set, and a lag of LAG seconds
    put_job(stack, job_id="j-upd", size=1)
    put_job(stack, job_id="j-del", size=1)
    configure(index_lag_seconds=LAG)
    assert by_user_index(stack) == BEFORE

    # When one job is put, one updated and one deleted
    written = time.monotonic()
    write_three(stack)

    # Then a Query and a Scan of the index still see the jobs as they were
    assert by_user_index(stack) == BEFORE
    assert by_user_index(stack, scan=True) == BEFORE
    # while the table itself answers with the writes: GetItem (consistent or not), Query
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    assert jobs.get("j-upd")["job_status"] == "DONE"
    assert jobs.get("j-del") is None and jobs.get("j-new") is not None
    item = stack.client("dynamodb").get_item(
        TableName=stack.config.gas.annotations_table, Key={"job_id": {"S": "j-upd"}}
    )["Item"]
    assert item["job_status"]["S"] == "DONE"
    assert (
        stack.client("dynamodb").query(
            TableName=stack.config.gas.annotations_table,
            KeyConditionExpression="job_id = :j",
            ExpressionAttributeValues={":j": {"S": "j-new"}},
        )["Count"]
        == 1
    )
    # and once the lag has passed, the index sees all three writes
    wait_for(lambda: by_user_index(stack) == AFTER, timeout=10, what="the index to catch up")
    assert time.monotonic() - written >= LAG
    assert by_user_index(stack, scan=True) == AFTER


def test_without_a_lag_a_gsi_read_sees_every_write_at_once(stack: Stack) -> None:
    put_job(stack, job_id="j-upd", size=1)
    put_job(stack, job_id="j-del", size=1)
    write_three(stack)
    assert by_user_index(stack) == AFTER
    assert by_user_index(stack, scan=True) == AFTER


def test_archived_results_lag_as_restore_reads_them(stack: Stack) -> None:
    # Given a user with five archived results and one not archived, and a lag
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    for n in range(5):
        put_job(stack, job_id=f"j{n}", size=1, **{ARCHIVE_ID: f"archive-{n}"})
    put_job(stack, job_id="j5", size=1)
    configure(index_lag_seconds=LAG)

    def archived() -> dict[str, str]:
        """restore's read: paginated (2 a page) GSI Query filtered on the archive id."""
        return {j["job_id"]: j[ARCHIVE_ID] for j in jobs.archived_results("u-alice", 2)}

    before = {f"j{n}": f"archive-{n}" for n in range(5)}
    assert archived() == before

    # When j5 is archived, j0's archive replaced, j1 deleted and j6 put archived
    jobs.update_if("j5", f"SET {ARCHIVE_ID} = :a", "attribute_exists(#job_id)", {}, {":a": "a-5"})
    jobs.update_if("j0", f"SET {ARCHIVE_ID} = :a", "attribute_exists(#job_id)", {}, {":a": "a-0"})
    stack.client("dynamodb").delete_item(
        TableName=stack.config.gas.annotations_table, Key={"job_id": {"S": "j1"}}
    )
    put_job(stack, job_id="j6", size=1, **{ARCHIVE_ID: "a-6"})

    # Then restore's read still finds the archives as they were
    assert archived() == before
    # and, the lag past, as they are
    after = {"j0": "a-0", "j2": "archive-2", "j3": "archive-3", "j4": "archive-4"}
    after |= {"j5": "a-5", "j6": "a-6"}
    wait_for(lambda: archived() == after, timeout=10, what="the archived results to catch up")


def test_only_the_writes_within_the_lag_are_kept(stack: Stack) -> None:
    # Given a short lag and many writes
    configure(index_lag_seconds=0.2)
    first = [f"j{n}" for n in range(50)]
    for job_id in first:
        put_job(stack, job_id=job_id, size=1)
    backend = dynamodb_backends[stack.aws.account_id()]["us-east-1"]
    table = stack.config.gas.annotations_table

    def recorded() -> set[str]:
        return {w.hash_key.value for w in dynamodb_emulation._writes(backend)[table]}

    assert "j49" in recorded()  # the earliest may be gone already: the lag is short

    # When writes go on after the lag has passed
    def one_more_write() -> bool:
        put_job(stack, job_id="j-later", size=1)
        return not recorded() & set(first)

    # Then the earlier writes are no longer recorded
    wait_for(one_more_write, timeout=10, what="the first writes to be forgotten")


@pytest.fixture
def stack_settings() -> dict[str, str]:
    return {"GAS_LOCAL_INDEX_LAG_SECONDS": str(LAG)}


def test_the_server_lags_its_gsi_reads_by_the_setting(server: Server) -> None:
    # Given a stack served with a lag: a job before, then a put, an update and a delete
    put_job(server, job_id="j-upd", size=1)
    put_job(server, job_id="j-del", size=1)
    wait_for(lambda: by_user_index(server) == BEFORE, timeout=10, what="the first two jobs")
    write_three(server)
    # Then its index answers as before the writes, then, the lag past, with them
    assert by_user_index(server) == BEFORE
    jobs = Annotations(server.aws, server.config.gas.annotations_table)
    assert jobs.get("j-upd")["job_status"] == "DONE"
    wait_for(lambda: by_user_index(server) == AFTER, timeout=10, what="the index to catch up")
