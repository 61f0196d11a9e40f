"""Fixtures shared by unit tests (moto in process) and integration tests (the stack as a server)."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError, ConnectionClosedError
from moto import mock_aws

from localaws import dynamodb as dynamodb_emulation
from localaws import glacier as glacier_emulation
from localaws import s3 as s3_emulation
from localaws import settings as local_settings
from localaws.stack import CREDENTIALS, create_resources, launch, utility_config_files
from util.archive.archive import Archiver
from util.aws import Aws
from util.helpers import Annotations
from util.messages import Message
from util.schema import COMPLETED
from util.util_config import Config, load

ROOT = Path(__file__).resolve().parents[1]
# "Now" for unit tests, whose handlers get it as their clock; integration tests share it with
# real processes, so it must be the real time, not a fixed date.
NOW = float(int(time.time()))


def wait_for(
    condition: Callable[[], Any], timeout: float = 30, what: str = "condition", every: float = 0.05
) -> Any:
    """Poll `condition` every `every` seconds until it returns something truthy, or fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# -- the suite's layout: each test's kind comes from its directory -------------------------------

KINDS = {
    "contract": "the AWS behaviours the design depends on, against the local stack (or AWS)",
    "unit": "moto in process, no process started",
    "integration": "real processes against a local stack server",
    "local": "the local stack's emulations themselves (localaws), not product code",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its kind (``-m unit``, ``-m "not local"`` ...)."""
    for item in items:
        kind = Path(item.fspath).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


# -- a test that hangs beyond pytest-timeout's reach ------------------------------------------

# pytest-timeout fails a test from Python code, a SIGALRM handler or a timer thread; a process
# stuck in C with the GIL held (tests/interleave.py: `_frames`) runs neither and would hang
# the run for good. So each test also arms faulthandler's watchdog, a C thread that needs no
# GIL: `timeout_grace` seconds after the test's timeout it writes every thread's stack to the
# terminal and ends the process (pytest-xdist reports the test's worker as crashed).
_TERMINAL = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "timeout_grace",
        "seconds past a test's timeout (and its teardown) before the watchdog dumps every "
        "thread's stack and ends the process",
        default="60",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TERMINAL] = os.dup(sys.stderr.fileno())  # not a test's captured stderr


def pytest_unconfigure(config: pytest.Config) -> None:
    os.close(config.stash[_TERMINAL])


def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm the watchdog; pytest-timeout arms its own timer too (this returns None)."""
    faulthandler.dump_traceback_later(
        settings.timeout + float(item.config.getini("timeout_grace")),
        exit=True,
        file=item.config.stash[_TERMINAL],
    )


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    faulthandler.cancel_dump_traceback_later()


def pytest_enter_pdb() -> None:
    """Someone is debugging: pytest-timeout stands down, and so does the watchdog."""
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session", autouse=True)
def shared_service_models() -> Iterator[None]:
    """One botocore loader for every session the tests make.

    Each ``Aws`` (and so each test's stack) is a new boto3 session, which would parse the
    service models and endpoints JSON again: most of a test's set-up time. The models are
    read-only, so sharing them isolates nothing less.
    """
    loader = botocore.session.create_loader()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", lambda *args, **kwargs: loader)
        yield


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and nothing from the developer's own AWS setup."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "GAS_")):
            monkeypatch.delenv(name)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@dataclass
class Stack:
    """The local resources and clients to look at them with."""

    config: Config
    aws: Aws

    def client(self, service: str):
        return self.aws.client(service)

    def queue_url(self, name: str) -> str:
        return self.aws.queue_url(name)


@pytest.fixture
def stack(aws_env: None) -> Iterator[Stack]:
    """Every resource of the config, in moto in process, with the Glacier and S3 restore
    emulations.

    The emulations start with the config's [local] settings; a test changes them with
    ``local_settings.configure(standard_seconds=0, ...)`` (the next stack resets them).
    """
    config = load(None, utility_config_files())
    dynamodb_emulation.install()
    glacier_emulation.install(local_settings.Settings.from_config(config.local))
    s3_emulation.install()
    with mock_aws():
        aws = Aws(config)
        create_resources(aws, config)
        yield Stack(config, aws)


@dataclass
class Server(Stack):
    """A `python -m util.local serve` process and the environment to reach it."""

    process: subprocess.Popen
    env: dict[str, str]


@pytest.fixture
def stack_settings() -> dict[str, str]:
    """``GAS_*`` settings of a test's local stack server and utility processes (``GAS_LOCAL_*``
    for the stack's emulation, ``GAS_GAS_ARCHIVE_BACKEND`` ...): override to change them."""
    return {}


@pytest.fixture
def server(
    aws_env: None, stack_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """A fresh local stack server for one test; the environment points at it."""
    for name, value in stack_settings.items():
        monkeypatch.setenv(name, value)
    process, env = launch(env=dict(os.environ))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load(None, utility_config_files())
    yield Server(config, Aws(config), process, env)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)


class UtilityProcess:
    """One utility's worker as a real process (``python util/<name>/<name>.py``).

    Settings are given as ``SECTION_KEY="value"`` and become ``GAS_SECTION_KEY``; `env`
    adds other variables (credentials, systemd's); the log goes to a file the test reads.
    """

    def __init__(
        self,
        utility: str,
        log: Path,
        *args: str,
        env: dict[str, str] | None = None,
        **settings: str,
    ):
        env = {
            **os.environ,
            "GAS_WORKER_WAIT_SECONDS": "1",
            **(env or {}),
            **{f"GAS_{k.upper()}": v for k, v in settings.items()},
        }
        self.log_path = log
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "util" / utility / f"{utility}.py"), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "a"),
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)


def run_once(
    utility: str, tmp_path: Path, env: dict[str, str] | None = None, **settings: str
) -> UtilityProcess:
    """Run a utility with --once until its queue is drained; it must exit 0."""
    worker = UtilityProcess(utility, tmp_path / f"{utility}.log", "--once", env=env, **settings)
    assert worker.wait() == 0, worker.log
    return worker


def dead_letters(stack: Stack, queue: str) -> list[dict]:
    """What a queue's dead-letter queue holds now (received, so hidden for a while)."""
    url = stack.queue_url(f"{queue}-dlq")
    return (
        stack.client("sqs")
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )


def dead_letter_reasons(stack: Stack, queue: str, count: int) -> list[str]:
    """The reasons of the first `count` messages to reach a queue's dead-letter queue, sorted."""
    dead: list[dict] = []
    wait_for(
        lambda: dead.extend(dead_letters(stack, queue)) or len(dead) >= count,
        timeout=30,
        what=f"{count} dead letters in {queue}-dlq",
    )
    return sorted(m["MessageAttributes"]["gas_reason"]["StringValue"] for m in dead)


# -- faults between a handler and AWS, in process ----------------------------------------------


class Killed(BaseException):
    """The process died here: no handler catches it (SIGKILL runs no cleanup either)."""


@dataclass
class _Rule:
    operation: str
    when: Callable[[dict], bool]
    then: str
    times: int
    meanwhile: Callable[[], None] | None = None


class LostAnswers:
    """Chosen AWS calls that take effect while their answer never arrives.

    ``add(operation, when, then)``: the next call of `operation` (botocore's name, e.g.
    ``UpdateItem``) whose parameters satisfy `when` is made, and then:

    - ``retry``: its answer is lost and botocore's retry makes it again; the caller sees the
      second answer (a conditional write fails its condition against its first attempt);
    - ``raise``: its answer is lost and not retried (a client with one attempt): the caller
      gets a connection error;
    - ``kill``: the process dies just after it (``Killed``);
    - ``kill-before``: the process dies just before it: the call is not made.

    ``meanwhile``: what else happens after the call took effect, before the caller goes on.

    In process, a fault must be injected around the client's call (MOTO-NOTES: moto carries
    out a call whatever a before-send hook does), so this wraps BaseClient._make_api_call.
    """

    def __init__(self) -> None:
        self.rules: list[_Rule] = []
        self.hits: list[tuple[str, str]] = []  # (operation, then) of every fault injected

    def add(
        self,
        operation: str,
        when: Callable[[dict], bool] = lambda params: True,
        then: str = "retry",
        times: int = 1,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        self.rules.append(_Rule(operation, when, then, times, meanwhile))

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(client: BaseClient, operation: str, params: dict) -> Any:
            rule = next(
                (
                    r
                    for r in self.rules
                    if r.times > 0 and r.operation == operation and r.when(params)
                ),
                None,
            )
            if rule is None:
                return original(client, operation, params)
            rule.times -= 1
            self.hits.append((operation, rule.then))
            if rule.then == "kill-before":
                raise Killed(operation)
            try:
                original(client, operation, params)
            except ClientError:
                pass  # its answer is lost too
            if rule.meanwhile is not None:
                rule.meanwhile()
            if rule.then == "retry":
                return original(client, operation, params)
            if rule.then == "raise":
                raise ConnectionClosedError(endpoint_url=client.meta.endpoint_url)
            raise Killed(operation)

        return call


@pytest.fixture
def lost_answers(monkeypatch: pytest.MonkeyPatch) -> LostAnswers:
    injector = LostAnswers()
    monkeypatch.setattr(BaseClient, "_make_api_call", injector.wrap(BaseClient._make_api_call))
    return injector


def sets(attribute: str) -> Callable[[dict], bool]:
    """`when` for an UpdateItem, or a TransactWriteItems with an Update, whose SET clause
    writes `attribute`."""

    def writes(params: dict) -> bool:
        update = params.get("UpdateExpression", "")
        placeholders = [
            p for p, name in params.get("ExpressionAttributeNames", {}).items() if name == attribute
        ]
        return any(f"SET {p} =" in update or f", {p} =" in update for p in placeholders)

    def match(params: dict) -> bool:
        updates = [item["Update"] for item in params.get("TransactItems", []) if "Update" in item]
        return any(map(writes, [params, *updates]))

    return match


# -- looking into the vault through the Glacier API, as an operator would ----------------------


def _finished_job(stack: Stack, parameters: dict[str, str]) -> str:
    glacier = stack.client("glacier")
    vault = stack.config.gas.vault
    job_id = glacier.initiate_job(vaultName=vault, jobParameters=parameters)["jobId"]
    wait_for(
        lambda: glacier.describe_job(vaultName=vault, jobId=job_id)["Completed"],
        timeout=30,
        what=f"Glacier job {job_id}",
    )
    return job_id


def archived_bytes(stack: Stack, archive_id: str) -> bytes:
    """An archive's content, retrieved with an Expedited archive-retrieval job."""
    job_id = _finished_job(
        stack, {"Type": "archive-retrieval", "ArchiveId": archive_id, "Tier": "Expedited"}
    )
    return (
        stack.client("glacier")
        .get_job_output(vaultName=stack.config.gas.vault, jobId=job_id)["body"]
        .read()
    )


def vault_archive_description(stack: Stack, archive_id: str) -> str:
    """An archive's description, from an inventory of the vault."""
    job_id = _finished_job(stack, {"Type": "inventory-retrieval", "Tier": "Expedited"})
    inventory = json.load(
        stack.client("glacier").get_job_output(vaultName=stack.config.gas.vault, jobId=job_id)[
            "body"
        ]
    )
    [entry] = [a for a in inventory["ArchiveList"] if a["ArchiveId"] == archive_id]
    return entry["ArchiveDescription"]


def vault_archive_count(stack: Stack) -> int:
    return stack.client("glacier").describe_vault(vaultName=stack.config.gas.vault)[
        "NumberOfArchives"
    ]


# -- jobs as the web app and the annotator leave them ------------------------------------------


def put_job(
    stack: Stack,
    job_id: str = "j1",
    user_id: str = "u-alice",
    size: int = 1000,
    complete_time: float = NOW - 3600,
    **overrides,
) -> bytes:
    """A COMPLETED job with its result file in the results bucket, as the annotator leaves it."""
    data = os.urandom(size)
    key = f"gas/{user_id}/{job_id}~sample.annot.vcf"
    bucket = stack.config.gas.results_bucket
    stack.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    item = {
        "job_id": job_id,
        "user_id": user_id,
        "job_status": COMPLETED,
        "input_file_name": "sample.vcf",
        "submit_time": int(complete_time) - 60,
        "complete_time": int(complete_time),
        "s3_results_bucket": bucket,
        "s3_key_result_file": key,
        "s3_key_log_file": key + ".log",
    }
    item.update(overrides)
    Annotations(stack.aws, stack.config.gas.annotations_table).put(item)
    return data


def job(stack: Stack, job_id: str = "j1") -> dict:
    return Annotations(stack.aws, stack.config.gas.annotations_table).get(job_id)


def result_exists(stack: Stack, job_id: str = "j1") -> bool:
    item = job(stack, job_id)
    listing = stack.client("s3").list_objects_v2(
        Bucket=stack.config.gas.results_bucket, Prefix=item["s3_key_result_file"]
    )
    return listing.get("KeyCount", 0) > 0


def message(**body: Any) -> Message:
    """A received message as a handler sees it, its body already decoded."""
    return Message(
        message_id="m1",
        receipt_handle="r",
        body=json.dumps(body),
        receive_count=1,
        attributes={},
        received_at=0,
        visible_until=0,
        data=body,
        job_id=body.get("job_id"),
    )


def archive_job(
    stack: Stack, job_id: str = "j1", user_id: str = "u-alice", size: int = 1000
) -> bytes:
    """A completed job whose result the archive utility has moved to the vault."""
    data = put_job(stack, job_id=job_id, user_id=user_id, size=size)
    stack.config.archive.part_size_mib = 4
    outcome = Archiver(stack.config, stack.aws)(message(job_id=job_id, user_id=user_id))
    assert (outcome.action, outcome.reason) == ("done", "archived"), outcome
    return data


def set_role(stack: Stack, user_id: str, role: str) -> None:
    stack.client("dynamodb").update_item(
        TableName=stack.config.gas.users_table,
        Key={"user_id": {"S": user_id}},
        UpdateExpression="SET #r = :r",
        ExpressionAttributeNames={"#r": "role"},
        ExpressionAttributeValues={":r": {"S": role}},
    )


def result_bytes(stack: Stack, job_id: str = "j1") -> bytes:
    item = job(stack, job_id)
    return (
        stack.client("s3")
        .get_object(Bucket=item["s3_results_bucket"], Key=item["s3_key_result_file"])["Body"]
        .read()
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Outcomes by kind of test, emulation tests apart from product tests; and how many
    schedules each interleaving pair ran (tests/unit/test_interleavings.py)."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome == "passed":
                continue
            kind = Path(report.fspath).parent.name if report.fspath else ""
            if kind in KINDS:
                counts.setdefault(kind, {}).setdefault(outcome, 0)
                counts[kind][outcome] += 1
    if counts:
        terminalreporter.section("tests by kind")
        for kind, description in KINDS.items():
            if kind in counts:
                figures = ", ".join(f"{n} {o}" for o, n in counts[kind].items())
                terminalreporter.write_line(f"{kind:12} {figures}  ({description})")
    module = sys.modules.get("tests.unit.test_interleavings")
    explored = getattr(module, "EXPLORED", {})
    if explored:
        terminalreporter.section("interleavings explored")
        for pair, schedules in explored.items():
            terminalreporter.write_line(f"{pair}: {schedules} schedules")
