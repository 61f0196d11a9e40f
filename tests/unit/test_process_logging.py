"""The log lines a worker writes (util/process.py's logging): their time, and their length
whatever a message carries."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.conftest import Stack
from util.messages import Message, Outcome, invalid
from util.process import LOG_VALUE_MAX, configure_logging
from util.worker import Worker

ISO_8601_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def stderr_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """Logging as a worker configures it, to a captured stderr; the lines written so far.
    The root logger is as it was after the test."""
    root, botocore = logging.getLogger(), logging.getLogger("botocore")
    handlers, level, botocore_level = root.handlers[:], root.level, botocore.level
    capsys.readouterr()
    yield lambda: capsys.readouterr().err.splitlines()
    root.handlers[:] = handlers
    root.setLevel(level)
    botocore.setLevel(botocore_level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_time_is_iso_8601_with_milliseconds_and_zone(
    stderr_lines: Callable[[], list[str]], log_format: str
) -> None:
    configure_logging(log_format, "INFO")
    before = time.time()
    logging.getLogger("gas").info("hello")
    after = time.time()
    [line] = stderr_lines()
    stamp = json.loads(line)["time"] if log_format == "json" else line.split(" ", 1)[0]
    assert ISO_8601_MS.fullmatch(stamp), line
    assert before - 0.001 <= datetime.fromisoformat(stamp).timestamp() <= after


def rejects(message: Message) -> Outcome:
    return invalid(f"unknown job {message.job_id}")


def raises(message: Message) -> Outcome:
    raise KeyError(message.job_id)


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("handler", [rejects, raises], ids=["invalid", "exception"])
def test_a_huge_job_id_makes_no_huge_log_line(
    stack: Stack,
    stderr_lines: Callable[[], list[str]],
    log_format: str,
    handler: Callable[[Message], Outcome],
) -> None:
    # Given a message whose job id is 250,000 characters long
    job_id = "j" * 250_000
    url = stack.queue_url("gas-archive")
    stack.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps({"job_id": job_id}))
    # When a worker's handler rejects it naming the id, or raises an exception that names it
    configure_logging(log_format, "INFO")
    stack.config.worker.wait_seconds = 0
    Worker("test", handler, stack.config, stack.aws, "gas-archive").work(once=True)
    # Then every line the worker wrote is short, and the id's beginning is there, marked as cut
    lines = stderr_lines()
    assert lines and max(map(len, lines)) < 1000, sorted(map(len, lines))
    shown = "j" * LOG_VALUE_MAX + f"…({250_000 - LOG_VALUE_MAX} more)"
    outcome = next(line for line in lines if "outcome" in line)
    if log_format == "json":
        assert json.loads(outcome)["job_id"] == shown
    else:
        assert f" job={shown} " in outcome


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_message_logged_without_arguments_is_cut_too(
    stderr_lines: Callable[[], list[str]], log_format: str
) -> None:
    configure_logging(log_format, "INFO")
    logging.getLogger("gas").warning(ValueError("v" * 250_000))
    [line] = stderr_lines()
    message = json.loads(line)["message"] if log_format == "json" else line
    assert len(line) < 1000 and message.endswith(f"…({250_000 - LOG_VALUE_MAX} more)")
