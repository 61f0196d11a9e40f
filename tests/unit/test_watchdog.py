"""The suite's last resort against a hang (tests/conftest.py): a test stuck where
pytest-timeout cannot fail it still ends, its threads' stacks written out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Stuck in C with the GIL held, as the scheduler's look at threads once was (tests/interleave.py:
# `_frames`): pytest-timeout's signal handler never runs, nor would its timer thread.
HANG = """
import ctypes


def test_hang():
    libc = ctypes.PyDLL(None)  # its calls keep the GIL
    mutex = ctypes.create_string_buffer(64)  # a default pthread mutex: all zeros
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # waits for itself
"""


def test_a_test_stuck_in_c_ends_its_process_past_its_timeout(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANG)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 1\ntimeout_grace = 1\n")
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    command += ["-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_hang.py")]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the hung test outlived its timeout")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout (0:00:02)!" in done.stderr
    assert f'File "{tmp_path / "test_hang.py"}", line 9 in test_hang' in done.stderr
