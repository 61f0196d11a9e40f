"""systemd's side of a service, with the standard library only: sd_notify and journald levels.

- `ServiceManager` sends READY=1, STOPPING=1, STATUS=… and WATCHDOG=1 datagrams to
  ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), as sd_notify(3) does;
  without ``$NOTIFY_SOCKET`` (not run by systemd, or not ``Type=notify``) it sends nothing.
- `Watchdog` pings from a daemon thread every half ``$WATCHDOG_USEC``, but only while the
  main loop keeps coming round (`beat`): a loop that is stuck stops the pings, and systemd
  kills and restarts the service after ``WatchdogSec``.
- `JournalFormatter` starts every line with its sd-daemon.h priority (``<3>`` error …
  ``<7>`` debug) when stderr is the journal (`stderr_is_journal`), so that
  ``journalctl -p warning`` finds warnings; journald strips the prefix.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

log = logging.getLogger("gas")

# A datagram to a socket whose queue is full blocks; systemd reads its socket at once, so a
# send that takes longer means nobody is reading, and waiting on would hang the worker.
SEND_TIMEOUT_SECONDS = 1.0


class ServiceManager:
    """Sends state changes to the service manager; does nothing without a socket."""

    def __init__(self, address: str | None = None, watchdog_interval: float | None = None):
        # "@name" is Linux's abstract namespace, spelt with a leading NUL byte in the API.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval = watchdog_interval if self.address else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> ServiceManager:
        """The notifier systemd asks for: ``$NOTIFY_SOCKET`` and half of ``$WATCHDOG_USEC``."""
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            address = None  # e.g. systemd's vsock: form, which only VMs' managers use
        return cls(address, _watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``NAME=value`` lines in one datagram; False if not sent (never raises, and
        never blocks longer than SEND_TIMEOUT_SECONDS)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_SECONDS)
                sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            # The service manager going away must not take the worker with it.
            log.warning("sd_notify %s failed: %s", assignments[0] if assignments else "", exc)
            return False
        return True


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout in seconds, if systemd expects pings from this process."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):  # meant for another process (sd_watchdog_enabled)
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Watchdog:
    """WATCHDOG=1 every half timeout from a daemon thread, while the main loop keeps beating.

    The loop may legitimately block for a long poll (up to 20 s) or a slow AWS call, longer
    than a sensible WatchdogSec; so the pings do not come from the loop itself, but the
    thread sends them only while the last `beat` is at most `stall_seconds` old.
    """

    def __init__(
        self,
        notifier: ServiceManager,
        stall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.notifier = notifier
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.last_beat = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, since: float | None = None) -> None:
        """The main loop came round: it is alive. `since` (the clock's time): it waits on
        work begun then, which counts as alive only until `stall_seconds` after it."""
        self.last_beat = self.clock() if since is None else since

    def start(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or self._thread is not None:
            return
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self, interval: float) -> None:
        stalled = False
        while not self._stop.wait(interval):
            idle = self.clock() - self.last_beat
            if idle <= self.stall_seconds:
                self.notifier.send("WATCHDOG=1")
                stalled = False
            elif not stalled:
                log.error("main loop stalled for %.0fs: watchdog pings stopped", idle)
                stalled = True


# sd-daemon.h priorities; CRITICAL is <2>, anything below DEBUG is debug too.
def journal_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stderr_is_journal(environ: Mapping[str, str] = os.environ, stream: TextIO = sys.stderr) -> bool:
    """Whether `stream` is the journal stream systemd connected (``$JOURNAL_STREAM``).

    systemd.exec(5): compare ``device:inode`` with the stream's, since a child whose stderr
    was redirected inherits the variable but not the stream.
    """
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):  # no such fd, not a file, no variable
        return False


class JournalFormatter(logging.Formatter):
    """Another formatter's output with the record's priority at the start of every line.

    journald reads a stream line by line: each line of a traceback needs its own prefix,
    or it would be stored at the default priority (info).
    """

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))
