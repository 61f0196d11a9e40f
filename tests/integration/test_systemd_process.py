"""A real worker process talking to "systemd": a unix datagram socket as its NOTIFY_SOCKET;
its log lines on a stderr that is the journal; the unit template's ExecStart as a shell runs it."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server, UtilityProcess
from tests.unit.test_systemd_units import UNITS, service_section


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def receive_until_exit(sock: socket.socket, worker: UtilityProcess, timeout: float) -> list[str]:
    """Everything the worker sends until it exits, read as systemd would: all the time."""
    messages = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while worker.process.poll() is None:
        assert time.monotonic() < deadline, f"worker still running after {timeout}s"
        try:
            messages.append(receive(sock))
        except TimeoutError:
            pass
    return messages


def test_ready_watchdog_during_a_long_poll_and_stopping(server: Server, tmp_path: Path) -> None:
    # Given "systemd" listening, with a 1 s watchdog (a ping due every 0.5 s)
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        # When a worker starts on an empty queue, blocking in 5 s long polls
        worker = UtilityProcess(
            "notify",
            tmp_path / "notify.log",
            worker_wait_seconds="5",
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
        )
        # Then it says it is ready once it consumes its queue
        ready = receive(sock)
        assert ready.startswith("READY=1\nSTATUS=consuming "), ready
        assert ready.endswith("/gas-notify"), ready
        # And it keeps the watchdog fed although the first receive is still waiting (the
        # four pings take 2 s)
        sock.settimeout(2)
        assert [receive(sock) for _ in range(4)] == ["WATCHDOG=1"] * 4
        assert worker.process.poll() is None
        # And when systemd stops it, it says it is stopping, then exits cleanly once the
        # long poll has returned
        worker.process.terminate()
        after_stop = [m for m in receive_until_exit(sock, worker, 20) if m != "WATCHDOG=1"]
        assert after_stop == ["STOPPING=1\nSTATUS=draining (up to 60s)"]
        assert worker.wait() == 0, worker.log
        assert "sd_notify" not in worker.log, worker.log


# -- journald priorities of a worker's log lines, and the template's ExecStart ----------------

LOG_SOME_LINES = """
import logging
from util.process import configure_logging
configure_logging({log_format!r}, "DEBUG")
log = logging.getLogger("gas")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e")
"""


def run_logging(tmp_path: Path, log_format: str, journal_stream: str | None) -> list[str]:
    """Lines a worker's logging writes to its stderr, a file, with JOURNAL_STREAM as given."""
    stderr = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(stderr, "w") as out:
        if journal_stream == "this stderr":
            status = os.fstat(out.fileno())
            journal_stream = f"{status.st_dev}:{status.st_ino}"
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        subprocess.run(
            [sys.executable, "-c", LOG_SOME_LINES.format(log_format=log_format)],
            cwd=ROOT,
            env=env,
            stderr=out,
            check=True,
        )
    return stderr.read_text().splitlines()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_carry_priorities_when_stderr_is_the_journal(
    tmp_path: Path, log_format: str
) -> None:
    # Given a worker whose stderr is the stream JOURNAL_STREAM names
    lines = run_logging(tmp_path, log_format, "this stderr")
    # Then each line starts with its level's priority, which journald strips
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]


@pytest.mark.parametrize("journal_stream", [None, "1:1"], ids=["unset", "another-stream"])
def test_no_priorities_when_stderr_is_not_the_journal(
    tmp_path: Path, journal_stream: str | None
) -> None:
    # A child whose stderr was redirected inherits JOURNAL_STREAM, but not the stream.
    lines = run_logging(tmp_path, "text", journal_stream)
    assert len(lines) == 4 and not any(line.startswith("<") for line in lines)


def run_exec_start(line: str, instance: str, variable: str, args: str) -> str:
    """What an ExecStart runs, as systemd expands it: specifiers, $$ and $VARIABLE split into
    words, with a stand-in (echo) for the virtualenv's Python."""
    line = line.replace("%i", instance).replace("%%", "%").replace("$$", "$")
    words = shlex.split(line.replace(f"${variable}", args))
    words = [w.replace("exec /opt/gas/.venv/bin/python", "exec echo") for w in words]
    return subprocess.run(words, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    "instance, args, command",
    [
        ("archive", "", "-m util.archive"),
        (
            "thaw-2",
            "--config /etc/gas/gas.ini --log-format json",
            "-m util.thaw --config /etc/gas/gas.ini --log-format json",
        ),
    ],
)
def test_exec_start_runs_the_instances_utility(instance: str, args: str, command: str) -> None:
    # When ExecStart runs as systemd expands it, with $WORKER_ARGS
    output = run_exec_start(service_section()["ExecStart"], instance, "WORKER_ARGS", args)
    # Then it is that utility's module with the extra options
    assert output == command


@pytest.mark.parametrize(
    "args, command",
    [
        ("", "-m util.reconcile --repair"),
        ("--config /etc/gas/gas.ini", "-m util.reconcile --repair --config /etc/gas/gas.ini"),
    ],
)
def test_the_reconcile_service_runs_one_repairing_pass(args: str, command: str) -> None:
    service = service_section(UNITS / "gas-reconcile.service")
    assert run_exec_start(service["ExecStart"], "", "RECONCILE_ARGS", args) == command
