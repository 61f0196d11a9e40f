"""A local AWS for the demo and the tests: moto plus what moto lacks."""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping


def announce_and_wait(exports: Mapping[str, str]) -> None:
    """Print one ``export NAME=value`` line per variable a client needs, then ``ready``, and
    block until SIGINT or SIGTERM: how `serve` and `faults` tell their launcher they are up."""
    for name, value in exports.items():
        print(f"export {name}={value}")
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
