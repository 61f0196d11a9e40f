"""tests/interleave.py on toy scenarios: a DynamoDB counter, SQS sends, S3 multipart uploads."""

from __future__ import annotations

import functools
import io
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws

from tests import interleave
from tests.conftest import ROOT
from tests.interleave import (
    Actor,
    Crashed,
    Result,
    Scenario,
    ScheduleError,
    Step,
    assert_all_pass,
    calls,
    crash_at,
    exhaustive,
    explore,
    lose_answer,
    preemption_bounded,
    replay,
)

TABLE = "counters"
KEY = {"k": {"S": "c"}}
MIB = 1024 * 1024


@pytest.fixture
def ddb(aws_env: None) -> Iterator[BaseClient]:
    """A table in moto, and a plain client (not gated) to set it up and look at it."""
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def item(ddb: BaseClient, key: str = "c") -> dict | None:
    return ddb.get_item(TableName=TABLE, Key={"k": {"S": key}}).get("Item")


# -- lost update --------------------------------------------------------------------------------


def increment(session: boto3.session.Session, conditional: bool) -> int:
    """Read the counter, write it plus one; `conditional`: only if it is still what was read."""
    client = session.client("dynamodb")  # made lazily, in the actor's thread
    while True:
        n = int(client.get_item(TableName=TABLE, Key=KEY)["Item"]["n"]["N"])
        new = {**KEY, "n": {"N": str(n + 1)}}
        if not conditional:
            client.put_item(TableName=TABLE, Item=new)
            return n + 1
        try:
            client.put_item(
                TableName=TABLE,
                Item=new,
                ConditionExpression="n = :n",
                ExpressionAttributeValues={":n": {"N": str(n)}},
            )
            return n + 1
        except client.exceptions.ConditionalCheckFailedException:
            continue  # someone else incremented it first: read again


def counter(ddb: BaseClient, conditional: bool) -> Scenario:
    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        ddb.put_item(TableName=TABLE, Item={**KEY, "n": {"N": "0"}})
        sessions = {name: interleave.session() for name in ("a", "b")}
        actors = [
            Actor(name, functools.partial(increment, s, conditional), [s])
            for name, s in sessions.items()
        ]

        def check(result: Result) -> None:
            for name in sessions:
                result.outcome(name)
            n = int(item(ddb)["n"]["N"])
            assert n == 2, f"lost update: the counter is {n} after two increments"

        return actors, check

    return scenario


def test_exhaustive_finds_the_lost_update_and_replays_it(ddb: BaseClient) -> None:
    scenario = counter(ddb, conditional=False)
    report = explore(scenario, exhaustive())
    # Two calls each: C(4, 2) orders; the four where both read before either writes lose one.
    assert (report.schedules, report.distinct, report.exhausted) == (6, 6, True)
    assert len(report.failures) == 4
    failure = report.failures[0]
    assert "lost update: the counter is 1" in str(failure.error)
    reads = [i for i, step in enumerate(failure.result.trace) if step.operation == "GetItem"]
    assert reads == [0, 1]

    again = replay(scenario, failure.result.choices)
    assert again.result.trace == failure.result.trace
    assert "lost update: the counter is 1" in str(again.error)
    with pytest.raises(
        AssertionError,
        match=r"(?s)4 of 6 schedules failed.*lost update.*"
        r"1\. a: dynamodb.GetItem.*replay it with: interleave.replay\(scenario",
    ):
        assert_all_pass(report)


def test_a_conditional_write_with_retry_passes_every_schedule(ddb: BaseClient) -> None:
    report = explore(counter(ddb, conditional=True), exhaustive())
    assert_all_pass(report)
    # As many orders as without the condition: the loser retries after the winner finished.
    assert (report.schedules, report.distinct, report.exhausted) == (6, 6, True)
    assert sum(len(trace) == 6 for trace in report.traces) == 4  # read, lose, read, write


# -- counts -------------------------------------------------------------------------------------


def sends() -> Scenario:
    """Actor a sends 2 messages, b sends 3: no conflicts, only orders."""
    url = boto3.client("sqs").create_queue(QueueName="q")["QueueUrl"]

    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        def send(s: boto3.session.Session, n: int) -> None:
            client = s.client("sqs")
            for i in range(n):
                client.send_message(QueueUrl=url, MessageBody=str(i))

        a, b = interleave.session(), interleave.session()
        return (
            [
                Actor("a", functools.partial(send, a, 2), [a]),
                Actor("b", functools.partial(send, b, 3), [b]),
            ],
            lambda result: None,
        )

    return scenario


def letters(trace: tuple[Step, ...]) -> str:
    return "".join(step.actor[0] for step in trace)


def test_schedule_counts(ddb: BaseClient) -> None:
    scenario = sends()
    every = explore(scenario, exhaustive())
    assert (every.schedules, every.distinct, every.exhausted) == (10, 10, True)  # C(5, 2)
    assert all(step.operation == "SendMessage" for step in every.traces[0])

    none = explore(scenario, preemption_bounded(0))
    assert sorted(map(letters, none.traces)) == ["aabbb", "bbbaa"]
    # One preemption: leave an actor that had calls left once, then run each to its end.
    one = explore(scenario, preemption_bounded(1))
    assert (one.schedules, one.exhausted) == (5, True)
    assert sorted(map(letters, one.traces)) == ["aabbb", "abbba", "baabb", "bbaab", "bbbaa"]

    capped = explore(scenario, exhaustive(max_schedules=2))
    assert (capped.schedules, capped.exhausted) == (2, False)

    first = explore(scenario, interleave.random(4, seed=7))
    assert first.schedules == 4 and not first.exhausted
    assert explore(scenario, interleave.random(4, seed=7)).traces == first.traces
    assert explore(scenario, interleave.random(4, seed=8)).traces != first.traces
    assert set(first.traces) <= set(every.traces)


# -- threads inside an actor --------------------------------------------------------------------


def test_calls_from_a_thread_pool_are_gated_and_attributed(ddb: BaseClient) -> None:
    url = boto3.client("sqs").create_queue(QueueName="q")["QueueUrl"]
    ran_in: set[str] = set()

    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        pooled, solo = interleave.session(), interleave.session()

        def fan_out() -> None:
            dynamodb, sqs = pooled.client("dynamodb"), pooled.client("sqs")

            def get() -> None:
                ran_in.add(threading.current_thread().name)
                dynamodb.get_item(TableName=TABLE, Key=KEY)

            with ThreadPoolExecutor(2) as pool:  # both calls wait at their gates at once
                for future in [
                    pool.submit(get),
                    pool.submit(sqs.send_message, QueueUrl=url, MessageBody="m"),
                ]:
                    future.result()

        return (
            [
                Actor("pool", fan_out, [pooled]),
                Actor(
                    "solo",
                    lambda: solo.client("dynamodb").get_item(TableName=TABLE, Key=KEY),
                    [solo],
                ),
            ],
            lambda result: (result.outcome("pool"), result.outcome("solo")),
        )

    report = explore(scenario, exhaustive())
    assert_all_pass(report)
    # Three calls, all candidates at the first step: 3! orders.
    assert (report.schedules, report.distinct, report.exhausted) == (6, 6, True)
    assert {letters(t) for t in report.traces} == {"pps", "psp", "spp"}
    assert all(
        {str(s) for s in t if s.actor == "pool"}
        == {"pool: dynamodb.GetItem", "pool: sqs.SendMessage"}
        for t in report.traces
    )
    assert ran_in and all(name.startswith("ThreadPoolExecutor") for name in ran_in)


def test_s3transfer_worker_threads_are_gated(ddb: BaseClient) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="uploads")
    data = os.urandom(5 * MIB + 1)  # two parts, uploaded by two s3transfer threads

    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        s = interleave.session()
        config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)

        def upload() -> None:
            s.client("s3").upload_fileobj(io.BytesIO(data), "uploads", "k", Config=config)

        def check(result: Result) -> None:
            result.outcome("up")
            assert s3.get_object(Bucket="uploads", Key="k")["Body"].read() == data

        return [Actor("up", upload, [s])], check

    report = explore(scenario, exhaustive())
    assert_all_pass(report)
    assert (report.schedules, report.distinct) == (2, 1)  # the two parts, in either order
    assert [s.operation for s in report.traces[0]] == [
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]


# -- an actor that makes no progress ------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["event", "sleep"])
def test_a_stuck_actor_is_named_within_the_timeout(ddb: BaseClient, how: str) -> None:
    never = threading.Event()

    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        stuck, fine = interleave.session(), interleave.session()
        # Made here, so that the timeout is all the actors' own.
        stuck_client, fine_client = stuck.client("dynamodb"), fine.client("dynamodb")

        def hang() -> None:
            stuck_client.get_item(TableName=TABLE, Key=KEY)
            if how == "event":
                never.wait()
            else:
                time.sleep(1)  # the subject of the test: a handler that sleeps

        return (
            [
                Actor("stuck", hang, [stuck]),
                Actor("fine", lambda: fine_client.get_item(TableName=TABLE, Key=KEY), [fine]),
            ],
            lambda result: None,
        )

    try:
        with pytest.raises(ScheduleError) as caught:
            explore(scenario, exhaustive(), timeout=0.5)
    finally:
        never.set()
    # The error says the explorer gave up at its own timeout; had it waited for the stuck
    # actor instead, "event" would hang until the test's timeout, "sleep" would pass and not raise
    message = str(caught.value)
    assert "no progress within 0.5s after step" in message
    assert (
        "actor 'stuck' has neither reached an AWS call nor finished "
        "(last step: stuck: dynamodb.GetItem)"
    ) in message
    assert "test_interleave.py" in message and "in hang" in message
    if how == "sleep":
        assert "thread 'stuck' (actor 'stuck') is still running" in message


# -- the scheduler's look at threads, while a collection runs finalizers -------------------------

# Garbage whose finalizer starts a thread and leaves the next such garbage: every collection
# does what one freeing handlers' thread pools may do, run Python code (their weakref
# callbacks) while threads start and end. Then the scheduler's look at every thread, which
# makes frame objects for the threads that wait.
LOOK_WHILE_COLLECTING = """
import gc, threading
from tests import interleave

class Garbage:
    armed = True

    def __init__(self):
        self.cycle = self  # only the collector frees it

    def __del__(self):
        if Garbage.armed:
            Garbage()
            started = threading.Thread(target=lambda: None)
            started.start()
            started.join()

release = threading.Event()
for _ in range(3):
    threading.Thread(target=release.wait, daemon=True).start()
gc.collect()
gc.set_threshold(1)  # every allocation of a tracked object collects
Garbage()
interleave._frames()
Garbage.armed = False
release.set()
print("looked")
"""


def test_looking_at_threads_while_a_collection_starts_one_does_not_deadlock() -> None:
    # In a process of its own: before the fix, sys._current_frames() ran the collection while
    # holding the runtime's list of threads, and the new thread waited for that lock forever
    # with the GIL held, where no timeout of this process could end it.
    try:
        done = subprocess.run(
            [sys.executable, "-c", LOOK_WHILE_COLLECTING],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("deadlocked: the look at threads ran the collector")
    assert (done.returncode, done.stdout) == (0, "looked\n"), done.stderr


def test_sessions_must_come_from_interleave(ddb: BaseClient) -> None:
    plain = boto3.session.Session()
    with pytest.raises(ValueError, match="not made by interleave.session"):
        crash_at(plain, 1, "before")
    with pytest.raises(ValueError, match="not made by interleave.session"):
        explore(lambda: ([Actor("a", lambda: None, [plain])], lambda result: None))
    shared = interleave.session()
    with pytest.raises(ValueError, match="new sessions of its own"):
        explore(
            lambda: (
                [Actor("a", lambda: None, [shared]), Actor("b", lambda: None, [shared])],
                lambda result: None,
            )
        )


# -- crashes ------------------------------------------------------------------------------------


def put(client: BaseClient, key: str) -> None:
    client.put_item(TableName=TABLE, Item={"k": {"S": key}})


def write_two(s: boto3.session.Session) -> str:
    """Two writes, and a third in `finally`; an `except Exception` that would hide a crash."""
    client = s.client("dynamodb")
    try:
        put(client, "first")
        put(client, "second")
    except Exception:
        return "swallowed"
    finally:
        put(client, "cleanup")
    return "done"


@pytest.mark.parametrize("mode, second_written", [("before", False), ("after", True)])
def test_crash_at(ddb: BaseClient, mode: str, second_written: bool) -> None:
    s = interleave.session()
    crash_at(s, 2, mode)
    with pytest.raises(Crashed, match=f"crashed {mode}"):
        write_two(s)
    assert item(ddb, "first") is not None
    assert (item(ddb, "second") is not None) is second_written
    assert item(ddb, "cleanup") is None  # a killed process runs no cleanup
    assert calls(s) == 2


def test_crash_loop_ends_when_a_run_makes_fewer_calls(ddb: BaseClient) -> None:
    for k in itertools.count(1):
        s = interleave.session()
        crash_at(s, k, "after")
        try:
            assert write_two(s) == "done"
        except Crashed:
            pass
        if calls(s) < k:
            break
    assert k == 4  # write_two makes three calls


def test_a_crashed_actor_finishes_with_crashed(ddb: BaseClient) -> None:
    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        for key in ("first", "second", "cleanup"):
            ddb.delete_item(TableName=TABLE, Key={"k": {"S": key}})
        writer, reader = interleave.session(), interleave.session()
        crash_at(writer, 1, "after")

        def check(result: Result) -> None:
            assert isinstance(result.raised["writer"], Crashed)
            assert [s.actor for s in result.trace].count("writer") == 1  # no call after
            assert (item(ddb, "first"), item(ddb, "cleanup")) == ({"k": {"S": "first"}}, None)
            assert result.outcome("reader") is not None

        return (
            [
                Actor("writer", functools.partial(write_two, writer), [writer]),
                Actor(
                    "reader",
                    lambda: reader.client("dynamodb").get_item(TableName=TABLE, Key=KEY),
                    [reader],
                ),
            ],
            check,
        )

    report = explore(scenario, exhaustive())
    assert_all_pass(report)
    assert (report.schedules, report.exhausted) == (2, True)


def test_a_crash_in_one_thread_stops_the_actors_other_threads(ddb: BaseClient) -> None:
    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        for key in ("x", "y"):
            ddb.delete_item(TableName=TABLE, Key={"k": {"S": key}})
        pooled, other = interleave.session(), interleave.session()
        crash_at(pooled, 1, "before")

        def fan_out() -> None:
            client = pooled.client("dynamodb")
            with ThreadPoolExecutor(2) as pool:
                for future in [pool.submit(put, client, key) for key in ("x", "y")]:
                    future.result()

        def check(result: Result) -> None:
            assert isinstance(result.raised["pool"], Crashed)
            assert (item(ddb, "x"), item(ddb, "y")) == (None, None)  # neither call was made
            result.outcome("other")

        return (
            [
                Actor("pool", fan_out, [pooled]),
                Actor(
                    "other",
                    lambda: other.client("dynamodb").get_item(TableName=TABLE, Key=KEY),
                    [other],
                ),
            ],
            check,
        )

    report = explore(scenario, exhaustive())
    assert_all_pass(report)
    # The first step is x, y or other's call; the first pool call crashes the pool at once.
    assert sorted(map(letters, report.traces)) == ["op", "op", "po", "po"]
    assert report.schedules == 4


# -- lost answers -------------------------------------------------------------------------------


def claim(client: BaseClient, operation: str) -> None:
    """Create the item only if it does not exist, as a worker claims a job."""
    common = {
        "TableName": TABLE,
        "ConditionExpression": "attribute_not_exists(k)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if operation == "PutItem":
        client.put_item(Item={**KEY, "owner": {"S": "me"}}, **common)
    else:
        client.update_item(
            Key=KEY,
            UpdateExpression="SET #o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": {"S": "me"}},
            **common,
        )


@pytest.mark.parametrize("operation", ["PutItem", "UpdateItem"])
def test_a_lost_answer_makes_a_claim_fail_against_itself(ddb: BaseClient, operation: str) -> None:
    s = interleave.session()
    lose_answer(s, 1)
    with pytest.raises(ClientError) as caught:
        claim(s.client("dynamodb"), operation)
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert caught.value.response["Item"] == {**KEY, "owner": {"S": "me"}}  # its own write
    assert calls(s) == 1


def test_a_lost_answer_is_one_step(ddb: BaseClient) -> None:
    def scenario() -> tuple[list[Actor], Callable[[Result], None]]:
        ddb.delete_item(TableName=TABLE, Key=KEY)
        s = interleave.session()
        lose_answer(s, 1)

        def check(result: Result) -> None:
            assert result.trace == [Step("claimer", "dynamodb", "PutItem")]
            assert "ConditionalCheckFailed" in str(result.raised["claimer"])

        return [Actor("claimer", lambda: claim(s.client("dynamodb"), "PutItem"), [s])], check

    assert_all_pass(explore(scenario, exhaustive()))
