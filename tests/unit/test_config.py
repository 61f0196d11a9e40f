"""Config layering: defaults -> utility .ini -> --config files -> GAS_<SECTION>_<KEY>."""

from __future__ import annotations

from pathlib import Path

import pytest

from localaws import settings as local_settings
from tests.conftest import ROOT
from util.util_config import KEYS, ConfigError, env_name, load, markdown_table


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_then_utility_ini_then_files_then_environment(tmp_path: Path) -> None:
    first = write(tmp_path, "a.ini", "[archive]\ngrace_seconds = 10\npart_size_mib = 2\n")
    second = write(tmp_path, "b.ini", "[archive]\ngrace_seconds = 20\n")
    config = load("archive", [first, second], environ={"GAS_ARCHIVE_PART_SIZE_MIB": "4"})
    assert config.gas.results_bucket == "gas-results"  # default
    assert config.archive.queue == "gas-archive"  # archive_config.ini
    assert config.archive.grace_seconds == 20  # the later --config file wins
    assert config.archive.part_size_mib == 4  # the environment wins over every file


def test_environment_overrides_a_queue_by_url() -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/other"
    assert load("archive", environ={"GAS_ARCHIVE_QUEUE": url}).archive.queue == url


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"GAS_ARCHIVE_GRACE_SECONDS": "soon"}, "[archive] grace_seconds"),
        ({"GAS_ARCHIVE_GRACE_SECONDS": "-1"}, "[archive] grace_seconds"),
        ({"GAS_ARCHIVE_PART_SIZE_MIB": "3"}, "[archive] part_size_mib"),
        ({"GAS_WORKER_WAIT_SECONDS": "21"}, "[worker] wait_seconds"),
        ({"GAS_WORKER_LOG_FORMAT": "xml"}, "[worker] log_format"),
        ({"GAS_GAS_RESULTS_BUCKET": " "}, "[gas] results_bucket"),
        ({"GAS_ARCHIVE_GRACE_SECOND": "1"}, "GAS_ARCHIVE_GRACE_SECOND"),
    ],
)
def test_a_malformed_setting_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load("archive", environ=environ)


def test_unknown_keys_and_sections_in_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key \[archive\] grace"):
        load("archive", [write(tmp_path, "x.ini", "[archive]\ngrace = 1\n")], environ={})
    with pytest.raises(ConfigError, match=r"unknown section \[archiv\]"):
        load("archive", [write(tmp_path, "y.ini", "[archiv]\nqueue = q\n")], environ={})
    with pytest.raises(ConfigError, match="missing.ini"):
        load("archive", [tmp_path / "missing.ini"], environ={})


def test_a_utf8_file_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    # Notepad's "UTF-8 with BOM": the mark is no part of the first line
    path = tmp_path / "bom.ini"
    path.write_bytes("\ufeff[archive]\ngrace_seconds = 7\n".encode("utf-8"))
    assert load("archive", [path], environ={}).archive.grace_seconds == 7


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[archive]\ngrace_seconds = 7\n".encode("utf-16"), ": UTF-16"),
        ("[archive]\ngrace_seconds = 7\n".encode("utf-16-le"), ": UTF-16"),
        (
            "[notify]\nsender = café@example.com\n".encode("latin-1"),
            ", line 2: not UTF-8",
        ),
    ],
    ids=["utf-16", "utf-16-without-bom", "latin-1"],
)
def test_a_file_not_in_utf8_is_named_in_one_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "other.ini"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load("archive", [path], environ={})
    message = str(raised.value)
    assert message.startswith(f"config file {path}{problem}"), message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[archive]\ngrace_seconds = 7\npart_size_mib\n", "line 3: 'part_size_mib' is not"),
        ("grace_seconds = 7\n[archive]\n", "line 1: 'grace_seconds = 7' comes before"),
        ("[archive]\n\ngrace_seconds = 1\ngrace_seconds = 2\n", "line 4: option"),
    ],
    ids=["no-equals-sign", "no-section-header", "a-key-twice"],
)
def test_a_syntax_error_names_the_file_and_the_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, "bad.ini", text)
    with pytest.raises(ConfigError) as raised:
        load("archive", [path], environ={})
    message = str(raised.value)
    assert message.startswith(f"config file {path}, {problem}"), message
    assert len(message.splitlines()) == 1


TABLE_START = "<!-- settings table: generated, do not edit by hand -->\n"
TABLE_END = "\n<!-- end of settings table -->"


def test_the_configuration_page_holds_the_generated_table_of_every_key() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert TABLE_START in page and TABLE_END in page, "docs/configuration.md lost its markers"
    table = page.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    assert table == markdown_table(), "paste `python -m util.util_config` between the markers"
    # and the generated table has one row per key, each naming its environment variable
    assert [line.split(" | ")[3] for line in table.splitlines()[2:]] == [
        f"`{env_name(key)}`" for key in KEYS
    ]


def test_the_local_stack_page_holds_the_generated_table_of_its_own_keys() -> None:
    page = (ROOT / "docs" / "local-stack.md").read_text()
    assert TABLE_START in page and TABLE_END in page, "docs/local-stack.md lost its markers"
    table = page.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    assert table == markdown_table(local_settings.KEYS), (
        "paste `python -m localaws.settings` between the markers"
    )
