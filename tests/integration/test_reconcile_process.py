"""Reconcile as a real process against the local stack server, the utilities consuming what
it sends as real processes too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import (
    NOW,
    ROOT,
    Server,
    UtilityProcess,
    job,
    put_job,
    result_bytes,
    result_exists,
    run_once,
    set_role,
    wait_for,
)
from util.helpers import Annotations
from util.reconcile.report import (
    ARCHIVE_NOT_REQUESTED,
    KINDS,
    LOST,
    ORPHAN_ARCHIVE,
    RESTORE_NOT_REQUESTED,
    RESULT_NOT_DELETED,
    RETRIEVAL_LAPSED,
    STALE_CLAIM,
)
from util.schema import (
    ARCHIVE_ID,
    ARCHIVE_UPLOAD,
    NOTIFY_CLAIM,
    NOTIFY_CLAIM_EXPIRES,
    RESTORE_EXPIRES,
    RESTORE_JOB_ID,
    RESULT_KEY,
)

# Jobs completed this long ago are past grace + slack + visibility timeout (300 + 3600 + 60).
LONG_AGO = NOW - 10_000
VAULT = {"GAS_LOCAL_STANDARD_SECONDS": "0"}  # inventories (Standard) finish at once
S3 = {"GAS_GAS_ARCHIVE_BACKEND": "s3"}
BACKENDS = pytest.mark.parametrize("stack_settings", [VAULT, {**S3, **VAULT}], ids=["vault", "s3"])


@dataclass
class Pass:
    code: int
    report: dict[str, Any]
    stderr: str

    def kinds(self) -> dict[str, list[str]]:
        """kind -> the job ids of its findings."""
        found: dict[str, list[str]] = {}
        for finding in self.report["findings"]:
            found.setdefault(finding["kind"], []).append(finding["job_id"])
        return found


def reconcile(*args: str, **settings: str) -> Pass:
    """`python -m util.reconcile --format json` against the stack; its exit code and report."""
    env = {**os.environ, **{f"GAS_{k.upper()}": v for k, v in settings.items()}}
    done = subprocess.run(
        [sys.executable, "-m", "util.reconcile", "--format", "json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout, done.stderr
    return Pass(done.returncode, json.loads(done.stdout), done.stderr)


def set_item(stack: Server, job_id: str, **values: Any) -> None:
    jobs = Annotations(stack.aws, stack.config.gas.annotations_table)
    jobs.put({**jobs.get(job_id), **values})


def archive(stack: Server, tmp_path, *job_ids: str, user_id: str = "u-alice") -> None:
    """The archive utility archives the jobs (sent their archive messages, grace 0)."""
    for job_id in job_ids:
        stack.client("sqs").send_message(
            QueueUrl=stack.queue_url(stack.config.archive.queue),
            MessageBody=json.dumps({"job_id": job_id, "user_id": user_id}),
        )
    run_once("archive", tmp_path, archive_grace_seconds="0")
    assert all(ARCHIVE_ID in job(stack, job_id) for job_id in job_ids)


def queue_depth(stack: Server, queue: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(map(int, attributes.values()))


def archive_keys(stack: Server) -> list[str]:
    listing = stack.client("s3").list_objects_v2(Bucket=stack.config.gas.archive_bucket)
    return [o["Key"] for o in listing.get("Contents", [])]


def vault_orphan(stack: Server, job_id: str) -> str:
    """An archive in the vault, described as archive describes its own, that no job names."""
    return stack.client("glacier").upload_archive(
        vaultName=stack.config.gas.vault,
        body=b"orphan bytes",
        archiveDescription=json.dumps({"job_id": job_id, "user_id": "u-alice"}),
    )["archiveId"]


def s3_orphan(stack: Server, job_id: str) -> str:
    key = f"{stack.config.gas.archive_prefix}{job_id}/0123456789abcdef0123456789abcdef"
    stack.client("s3").put_object(
        Bucket=stack.config.gas.archive_bucket,
        Key=key,
        Body=b"orphan bytes",
        StorageClass="GLACIER",
    )
    return key


def orphan(stack: Server, job_id: str) -> str:
    if stack.config.gas.archive_backend == "s3":
        return s3_orphan(stack, job_id)
    return vault_orphan(stack, job_id)


def archive_exists(stack: Server, archive_id: str) -> bool:
    if stack.config.gas.archive_backend == "s3":
        return archive_id in archive_keys(stack)
    return bool(reconcile_inventory_has(stack, archive_id))


def reconcile_inventory_has(stack: Server, archive_id: str) -> bool:
    """Whether a fresh inventory of the vault lists the archive."""
    glacier, vault = stack.client("glacier"), stack.config.gas.vault
    job_id = glacier.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})[
        "jobId"
    ]
    wait_for(
        lambda: glacier.describe_job(vaultName=vault, jobId=job_id)["Completed"], what="inventory"
    )
    output = json.load(glacier.get_job_output(vaultName=vault, jobId=job_id)["body"])
    return any(a["ArchiveId"] == archive_id for a in output["ArchiveList"])


# -- repairs, the utilities consuming what reconcile sends -------------------------------------


@BACKENDS
def test_a_job_whose_archive_message_was_never_sent_ends_up_archived(
    server: Server, tmp_path
) -> None:
    # Given a free user's job finished long ago whose archive message the annotator never sent
    put_job(server, "j1", complete_time=LONG_AGO)
    # And one still inside grace + slack: its archive message may well be on its way
    put_job(server, "j2", complete_time=NOW - 600)
    # When a dry run looks
    dry = reconcile()
    # Then it names the job, exits 4 (findings left), and sends nothing
    assert dry.code == 4, dry.stderr
    assert dry.kinds() == {ARCHIVE_NOT_REQUESTED: ["j1"]}
    assert queue_depth(server, server.config.archive.queue) == 0
    # When it repairs, and the archive utility consumes its queue
    repaired = reconcile("--repair")
    assert repaired.code == 0, repaired.stderr
    assert repaired.report["findings"][0]["action"] == "done: sent the archive message"
    run_once("archive", tmp_path)
    # Then the job is archived and its S3 result gone; a later pass finds nothing
    assert ARCHIVE_ID in job(server, "j1") and not result_exists(server, "j1")
    assert ARCHIVE_ID not in job(server, "j2")
    again = reconcile()
    assert (again.code, again.kinds()) == (0, {}), again.report


@BACKENDS
def test_an_archived_result_left_in_s3_is_deleted_by_archive(server: Server, tmp_path) -> None:
    # Given a job archived, whose S3 result came back as the very same object (a worker died
    # between recording the archive and deleting the result, and S3 kept it)
    data = put_job(server, "j1", complete_time=LONG_AGO)
    archive(server, tmp_path, "j1")
    item = job(server, "j1")
    server.client("s3").put_object(
        Bucket=server.config.gas.results_bucket, Key=item[RESULT_KEY], Body=data
    )
    # When reconcile repairs, and archive consumes its queue
    repaired = reconcile("--repair")
    assert repaired.kinds() == {RESULT_NOT_DELETED: ["j1"]}, repaired.report
    run_once("archive", tmp_path)
    # Then archive finished the deletion, and the archive is still named
    assert not result_exists(server, "j1")
    assert job(server, "j1")[ARCHIVE_ID] == item[ARCHIVE_ID]


@BACKENDS
def test_a_premium_user_whose_restore_message_was_lost_gets_the_results_back(
    server: Server, tmp_path
) -> None:
    # Given two of a free user's results archived
    originals = {j: put_job(server, j, complete_time=LONG_AGO) for j in ("j1", "j2")}
    archive(server, tmp_path, "j1", "j2")
    # And the user upgraded, but the web app's restore message never arrived; j2 even had a
    # retrieval recorded once, long lapsed (its completion notice lost)
    set_role(server, "u-alice", "premium_user")
    set_item(
        server, "j2", **{RESTORE_JOB_ID: "a-retrieval-long-gone", RESTORE_EXPIRES: int(NOW) - 60}
    )
    # When reconcile repairs, and restore and thaw do their work
    repaired = reconcile("--repair")
    assert repaired.code == 0, repaired.stderr
    assert repaired.kinds() == {RESTORE_NOT_REQUESTED: ["j1"], RETRIEVAL_LAPSED: ["j2"]}
    # (one restore message for the user, which starts both)
    assert queue_depth(server, server.config.restore.queue) == 1
    run_once("restore", tmp_path)
    thaw = UtilityProcess("thaw", tmp_path / "thaw.log")
    wait_for(
        lambda: all(ARCHIVE_ID not in job(server, j) for j in originals),
        timeout=60,
        what="both results thawed",
    )
    assert thaw.stop() == 0, thaw.log
    # Then both results are back, byte for byte, and a later pass finds nothing
    assert {j: result_bytes(server, j) for j in originals} == originals
    assert reconcile().kinds() == {}


def test_passes_in_a_row_send_one_restore_message_until_its_grace_is_over(
    server: Server, tmp_path
) -> None:
    # Given a premium user's archived result whose restore message never arrived
    put_job(server, "j1", complete_time=LONG_AGO)
    archive(server, tmp_path, "j1")
    set_role(server, "u-alice", "premium_user")
    # When two passes repair in a row, restore not yet at the first one's message
    first, second = reconcile("--repair"), reconcile("--repair")
    # Then one restore message was sent, the second pass waits for it, and both exit 0
    assert queue_depth(server, server.config.restore.queue) == 1
    assert [f["action"] for f in first.report["findings"]] == ["done: sent the restore message"]
    [waiting] = second.report["findings"]
    assert (waiting["kind"], waiting["job_id"]) == (RESTORE_NOT_REQUESTED, "j1")
    assert waiting["action"].startswith("waits until "), waiting
    assert (first.code, second.code) == (0, 0), second.stderr
    # When that message is lost, a pass once the grace is over sends another, which restore
    # takes: its retrieval is started, and the next pass finds nothing
    server.client("sqs").purge_queue(QueueUrl=server.queue_url(server.config.restore.queue))
    again = reconcile("--repair", reconcile_restore_grace_seconds="0")
    assert [f["action"] for f in again.report["findings"]] == ["done: sent the restore message"]
    run_once("restore", tmp_path)
    assert RESTORE_JOB_ID in job(server, "j1")
    assert reconcile().kinds() == {}


@BACKENDS
def test_an_orphan_archive_is_deleted_only_after_the_safety_age(server: Server, tmp_path) -> None:
    # Given an archive no job names (its job is gone), one of a job whose vault upload is
    # recorded as about to be completed, and a job archived as it should be
    stray = orphan(server, "j-deleted")
    put_job(server, "j1", complete_time=LONG_AGO)
    archive(server, tmp_path, "j1")
    named = job(server, "j1")[ARCHIVE_ID]
    upload = {"etag": "x", "upload": {"upload_id": "u", "size": 1, "tree_hash": "t"}}
    put_job(server, "j2", user_id="u-bob", complete_time=LONG_AGO, **{ARCHIVE_UPLOAD: upload})
    pending = orphan(server, "j2")
    first = reconcile("--repair")  # the vault: starts the inventory the next pass reads
    # When reconcile repairs with the default safety age (a day)
    young = reconcile("--repair")
    # Then nothing is deleted: the orphan is too young
    assert (young.code, young.kinds()) == (0, {}), young.report
    assert archive_exists(server, stray)
    # When the safety age is over (0 here), a dry run names it and deletes nothing
    dry = reconcile(reconcile_orphan_age_seconds="0")
    assert dry.kinds() == {ORPHAN_ARCHIVE: ["j-deleted"]}, (first.report, dry.report)
    assert archive_exists(server, stray)
    # And a repair deletes it, and only it
    old = reconcile("--repair", reconcile_orphan_age_seconds="0")
    assert old.kinds() == {ORPHAN_ARCHIVE: ["j-deleted"]} and old.code == 0, old.report
    assert not archive_exists(server, stray)
    assert archive_exists(server, named) and archive_exists(server, pending)


@pytest.mark.parametrize("stack_settings", [VAULT], ids=["vault"])
def test_archives_thawed_since_the_inventory_are_not_reported_as_orphans(
    server: Server, tmp_path
) -> None:
    # Given two results archived in the vault, an archive no job names, and an inventory
    # taken then (the first pass starts it)
    originals = {j: put_job(server, j, complete_time=LONG_AGO) for j in ("j1", "j2")}
    archive(server, tmp_path, "j1", "j2")
    stray = vault_orphan(server, "j-gone")
    assert reconcile("--repair", reconcile_orphan_age_seconds="0").kinds() == {}
    # When the user upgrades, and restore and thaw bring both results back, deleting their
    # archives
    set_role(server, "u-alice", "premium_user")
    server.client("sqs").send_message(
        QueueUrl=server.queue_url(server.config.restore.queue),
        MessageBody=json.dumps({"user_id": "u-alice"}),
    )
    run_once("restore", tmp_path)
    thaw = UtilityProcess("thaw", tmp_path / "thaw.log")
    wait_for(
        lambda: all(ARCHIVE_ID not in job(server, j) for j in originals),
        timeout=60,
        what="both results thawed",
    )
    assert thaw.stop() == 0, thaw.log
    assert {j: result_bytes(server, j) for j in originals} == originals
    # And a pass reads the inventory taken before, which still lists their archives
    swept = reconcile("--repair", reconcile_orphan_age_seconds="0")
    # Then only the archive no job names is reported as an orphan, and deleted
    assert (swept.code, swept.kinds()) == (0, {ORPHAN_ARCHIVE: ["j-gone"]}), swept.report
    assert swept.report["counts"] == {ORPHAN_ARCHIVE: 1}
    assert any("2 thawed" in note for note in swept.report["notes"]), swept.report["notes"]
    assert not reconcile_inventory_has(server, stray)


@BACKENDS
def test_a_lost_result_makes_reconcile_exit_3_naming_the_job(server: Server, tmp_path) -> None:
    # Given a job archived, whose archive then vanished (deleted by hand)
    put_job(server, "j1", complete_time=LONG_AGO)
    archive(server, tmp_path, "j1")
    archive_id = job(server, "j1")[ARCHIVE_ID]
    if server.config.gas.archive_backend == "s3":
        server.client("s3").delete_object(Bucket=server.config.gas.archive_bucket, Key=archive_id)
        passes = [reconcile("--repair")]
    else:
        # The vault: the first pass starts an inventory; the second, reading it, only suspects
        # the archive (it may be newer than the inventory); the third, reading an inventory
        # taken after the second, knows
        server.client("glacier").delete_archive(
            vaultName=server.config.gas.vault, archiveId=archive_id
        )
        passes = [reconcile("--repair") for _ in range(3)]
        assert [p.code for p in passes[:2]] == [0, 0], [p.report for p in passes]
        assert archive_id in passes[1].report["suspects"]
    lost = passes[-1]
    # Then it exits 3, names the job, and changed nothing
    assert lost.code == 3, lost.report
    assert lost.kinds() == {LOST: ["j1"]}
    assert lost.report["findings"][0]["action"] == "none: reported"
    assert job(server, "j1")[ARCHIVE_ID] == archive_id
    text = subprocess.run(
        [sys.executable, "-m", "util.reconcile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert text.returncode == 3 and "lost" in text.stdout and "job=j1" in text.stdout


def test_stale_claims_are_cleared_and_live_ones_kept(server: Server, tmp_path) -> None:
    # Given a retrieval claim and an e-mail claim whose holders died, and a live claim
    put_job(server, "j1", complete_time=LONG_AGO)
    archive(server, tmp_path, "j1")
    set_item(server, "j1", **{RESTORE_JOB_ID: "claim:dead", RESTORE_EXPIRES: int(NOW) - 5})
    put_job(
        server,
        "j2",
        complete_time=LONG_AGO,
        user_id="u-bob",
        **{NOTIFY_CLAIM: "dead", NOTIFY_CLAIM_EXPIRES: int(NOW) - 5},
    )
    put_job(
        server,
        "j3",
        complete_time=LONG_AGO,
        user_id="u-bob",
        **{NOTIFY_CLAIM: "alive", NOTIFY_CLAIM_EXPIRES: int(time.time()) + 3600},
    )
    # When reconcile repairs
    repaired = reconcile("--repair")
    # Then the stale ones are gone, the live one kept
    kinds = repaired.kinds()
    assert list(kinds) == [STALE_CLAIM] and sorted(kinds[STALE_CLAIM]) == ["j1", "j2"], kinds
    assert RESTORE_JOB_ID not in job(server, "j1") and ARCHIVE_ID in job(server, "j1")
    assert NOTIFY_CLAIM not in job(server, "j2")
    assert job(server, "j3")[NOTIFY_CLAIM] == "alive"
    assert reconcile().kinds() == {}


# -- a dry run, and two passes at once ---------------------------------------------------------


def every_kind(server: Server, tmp_path) -> None:
    """One job (or archive) of every finding kind (backend s3, orphans of any age)."""
    put_job(server, "k1", complete_time=LONG_AGO)  # archive-not-requested
    data = put_job(server, "k2", complete_time=LONG_AGO)
    put_job(server, "k5", complete_time=LONG_AGO)
    put_job(server, "k3", complete_time=LONG_AGO, user_id="u-carol")
    put_job(server, "k4", complete_time=LONG_AGO, user_id="u-carol")
    archive(server, tmp_path, "k2", "k5")
    archive(server, tmp_path, "k3", "k4", user_id="u-carol")
    server.client("s3").put_object(
        Bucket=server.config.gas.results_bucket,  # result-not-deleted
        Key=job(server, "k2")[RESULT_KEY],
        Body=data,
    )
    set_role(server, "u-carol", "premium_user")  # k3: restore-not-requested
    set_item(server, "k4", **{RESTORE_JOB_ID: "gone", RESTORE_EXPIRES: int(NOW) - 60})
    s3_orphan(server, "k-orphan")  # orphan-archive
    server.client("s3").delete_object(
        Bucket=server.config.gas.archive_bucket,  # lost
        Key=job(server, "k5")[ARCHIVE_ID],
    )
    put_job(
        server,
        "k7",
        complete_time=LONG_AGO,
        user_id="u-bob",  # stale-claim
        **{NOTIFY_CLAIM: "dead", NOTIFY_CLAIM_EXPIRES: int(NOW) - 5},
    )


def snapshot(server: Server) -> dict[str, Any]:
    """Every item, object and queue depth: what a dry run must leave as it was."""
    config = server.config
    items = server.client("dynamodb").scan(TableName=config.gas.annotations_table)["Items"]
    objects = {}
    for bucket in (config.gas.results_bucket, config.gas.archive_bucket):
        for o in server.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []):
            if o["Key"] != config.reconcile.report_key:
                objects[(bucket, o["Key"])] = o["ETag"]
    queues = {q: queue_depth(server, q) for q in (config.archive.queue, config.restore.queue)}
    return {
        "items": sorted(items, key=lambda i: i["job_id"]["S"]),
        "objects": objects,
        "queues": queues,
    }


@pytest.mark.parametrize("stack_settings", [S3], ids=["s3"])
def test_a_dry_run_finds_every_kind_and_changes_nothing(server: Server, tmp_path) -> None:
    every_kind(server, tmp_path)
    before = snapshot(server)
    dry = reconcile(reconcile_orphan_age_seconds="0")
    assert dry.code == 3  # a lost result outranks the findings left
    assert dry.kinds() == {
        ARCHIVE_NOT_REQUESTED: ["k1"],
        RESULT_NOT_DELETED: ["k2"],
        RESTORE_NOT_REQUESTED: ["k3"],
        RETRIEVAL_LAPSED: ["k4"],
        ORPHAN_ARCHIVE: ["k-orphan"],
        LOST: ["k5"],
        STALE_CLAIM: ["k7"],
    }
    assert set(dry.kinds()) == set(KINDS)
    assert all(f["action"].startswith(("would", "none")) for f in dry.report["findings"])
    assert snapshot(server) == before


@pytest.mark.parametrize("stack_settings", [S3], ids=["s3"])
def test_two_passes_at_once_repair_once_and_the_pipeline_converges(
    server: Server, tmp_path
) -> None:
    every_kind(server, tmp_path)
    with ThreadPoolExecutor(2) as pool:
        passes = list(
            pool.map(lambda _: reconcile("--repair", reconcile_orphan_age_seconds="0"), range(2))
        )
    assert [p.code for p in passes] == [3, 3], [p.stderr for p in passes]
    # The utilities take both passes' messages in their stride
    run_once("archive", tmp_path)
    run_once("restore", tmp_path)
    thaw = UtilityProcess("thaw", tmp_path / "thaw.log")
    wait_for(
        lambda: all(ARCHIVE_ID not in job(server, j) for j in ("k3", "k4")),
        timeout=60,
        what="carol's results thawed",
    )
    assert thaw.stop() == 0, thaw.log
    after = reconcile("--repair", reconcile_orphan_age_seconds="0")
    # Only the lost result is left, still reported
    assert after.kinds() == {LOST: ["k5"]}, after.report
    assert ARCHIVE_ID in job(server, "k1") and not result_exists(server, "k2")


@pytest.mark.parametrize(
    "stack_settings", [{**VAULT, "GAS_LOCAL_INVENTORY_DELAY_SECONDS": "3600"}], ids=["vault"]
)
def test_a_vault_without_an_inventory_yet_is_noted_not_a_failure(server: Server) -> None:
    # Given a new vault: Glacier has prepared no inventory of it yet (up to a day), and
    # refuses an inventory retrieval until it has
    put_job(server, job_id="j1")
    # When a pass runs, twice (a daily timer's second day on a vault still without one)
    for _ in range(2):
        result = reconcile("--repair")
        # Then it does what it can without an inventory, and says why it did not look for
        # orphans and lost archives
        assert result.code == 0, result.stderr
        assert any("no inventory" in note for note in result.report["notes"]), result.report
