"""Fixtures of the local-stack tools' tests: one stack for the module, a proxy per test."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from botocore.retries import standard

from localaws import faults
from localaws.stack import CREDENTIALS, launch


def stop(process: subprocess.Popen) -> str:
    """SIGTERM a process started by a launch helper; what it printed since, once it exited 0."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """A local stack (``python -m util.local serve``) shared by a module's tests: its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GAS_"))}
    process, exports = launch(env={**env, **CREDENTIALS})
    yield exports["AWS_ENDPOINT_URL"]
    stop(process)


@pytest.fixture
def proxy(upstream: str) -> Iterator[str]:
    """A faults proxy in front of the stack, every fault off: its endpoint URL."""
    process, endpoint = faults.launch(upstream)
    yield endpoint
    stop(process)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's standard retry mode retries at once (it backs off up to 20 s otherwise)."""
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
