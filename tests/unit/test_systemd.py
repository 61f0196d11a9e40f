"""util/systemd.py: sd_notify datagrams on a real unix socket, the watchdog, journald levels."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from util.systemd import (
    JournalFormatter,
    ServiceManager,
    Watchdog,
    journal_priority,
    stderr_is_journal,
)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket as systemd's NOTIFY_SOCKET, and the path to give a notifier."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


def test_notifier_sends_one_datagram_per_call(notify_socket) -> None:
    # Given a notifier for the socket systemd named
    sock, path = notify_socket
    notifier = ServiceManager.from_environ({"NOTIFY_SOCKET": path})
    # When it reports readiness with a status
    assert notifier.send("READY=1", "STATUS=consuming q")
    # Then systemd gets both assignments in one datagram
    assert sock.recv(4096) == b"READY=1\nSTATUS=consuming q"


def test_abstract_namespace_address() -> None:
    # Given a socket in the abstract namespace, which NOTIFY_SOCKET spells with "@"
    name = f"gas-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        # When the notifier sends to it
        assert ServiceManager.from_environ({"NOTIFY_SOCKET": "@" + name}).send("STOPPING=1")
        # Then it arrives
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = ServiceManager.from_environ({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False
    watchdog = Watchdog(notifier, stall_seconds=1)
    watchdog.start()  # no thread: nobody to ping
    assert watchdog._thread is None


def test_a_vanished_socket_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gas"):
        assert ServiceManager(str(tmp_path / "gone")).send("WATCHDOG=1") is False
    assert "sd_notify WATCHDOG=1 failed" in caplog.text


def test_a_socket_nobody_reads_does_not_block_the_sender(notify_socket) -> None:
    # Given a notify socket whose queue fills up because nobody reads it
    _, path = notify_socket
    notifier = ServiceManager(path)
    # When the notifier goes on sending
    sent = 0
    while notifier.send("WATCHDOG=1"):
        sent += 1
        assert sent < 100_000, "the socket's queue never filled up"
    # Then the send that finds the queue full gives up (after a bounded wait) instead of
    # blocking the worker forever
    assert sent > 0


@pytest.mark.parametrize(
    "environ, interval",
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(environ, interval) -> None:
    notifier = ServiceManager.from_environ({"NOTIFY_SOCKET": "/run/x", **environ})
    assert notifier.watchdog_interval == interval


def test_watchdog_pings_while_the_loop_beats_and_stops_when_it_stalls(
    notify_socket, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a watchdog pinging every 50 ms, with a clock the test moves
    sock, path = notify_socket
    now = [0.0]
    watchdog = Watchdog(
        ServiceManager(path, watchdog_interval=0.05), stall_seconds=10, clock=lambda: now[0]
    )
    watchdog.start()
    try:
        # Then it pings while the loop beats
        assert sock.recv(64) == b"WATCHDOG=1"
        # When the loop has not come round for longer than it may block
        with caplog.at_level(logging.ERROR, logger="gas"):
            now[0] = 11.0
            wait_for(
                lambda: "main loop stalled for 11s" in caplog.text,
                timeout=5,
                what="the stall noticed",
            )
        # Then the pings stop (any sent before the stall was noticed are drained first)
        sock.setblocking(False)
        while True:
            try:
                sock.recv(64)
            except BlockingIOError:
                break
        sock.settimeout(0.5)  # ten intervals
        with pytest.raises(TimeoutError):
            sock.recv(64)
        # And they resume when the loop comes round again
        watchdog.beat()
        sock.settimeout(5)
        assert sock.recv(64) == b"WATCHDOG=1"
    finally:
        watchdog.stop()


@pytest.mark.parametrize(
    "level, priority",
    [
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (logging.INFO, 6),
        (logging.DEBUG, 7),
        (5, 7),
    ],
)
def test_journal_priorities_are_sd_daemon_levels(level: int, priority: int) -> None:
    assert journal_priority(level) == priority


def test_every_line_of_a_record_carries_its_priority() -> None:
    # A traceback is several lines; journald would store unprefixed ones as info.
    record = logging.LogRecord(
        "gas", logging.ERROR, __file__, 1, "failed\nTraceback: x", None, None
    )
    text = JournalFormatter(logging.Formatter("%(levelname)s %(message)s")).format(record)
    assert text == "<3>ERROR failed\n<3>Traceback: x"


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as stream:
        status = os.fstat(stream.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}, stream)
        assert not stderr_is_journal(
            {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino + 1}"}, stream
        )
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not stderr_is_journal({}, stream)
