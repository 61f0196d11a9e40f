"""What an operator meets starting a worker by hand (`python -m util.<name>`): a queue or a
config file that is wrong stops it at once, with one line and the exit code systemd does not
restart; `--once` on an empty queue returns in seconds, not after a 20 s long poll."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server
from util.process import EXIT_CONFIG


def start(utility: str, *args: str, **settings: str) -> subprocess.Popen:
    """`python -m util.<utility> ARGS` with GAS_<SECTION>_<KEY> settings, as an operator
    types it (wait_seconds left at its default, 20 s)."""
    env = {k: v for k, v in os.environ.items() if k != "GAS_WORKER_WAIT_SECONDS"}
    env.update({f"GAS_{k.upper()}": v for k, v in settings.items()})
    return subprocess.Popen(
        [sys.executable, "-m", f"util.{utility}", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, within: float) -> tuple[int, list[str]]:
    """The exit code and stderr lines of a process that must exit within `within` seconds."""
    try:
        _, stderr = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"still running after {within}s") from None
    return process.returncode, stderr.splitlines()


@pytest.mark.parametrize("dead_letter", [False, True], ids=["queue", "dead-letter-queue"])
def test_a_queue_that_does_not_exist_stops_the_worker_naming_the_setting(
    server: Server, dead_letter: bool
) -> None:
    # Given the restore queue misspelt, or its dead-letter queue deleted
    settings = {}
    if dead_letter:
        server.client("sqs").delete_queue(QueueUrl=server.queue_url("gas-restore-dlq"))
    else:
        settings["restore_queue"] = "gas-restre"
    # When a restore worker starts
    code, lines = finish(start("restore", **settings), within=60)
    # Then it exits with the configuration error's code, in one line naming the setting
    region = server.client("sqs").meta.region_name
    problem = (
        "'gas-restore': its dead-letter queue gas-restore-dlq (RedrivePolicy) does not exist"
        if dead_letter
        else f"'gas-restre': no such queue in {region}"
    )
    assert (code, lines) == (EXIT_CONFIG, [f"restore: config error: [restore] queue = {problem}"])


def test_a_config_file_in_utf16_stops_the_worker_in_one_line(aws_env: None, tmp_path: Path) -> None:
    path = tmp_path / "gas.ini"
    path.write_bytes("[worker]\nconcurrency = 2\n".encode("utf-16"))
    code, lines = finish(start("archive", "--config", str(path)), within=60)
    assert (code, lines) == (
        EXIT_CONFIG,
        [f"archive: config error: config file {path}: UTF-16 (or has NUL bytes); save it as UTF-8"],
    )


def test_once_on_an_empty_queue_exits_soon_after_an_empty_receive(server: Server) -> None:
    # Given an empty queue and the default long poll of 20 s
    # When a worker drains it with --once
    code, lines = finish(start("notify", "--once"), within=10)
    # Then it has exited cleanly well before one long poll would have returned
    assert code == 0, lines
