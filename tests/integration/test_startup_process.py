"""A utility process that cannot start: one line naming the cause, and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bad_config_exits_non_zero_with_one_line_naming_the_key(aws_env: None) -> None:
    result = subprocess.run(
        [sys.executable, "util/archive/archive.py", "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"GAS_ARCHIVE_GRACE_SECONDS": "later", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "archive: config error: [archive] grace_seconds = 'later' "
        "(from GAS_ARCHIVE_GRACE_SECONDS): must be a whole number"
    ]


def test_a_broken_template_stops_the_worker_at_start(aws_env: None, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "util/notify/notify.py", "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"GAS_NOTIFY_TEMPLATES": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"notify: config error: [notify] templates: cannot read "
        f"{tmp_path / 'completed_subject.txt'}: No such file or directory"
    ]
