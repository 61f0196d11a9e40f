"""deploy/systemd: what the template's ExecStart runs. (`make verify-units` has systemd-analyze
check the unit files themselves, where systemd is installed.)"""

from __future__ import annotations

import configparser
from pathlib import Path

from tests.conftest import ROOT
from util.process import EXIT_AWS, EXIT_CONFIG
from util.util_config import KEYS

UNITS = ROOT / "deploy" / "systemd"
TEMPLATE = UNITS / "gas-worker@.service"


def service_section(unit: Path = TEMPLATE, section: str = "Service") -> dict[str, str]:
    """A section of a unit (the template's [Service]), last value of each key (as systemd
    reads single values)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(unit)
    return dict(parser[section])


def test_stop_timeout_covers_a_long_poll_and_the_drain() -> None:
    defaults = {
        (k.section, k.name): int(k.default)
        for k in KEYS
        if (k.section, k.name) in {("worker", "wait_seconds"), ("worker", "drain_seconds")}
    }
    service = service_section()
    assert int(service["TimeoutStopSec"]) > sum(defaults.values())
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure" and service["User"] == "gas"


def test_a_worker_is_restarted_after_aws_was_out_of_reach_not_after_a_configuration_error() -> None:
    # A queue or a setting that is wrong stays wrong: restarting every RestartSec is a loop.
    service = service_section()
    assert str(EXIT_CONFIG) in service["RestartPreventExitStatus"].split()
    assert str(EXIT_AWS) not in service["RestartPreventExitStatus"].split()


RECONCILE = UNITS / "gas-reconcile.service"


def test_the_reconcile_service_is_a_oneshot_as_gas() -> None:
    service = service_section(RECONCILE)
    assert service["Type"] == "oneshot" and service["User"] == "gas"
    assert service.get("Restart", "no") == "no"  # a failed pass is not run again at once


def test_the_reconcile_timer_starts_it_daily() -> None:
    timer = service_section(UNITS / "gas-reconcile.timer", "Timer")
    assert timer["OnCalendar"] == "daily" and timer["Unit"] == RECONCILE.name
    assert timer["Persistent"] == "yes"


def test_reconcile_is_hardened_as_the_workers_are() -> None:
    hardening = {
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "MemoryDenyWriteExecute",
        "CapabilityBoundingSet",
        "UMask",
    }
    worker, reconcile = service_section(), service_section(RECONCILE)
    assert {k: worker[k] for k in hardening} == {k: reconcile[k] for k in hardening}
