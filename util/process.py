"""The process around a utility's queue loop: its command line, logging, memory, signals.

``python -m util.<name>`` is `main`: it reads the settings, sets up logging (text or JSON, a
journald priority when systemd reads stderr), makes the worker (util/worker.py) and `run`s it
until SIGTERM or SIGINT. A bad setting (a queue that does not exist too) and AWS out of reach
at start each exit with their code (below) and one line naming the cause.
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from util import cli, systemd
from util.aws import Aws
from util.messages import Handler
from util.util_config import Config, ConfigError, load
from util.worker import Worker

EXIT_CONFIG, EXIT_AWS = 2, 1  # the unit restarts a worker after EXIT_AWS, not EXIT_CONFIG
LOG_VALUE_MAX = 200  # characters of one value in a log line (a job id, a reason); more is cut


def cut(text: str, limit: int = LOG_VALUE_MAX) -> str:
    """`text` with each line at most `limit` characters, marked where cut: a message may carry
    a 250,000-character job id, which must not make a 500 KB log line."""
    return "\n".join(
        line if len(line) <= limit else f"{line[:limit]}…({len(line) - limit} more)"
        for line in text.split("\n")
    )


def _cut_value(value: Any) -> Any:
    if isinstance(value, BaseException):
        value = str(value)
    return cut(value) if isinstance(value, str) else value


def bounded(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of the record (other handlers share it) with each of its values `cut`: the
    arguments of its message (or the message itself, without any), its fields."""
    copy = logging.makeLogRecord(record.__dict__)
    if not record.args:
        copy.msg = _cut_value(record.msg)
    elif isinstance(record.args, tuple):
        copy.args = tuple(map(_cut_value, record.args))
    fields = getattr(record, "fields", None)
    if fields:
        copy.fields = {name: _cut_value(value) for name, value in fields.items()}
    copy.exc_text = None  # formatted by another handler's formatter, uncut
    return copy


class TextFormatter(logging.Formatter):
    """``time level message``: the time in ISO 8601, UTC, to the millisecond; each value, and
    each line of a traceback, `cut`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(bounded(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        return moment.isoformat(timespec="milliseconds")

    def formatException(self, ei: Any) -> str:
        return cut(super().formatException(ei))


class JsonFormatter(TextFormatter):
    """One JSON object per line, with the structured fields of per-message lines; the time and
    the values as TextFormatter's."""

    def format(self, record: logging.LogRecord) -> str:
        record = bounded(record)
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {"message": record.getMessage()})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    if systemd.stderr_is_journal():
        # journald takes each line's priority from the prefix and strips it.
        formatter = systemd.JournalFormatter(formatter)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # botocore logs every retry at DEBUG; its warnings are worth keeping.
    logging.getLogger("botocore").setLevel(max(logging.getLevelName(level), logging.WARNING))


# glibc's M_MMAP_THRESHOLD, and the size from which buffers are mapped: transfer parts.
_M_MMAP_THRESHOLD, _MAPPED_FROM = -3, 1024 * 1024


def map_large_buffers() -> None:
    """Have glibc map every buffer of 1 MiB or more on its own, and unmap it when freed.

    By default glibc raises its mapping threshold to the size of the largest buffer freed,
    so after the first part of a transfer each thread's parts (16 MiB) come from its heap
    arena, which keeps them once freed: about 15 MiB above the parts in flight. A fixed
    threshold keeps the worker within `transfer_threads` × part size. Not glibc: nothing.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM)
    except (OSError, AttributeError):
        pass


def main(
    utility: str, make_handler: Callable[[Config, Aws], Handler], argv: list[str] | None = None
) -> int:
    """The command line every utility shares; returns the process exit code."""
    map_large_buffers()
    parser = cli.parser(utility, f"GAS {utility} worker")
    parser.add_argument(
        "--once",
        action="store_true",
        help="drain the queue, then exit 0 when a receive returns nothing",
    )
    args = parser.parse_args(argv)

    def start() -> Worker:
        config = load(utility, args.config)
        configure_logging(*cli.log_settings(args, config))
        aws = Aws(config)
        return Worker(
            utility,
            make_handler(config, aws),
            config,
            aws,
            getattr(config, utility).queue,
            systemd.ServiceManager.from_environ(),
            setting=f"[{utility}] queue",
        )

    return run(utility, start, once=args.once)


def run(name: str, start: Callable[[], Worker], once: bool = False) -> int:
    """Make the worker, then run it until a signal stops it; the process exit code.

    SIGTERM/SIGINT asks it to drain and stop; a second signal exits at once. The worker runs
    in the main thread, where the signal handlers run too.
    """
    try:
        worker = start()
    except ConfigError as exc:
        print(f"{name}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (BotoCoreError, ClientError) as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        return EXIT_AWS
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    worker.work(once=once)
    return 0
