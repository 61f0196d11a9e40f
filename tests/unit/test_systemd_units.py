"""deploy/systemd: what the template's ExecStart runs. (`make verify-units` has systemd-analyze
check the unit files themselves, where systemd is installed.)"""

from __future__ import annotations

import configparser

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


def test_stop_timeout_covers_a_long_poll_and_the_drain() -> None:
    defaults = {(k.section, k.name): int(k.default) for k in KEYS
                if (k.section, k.name) in {("worker", "wait_seconds"), ("worker", "drain_seconds")}}
    service = service_section()
    assert int(service["TimeoutStopSec"]) > sum(defaults.values())
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure" and service["User"] == "gas"
