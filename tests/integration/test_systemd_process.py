"""A real worker process talking to "systemd": a unix datagram socket as its NOTIFY_SOCKET."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.conftest import Server, UtilityProcess


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
        worker = UtilityProcess("notify", tmp_path / "notify.log", worker_wait_seconds="5",
                                env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
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
