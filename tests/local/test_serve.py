"""`python -m util.local serve` on a port another program holds: one line naming it, exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import ROOT


def test_serve_on_a_port_in_use_exits_non_zero_naming_it(aws_env: None) -> None:
    # Given a port another program listens on
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # When the stack is asked to serve on it, Then it exits 1 at once, saying so
        result = subprocess.run(
            [sys.executable, "-m", "util.local", "serve", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"local stack: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert "ready" not in result.stdout
