"""The command lines (util/cli.py) and what they print: the options every command shares,
the bounds of the arguments, figures as words."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack
from util import __version__
from util.ann_load import main as ann_load_main
from util.ann_load import parse_args
from util.archive.archive import main as archive_main
from util.cli import counted
from util.doctor.doctor import main as doctor_main
from util.notify.notify import main as notify_main
from util.reconcile.reconcile import main as reconcile_main
from util.reconcile.report import Report, render_text
from util.restore.restore import main as restore_main
from util.status import main as status_main
from util.thaw.thaw import main as thaw_main

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "archive": archive_main,
    "restore": restore_main,
    "thaw": thaw_main,
    "notify": notify_main,
    "reconcile": reconcile_main,
    "status": status_main,
    "doctor": doctor_main,
    "ann_load": ann_load_main,
}
PRINT_RESULTS = ("reconcile", "status", "doctor")
# What a command needs besides the shared options to get past its command line.
REQUIRED = {"ann_load": ["--cleanup"]}


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger as it was: a command's logging set-up is the whole process's."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_its_version(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        COMMANDS[command](["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"{command} {__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_the_shared_options_a_log_level_in_any_case(
    command: str, aws_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a configuration file with a bad setting (so that the command stops once it has
    # read its settings, before any AWS call)
    ini = tmp_path / "bad.ini"
    ini.write_text("[gas]\narchive_backend = tape\n")
    # When the command is given the shared options, the level in lower case
    argv = ["--config", str(ini), "--log-level", "debug", "--log-format", "json"]
    code = COMMANDS[command]([*REQUIRED.get(command, []), *argv])
    # Then its command line took them, and it read the file given
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{command}: config error: [gas] archive_backend = 'tape'")
    # And a level that is none is refused by the command line, naming the levels
    with pytest.raises(SystemExit) as exited:
        COMMANDS[command]([*REQUIRED.get(command, []), "--log-level", "loud"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == (
        f"{command}: error: argument --log-level: 'loud': "
        "must be one of DEBUG, INFO, WARNING, ERROR (any case)"
    )


def test_a_log_level_in_lower_case_is_the_level_logged_at(
    stack: Stack, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status_main(["--log-level", "debug", "--format", "json"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    assert set(json.loads(capsys.readouterr().out)) == {"time", "queues", "retrievals", "reconcile"}


@pytest.mark.parametrize("command", PRINT_RESULTS)
def test_a_command_that_prints_results_says_what_its_format_does(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        COMMANDS[command](["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--format {text,json} print the results as text to read (the default), or json:" in shown


def test_the_doctor_prints_an_object_per_check_with_its_status_and_fix(
    stack: Stack, root_logging: None
) -> None:
    # Given a stack whose results bucket no longer aborts incomplete uploads
    stack.client("s3").delete_bucket_lifecycle(Bucket=stack.config.gas.results_bucket)
    # When the doctor checks it, as text and as JSON
    text: list[str] = []
    assert doctor_main([], out=text.append) == 1
    printed: list[str] = []
    assert doctor_main(["--format", "json"], out=printed.append) == 1
    [document] = printed
    shown = json.loads(document)
    # Then the JSON has an object per check the text has a line for, with its status and fix
    checks = shown["checks"]
    assert len(checks) == len(text) - 1  # the text's last line counts them
    assert {c["status"] for c in checks} <= {"ok", "wrong", "unchecked"}
    [wrong] = [c for c in checks if c["status"] == "wrong"]
    assert wrong["check"].startswith(f"bucket {stack.config.gas.results_bucket}")
    assert "put-bucket-lifecycle-configuration" in wrong["fix"]
    assert f"✘ {wrong['check']} — fix: {wrong['fix']}" in text
    assert all(c["fix"] is None for c in checks if c["status"] == "ok")
    assert shown["to_fix"] == 1


# -- bounds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reasons", ["-1", "0", "11", "many"])
def test_status_refuses_a_number_of_reasons_it_cannot_show(
    reasons: str, aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # (were the option taken, the bad setting would stop status before any AWS call)
    monkeypatch.setenv("GAS_GAS_ARCHIVE_BACKEND", "tape")
    with pytest.raises(SystemExit) as exited:
        status_main(["--reasons", reasons])
    assert exited.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(f"status: error: argument --reasons: '{reasons}': must be")
    )


@pytest.mark.parametrize(
    "argv, error",
    [
        (
            ["--rate", "1e9", "--duration", "10"],
            "argument --rate: '1e9': must be a number > 0 and <= 1000",
        ),
        (["--rate", "0", "--jobs", "10"], "argument --rate: '0': must be a number > 0 and <= 1000"),
        (
            ["--rate", "1000", "--duration", "86400"],
            "--rate 1000 --duration 86400 is 86,400,000 jobs: at most 1,000,000 a run",
        ),
        (
            ["--rate", "5", "--duration", "1e6"],
            "argument --duration: '1e6': must be a number > 0 and <= 86400",
        ),
        (["--rate", "5", "--jobs", "1000001"], "argument --jobs: '1000001': must be 1-1000000"),
        (
            ["--rate", "5", "--jobs", "5", "--senders", "100000"],
            "argument --senders: '100000': must be 1-1000",
        ),
        (
            ["--rate", "5", "--jobs", "5", "--ramp", "inf"],
            "argument --ramp: 'inf': must be a finite number",
        ),
        (
            ["--rate", "5", "--jobs", "5", "--drain", "1e9"],
            "argument --drain: '1e9': must be a number >= 0 and <= 86400",
        ),
    ],
)
def test_ann_load_refuses_absurd_numbers_with_one_line(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"ann_load: error: {error}"


def test_ann_load_takes_the_largest_run_it_allows() -> None:
    args = parse_args(["--rate", "1000", "--duration", "1000", "--senders", "1000"])
    assert (args.rate, args.duration, args.senders) == (1000, 1000, 1000)


# -- figures as words --------------------------------------------------------------------------


def test_counts_are_printed_as_words() -> None:
    assert counted({"items": 0, "users": 1, "archives": 2, "results": None}) == (
        "0 items, 1 user, 2 archives, results unknown"
    )


def test_reconcile_says_what_it_scanned_in_words() -> None:
    report = Report(
        started=0.0,
        backend="vault",
        repair=False,
        scanned={"items": 3, "users": 1, "results": 2, "archives": None},
    )
    assert render_text(report).splitlines()[0] == (
        "reconcile (dry run, backend vault): scanned 3 items, 1 user, 2 results, archives unknown"
    )
