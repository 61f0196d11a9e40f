"""Every branch of the restore handler, against moto in process with the Glacier emulation."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from localaws import settings as local_settings
from tests.conftest import NOW, LostAnswers, Stack, archive_job, job, message, put_job, set_role
from tests.pipeline import Pipeline
from util import retrieval
from util.helpers import Annotations, InvalidMessage
from util.leases import RETRIEVAL_CLAIM
from util.restore.restore import Restorer
from util.retrieval import is_claim
from util.schema import ARCHIVE_ID, RESTORE_EXPIRES, RESTORE_JOB_ID, RESTORE_TIER


@pytest.fixture
def premium_alice(stack: Stack) -> dict[str, bytes]:
    """Three of u-alice's results archived while she was free; she has just upgraded."""
    results = {job_id: archive_job(stack, job_id) for job_id in ("j1", "j2", "j3")}
    set_role(stack, "u-alice", "premium_user")
    return results


def restorer(stack: Stack, clock: float = NOW) -> Restorer:
    return Restorer(stack.config, stack.aws, clock=lambda: clock)


def glacier_jobs(stack: Stack) -> list[dict]:
    return stack.client("glacier").list_jobs(vaultName=stack.config.gas.vault)["JobList"]


def restore(stack: Stack, handler: Restorer | None = None, user_id: str = "u-alice"):
    return (handler or restorer(stack))(message(user_id=user_id))


def claimed_elsewhere(stack: Stack, job_id: str) -> None:
    """Another worker's live retrieval claim on the job ("claim:other", 120 s from NOW)."""
    stack.client("dynamodb").update_item(
        TableName=stack.config.gas.annotations_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET #j = :c, #e = :e",
        ExpressionAttributeNames={"#j": RESTORE_JOB_ID, "#e": RESTORE_EXPIRES},
        ExpressionAttributeValues={":c": {"S": "claim:other"}, ":e": {"N": str(int(NOW) + 120)}},
    )


def requests_sent(client, operation: str) -> list:
    """Every HTTP request of `operation` the client sends from now on, botocore's retries
    included (the process shares the client)."""
    sent: list = []
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(
        f"before-send.{service}.{operation}", lambda request, **_: sent.append(request)
    )
    return sent


def fail_calls(client, method: str, code: str, times: int, status: int = 400) -> None:
    """Make the next `times` calls of a client method raise Glacier's error `code`, refused
    with HTTP `status` before anything happened.

    Patched on the client, not injected with a before-send hook: in process, moto's own
    before-send handler would still carry the call out.
    """
    real = getattr(client, method)
    left = [times]

    def call(**kwargs):
        if left[0] > 0:
            left[0] -= 1
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": "injected"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
                method,
            )
        return real(**kwargs)

    setattr(client, method, call)


# -- starting retrievals ----------------------------------------------------------------------


def test_every_archived_result_gets_an_expedited_retrieval_that_names_its_job(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given a premium user with three archived results and one that was never archived
    put_job(stack, job_id="j4")
    # When the restore message is handled
    outcome = restore(stack)
    # Then one Expedited retrieval per archived result is recorded on its item
    assert (outcome.action, outcome.reason) == ("done", "3 started Expedited")
    jobs = {j["JobId"]: j for j in glacier_jobs(stack)}
    assert len(jobs) == 3
    thaw_topic = stack.client("sns").create_topic(Name=stack.config.gas.thaw_topic)["TopicArn"]
    for job_id in premium_alice:
        item = job(stack, job_id)
        glacier_job = jobs[item[RESTORE_JOB_ID]]
        assert item[RESTORE_TIER] == "Expedited" == glacier_job["Tier"]
        # The job carries the job id (and a request token), and announces completion on the
        # thaw topic
        assert json.loads(glacier_job["JobDescription"])["job_id"] == job_id
        assert glacier_job["ArchiveId"] == item[ARCHIVE_ID]
        assert glacier_job["SNSTopic"] == thaw_topic
    assert RESTORE_JOB_ID not in job(stack, "j4")


def test_no_expedited_capacity_falls_back_to_standard_after_one_ask(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    local_settings.configure(expedited_capacity=False)
    handler = restorer(stack)
    asks = requests_sent(handler.retrievals.backend.vault.glacier, "InitiateJob")
    outcome = restore(stack, handler)
    assert (outcome.action, outcome.reason) == ("done", "3 started Standard")
    assert sorted(j["Tier"] for j in glacier_jobs(stack)) == ["Standard"] * 3
    # A capacity refusal is an answer, not a fault: botocore does not ask again
    tiers = [json.loads(request.body)["Tier"] for request in asks]
    assert sorted(tiers) == ["Expedited"] * 3 + ["Standard"] * 3


def test_a_message_sent_moments_ago_is_looked_at_again_once_the_index_has_settled(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given a restore message sent a moment ago: the user_id_index (eventually consistent) may
    # not show yet an archive recorded just before the upgrade
    settle = stack.config.restore.index_settle_seconds
    young = message(user_id="u-alice")
    young.sent_at = NOW - 1
    # When restore handles it, it starts what it finds and looks again a settle later
    outcome = restorer(stack)(young)
    assert (outcome.action, outcome.delay) == ("defer", settle)
    assert outcome.reason.startswith("3 started Expedited")
    # And once the message is that old, the look it takes is the last one
    later = restorer(stack, clock=NOW + settle)(young)
    assert (later.action, later.reason) == ("done", "3 in progress")


def test_a_young_copy_delivered_before_is_the_second_look(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # The deferral is a copy sent again: as young as the first (its own SentTimestamp), and
    # the last look all the same, whatever the clocks of the host and SQS say
    copy = message(user_id="u-alice")
    copy.sent_at, copy.attributes = NOW, {"gas_retries": {"DataType": "Number", "StringValue": "0"}}
    assert restorer(stack)(copy).action == "done"


def test_a_user_without_archives_is_looked_at_again_too(stack: Stack) -> None:
    set_role(stack, "u-alice", "premium_user")
    young = message(user_id="u-alice")
    young.sent_at = NOW
    outcome = restorer(stack)(young)
    assert outcome.action == "defer" and outcome.reason.startswith("no archived results")


def test_any_other_expedited_error_is_a_retry_not_a_downgrade(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    handler = restorer(stack)
    fail_calls(
        handler.retrievals.backend.vault.glacier,
        "initiate_job",
        "ServiceUnavailableException",
        status=503,
        times=3,
    )
    outcome = restore(stack, handler)
    assert outcome.action == "retry" and "3 not started" in outcome.reason
    assert glacier_jobs(stack) == []
    # The claims were released: a redelivery need not wait for them to lapse
    assert all(RESTORE_JOB_ID not in job(stack, j) for j in premium_alice)
    assert restore(stack, handler).reason == "3 started Expedited"


def test_a_crash_half_way_is_finished_by_the_redelivery(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given a first attempt that started only some retrievals
    handler = restorer(stack)
    fail_calls(
        handler.retrievals.backend.vault.glacier, "initiate_job", "ThrottlingException", times=1
    )
    assert restore(stack, handler).reason.startswith("1 not started")
    assert len(glacier_jobs(stack)) == 2
    # When the message is delivered again
    outcome = restore(stack, handler)
    # Then only the missing retrieval is started
    assert outcome.reason == "2 in progress, 1 started Expedited"
    assert len(glacier_jobs(stack)) == 3


def test_a_second_message_starts_no_duplicate(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    restore(stack)
    outcome = restore(stack)
    assert (outcome.action, outcome.reason) == ("done", "3 in progress")
    assert len(glacier_jobs(stack)) == 3


def test_two_workers_at_once_start_one_retrieval_per_result(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    outcomes = []
    together = threading.Barrier(2)

    def run(handler: Restorer) -> None:
        together.wait()
        outcomes.append(restore(stack, handler))

    threads = [threading.Thread(target=run, args=(restorer(stack),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(glacier_jobs(stack)) == 3
    assert all(outcome.action in ("done", "defer") for outcome in outcomes), outcomes


def test_a_result_another_worker_is_starting_is_looked_at_again_when_its_claim_lapses(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given another worker that claimed j1 and died before starting its retrieval
    claimed_elsewhere(stack, "j1")
    # When restore runs (and has waited for that claim as long as it waits)
    handler = restorer(stack)
    handler.retrievals.claim_wait_seconds = 0
    outcome = restore(stack, handler)
    # Then the others are started and the message comes back once the claim has lapsed
    assert outcome.action == "defer" and outcome.delay == 121
    assert outcome.reason == "1 claimed elsewhere, 2 started Expedited"
    later = restore(stack, restorer(stack, clock=NOW + 121))
    assert later.reason == "2 in progress, 1 started Expedited"


def test_a_claim_let_go_while_it_is_waited_for_is_taken_again(
    stack: Stack, premium_alice: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another worker's live claim on j1, let go (its start failed, or the sweep cleared
    # it) while this worker waits for it
    claimed_elsewhere(stack, "j1")
    other = Annotations(stack.aws, stack.config.gas.annotations_table)
    waits = SimpleNamespace(
        monotonic=time.monotonic,
        sleep=lambda _: RETRIEVAL_CLAIM.release(other, "j1", "claim:other"),
    )
    monkeypatch.setattr(retrieval, "time", waits)
    # When restore runs
    outcome = restore(stack)
    # Then j1's retrieval is started too: nothing is in progress for it
    assert (outcome.action, outcome.reason) == ("done", "3 started Expedited")
    assert len(glacier_jobs(stack)) == 3
    assert not is_claim(job(stack, "j1")[RESTORE_JOB_ID])


def test_a_failed_start_releases_only_its_own_claim(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given a worker whose claim on j1 lapsed, and another worker's claim on it since
    claimed_elsewhere(stack, "j1")
    # When the first worker's InitiateJob fails and it lets go of its claim
    restorer(stack).retrievals.release("j1", "claim:mine")
    # Then the other worker's claim stands: its retrieval is not started a second time
    assert job(stack, "j1")[RESTORE_JOB_ID] == "claim:other"


def test_a_lapsed_retrieval_is_started_again(stack: Stack, premium_alice: dict[str, bytes]) -> None:
    restore(stack)
    lifetime = stack.config.restore.retrieval_lifetime_seconds
    outcome = restore(stack, restorer(stack, clock=NOW + lifetime + 1))
    assert outcome.reason == "3 started Expedited"
    assert len(glacier_jobs(stack)) == 6


def test_all_pages_of_a_users_jobs_are_followed(stack: Stack) -> None:
    for i in range(7):
        archive_job(stack, f"j{i}", size=10)
    set_role(stack, "u-alice", "premium_user")
    stack.config.restore.page_size = 2
    assert restore(stack).reason == "7 started Expedited"


def test_a_user_with_nothing_archived_is_done(stack: Stack) -> None:
    assert restore(stack, user_id="u-bob").reason == "no archived results"


# -- messages that must not start paid retrievals ----------------------------------------------


def test_a_free_user_is_invalid_and_nothing_is_started(stack: Stack) -> None:
    archive_job(stack)
    with pytest.raises(InvalidMessage, match="user u-alice is not premium"):
        restore(stack)
    assert glacier_jobs(stack) == []


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"user_id": "u-nobody"}, "unknown user u-nobody"),
        ({"job_id": "j1"}, "field 'user_id' missing"),
        ({"user_id": 7}, "field 'user_id' missing"),
    ],
)
def test_malformed_or_unknown_is_invalid(stack: Stack, body: dict, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        restorer(stack)(message(**body))


# -- answers lost ------------------------------------------------------------------------------


def test_a_lost_answer_to_the_claim_still_starts_the_retrieval(
    stack: Stack, premium_alice: dict[str, bytes], lost_answers: LostAnswers
) -> None:
    # The claim is written, its answer lost, and botocore's retry finds our own claim there
    lost_answers.add(
        "UpdateItem",
        when=lambda p: p["ExpressionAttributeNames"].get("#lease_holder") == RESTORE_JOB_ID,
    )
    handler = restorer(stack)
    handler.retrievals.claim_wait_seconds = 0
    outcome = restore(stack, handler)
    assert lost_answers.hits == [("UpdateItem", "retry")]
    assert (outcome.action, outcome.reason) == ("done", "3 started Expedited")
    assert len(glacier_jobs(stack)) == 3


def test_a_lost_answer_to_the_record_is_not_a_lapsed_claim(
    stack: Stack,
    premium_alice: dict[str, bytes],
    lost_answers: LostAnswers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost_answers.add(
        "UpdateItem", when=lambda p: p["UpdateExpression"].startswith("SET #job = :retrieval")
    )
    outcome = restore(stack)
    assert (outcome.action, outcome.reason) == ("done", "3 started Expedited")
    assert "lapsed" not in caplog.text
    recorded = {job(stack, j)[RESTORE_JOB_ID] for j in premium_alice}
    assert recorded == {j["JobId"] for j in glacier_jobs(stack)}


def test_a_lost_answer_to_initiate_job_starts_no_second_retrieval(
    stack: Stack, premium_alice: dict[str, bytes], lost_answers: LostAnswers
) -> None:
    # Given InitiateJob takes effect but its answer is lost, and botocore gives up (its
    # attempts used up). (When botocore sends it again, see tests/integration: in process,
    # moto carries out a request whatever answers it first.)
    then = "raise"
    lost_answers.add("InitiateJob", then=then)
    # When restore runs until it is done
    pipeline = Pipeline(stack)
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url(stack.config.restore.queue),
        MessageBody=json.dumps({"user_id": "u-alice"}),
    )
    pipeline.settle(utilities=("restore",))
    # Then each result has exactly one retrieval, the one its item records
    assert lost_answers.hits == [("InitiateJob", then)]
    jobs = glacier_jobs(stack)
    assert len(jobs) == 3
    assert {job(stack, j)[RESTORE_JOB_ID] for j in premium_alice} == {j["JobId"] for j in jobs}


# -- the retrieval record: only for an archived result, only over our own claim ----------------


def test_a_stopping_worker_starts_no_more_retrievals(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    msg = message(user_id="u-alice")
    msg.cancelled.set()  # the drain grace is ending
    outcome = restorer(stack)(msg)
    assert outcome.action == "retry" and "worker stopping" in outcome.reason
    assert glacier_jobs(stack) == []


def thaw_record(stack: Stack, job_id: str) -> None:
    """What thaw's record leaves: the item no longer names an archive or a retrieval."""
    Annotations(stack.aws, stack.config.gas.annotations_table).update_if(
        job_id,
        "REMOVE #a, #j, #t, #e",
        "attribute_exists(#a)",
        {"#a": ARCHIVE_ID, "#j": RESTORE_JOB_ID, "#t": RESTORE_TIER, "#e": RESTORE_EXPIRES},
    )


def test_a_result_thawed_since_the_index_was_read_is_not_retrieved_again(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given j1 as the index still shows it (archived), though another retrieval has thawed it
    stale = job(stack, "j1")
    thaw_record(stack, "j1")
    # When a retrieval of it is started from that stale view
    start = restorer(stack).retrievals.start(stale)
    # Then none is: its archive is no longer the job's, and the item records nothing
    assert start.status == "not archived"
    assert glacier_jobs(stack) == []
    assert RESTORE_JOB_ID not in job(stack, "j1")


def test_a_retrieval_is_not_recorded_on_a_result_thawed_while_it_was_started(
    stack: Stack, premium_alice: dict[str, bytes]
) -> None:
    # Given a result thawed (by an earlier retrieval) while ours is being started
    handler = restorer(stack)
    backend = handler.retrievals.backend
    start_retrieval = backend.start_retrieval

    def thawed_meanwhile(archive_id: str, job_id: str, tier: str) -> str:
        retrieval_id = start_retrieval(archive_id, job_id, tier)
        thaw_record(stack, job_id)
        return retrieval_id

    backend.start_retrieval = thawed_meanwhile
    # When it is recorded
    start = handler.retrievals.start(job(stack, "j1"))
    # Then the thawed item is left as thaw left it: no retrieval, no expiry
    assert start.status == "started"
    item = job(stack, "j1")
    assert RESTORE_JOB_ID not in item and RESTORE_EXPIRES not in item
