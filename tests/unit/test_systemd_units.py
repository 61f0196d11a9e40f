"""deploy/systemd: what the template's ExecStart runs. (`make verify-units` has systemd-analyze
check the unit files themselves, where systemd is installed.)"""

from __future__ import annotations

import configparser
import shlex
import subprocess

import pytest

from tests.conftest import ROOT
from util.util_config import KEYS

UNITS = ROOT / "deploy" / "systemd"
TEMPLATE = UNITS / "gas-worker@.service"


def service_section() -> dict[str, str]:
    """[Service] of the template, last value of each key (as systemd reads single values)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(TEMPLATE)
    return dict(parser["Service"])


@pytest.mark.parametrize("instance, args, command", [
    ("archive", "", "-m util.archive"),
    ("thaw-2", "--config /etc/gas/gas.ini --log-format json",
     "-m util.thaw --config /etc/gas/gas.ini --log-format json"),
])
def test_exec_start_runs_the_instances_utility(instance: str, args: str, command: str) -> None:
    # Given ExecStart as systemd expands it: specifiers, $$ and $WORKER_ARGS split into words
    line = service_section()["ExecStart"]
    line = line.replace("%i", instance).replace("%%", "%").replace("$$", "$")
    words = shlex.split(line.replace("$WORKER_ARGS", args))
    # When it runs, with a stand-in for the virtualenv's Python
    words = [w.replace("exec /opt/gas/.venv/bin/python", "exec echo") for w in words]
    output = subprocess.run(words, capture_output=True, text=True, check=True).stdout
    # Then it is that utility's module with the extra options
    assert output.strip() == command


def test_stop_timeout_covers_a_long_poll_and_the_drain() -> None:
    defaults = {(k.section, k.name): int(k.default) for k in KEYS
                if (k.section, k.name) in {("worker", "wait_seconds"), ("worker", "drain_seconds")}}
    service = service_section()
    assert int(service["TimeoutStopSec"]) > sum(defaults.values())
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure" and service["User"] == "gas"
