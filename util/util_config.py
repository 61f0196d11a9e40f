"""Configuration common to all utilities: every key, its default and its type, in one place.

Layers, later wins: the defaults below -> the utility's ``<name>_config.ini`` -> each
``--config FILE`` -> environment variables ``GAS_<SECTION>_<KEY>`` (``GAS_ARCHIVE_QUEUE``).

AWS endpoint, region and credentials are deliberately absent: they come from the standard
AWS chain (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, profiles, instance profile).
"""

from __future__ import annotations

import argparse
import codecs
import configparser
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from util.parsers import (
    choice,
    int_range,
    log_level,
    names,
    non_negative_int,
    nonempty,
    positive_int,
    power_of_two_mib,
)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Key:
    """One setting: section, name, default (as written in an .ini) and how to parse it."""

    section: str
    name: str
    default: str
    parse: Callable[[str], Any]
    doc: str


KEYS: tuple[Key, ...] = (
    # Resources shared by the whole pipeline (the contracts of docs/design.md).
    Key(
        "gas", "annotations_table", "gas-annotations", nonempty, "DynamoDB table of annotation jobs"
    ),
    Key("gas", "users_table", "gas-users", nonempty, "DynamoDB table of users (role, name, email)"),
    Key("gas", "inputs_bucket", "gas-inputs", nonempty, "S3 bucket of uploaded input files"),
    Key("gas", "results_bucket", "gas-results", nonempty, "S3 bucket of result and log files"),
    # Where archived results live (util/backends.py): a Glacier vault, or S3 storage classes
    # (the vault API takes no new AWS accounts since 2025-12-15).
    Key(
        "gas",
        "archive_backend",
        "vault",
        choice("vault", "s3"),
        "vault (Glacier vault API) or s3 (S3 Glacier storage classes)",
    ),
    Key(
        "gas",
        "vault",
        "gas-archive",
        nonempty,
        "Glacier vault of archived results (name), backend vault",
    ),
    Key(
        "gas",
        "archive_bucket",
        "gas-archive-objects",
        nonempty,
        "S3 bucket of archived results, backend s3",
    ),
    Key(
        "gas",
        "archive_prefix",
        "archive/",
        nonempty,
        "key prefix of archived results in archive_bucket",
    ),
    Key(
        "gas",
        "copy_part_size_mib",
        "64",
        int_range(5, 5120),
        "backend s3: part size of server-side copies (MiB); larger objects are copied in parts",
    ),
    Key(
        "gas",
        "transfer_threads",
        "4",
        int_range(1, 64),
        "parts of one transfer moved at once: vault uploads, thaw's ranges and uploads, S3 copies (memory: this x part size)",
    ),
    Key(
        "gas",
        "progress_seconds",
        "30",
        positive_int,
        "a transfer still running logs its progress (bytes, rate, time left) this often",
    ),
    Key(
        "gas",
        "archive_storage_class",
        "GLACIER",
        choice("GLACIER", "DEEP_ARCHIVE"),
        "S3 storage class of archived results, backend s3",
    ),
    Key(
        "gas",
        "job_requests_topic",
        "gas-job-requests",
        nonempty,
        "SNS topic of job requests (name or ARN)",
    ),
    Key(
        "gas",
        "job_requests_queue",
        "gas-job-requests",
        nonempty,
        "SQS queue of job requests the annotator fleet consumes (name or URL)",
    ),
    Key(
        "gas",
        "job_results_topic",
        "gas-job-results",
        nonempty,
        "SNS topic of job results (name or ARN)",
    ),
    Key(
        "gas",
        "thaw_topic",
        "gas-thaw",
        nonempty,
        "SNS topic Glacier announces finished retrievals on (name or ARN)",
    ),
    Key("gas", "web_url", "http://localhost:5000", nonempty, "base URL of the GAS web app"),
    # The worker runtime, shared by the four queue workers.
    Key("worker", "wait_seconds", "20", int_range(0, 20), "SQS long-poll wait (0-20 s)"),
    Key("worker", "max_messages", "10", int_range(1, 10), "messages per receive (1-10)"),
    Key(
        "worker",
        "concurrency",
        "4",
        positive_int,
        "messages handled at once; a slot that frees is refilled at once",
    ),
    Key(
        "worker",
        "drain_seconds",
        "60",
        positive_int,
        "on SIGTERM, how long in-flight work may finish",
    ),
    Key(
        "worker",
        "handler_timeout_seconds",
        "10800",
        int_range(1, 43199),
        "past this a handler is cancelled and its message handed back",
    ),
    # With the defaults, the 10 retries wait 120, 240, 480, 960, 1920 and 5 x 3600 s: an outage
    # of 6 h (21,720 s) before the dead-letter queue (docs/runtime.md).
    Key(
        "worker",
        "retry_base_seconds",
        "120",
        int_range(1, 43199),
        "a retried message comes back after this long, doubled per earlier retry (plus up to 25% jitter)",
    ),
    Key(
        "worker",
        "retry_max_seconds",
        "3600",
        int_range(1, 43199),
        "the longest a retry or defer waits; a longer defer comes back then and is deferred again",
    ),
    Key(
        "worker",
        "max_retries",
        "10",
        int_range(0, 1000),
        "retries of one message; at its handler's next retry the worker moves it to the dead-letter queue with the last reason",
    ),
    Key(
        "worker",
        "log_format",
        "text",
        choice("text", "json"),
        "text or json (one object per line)",
    ),
    Key("worker", "log_level", "INFO", log_level, "DEBUG, INFO, WARNING or ERROR, in any case"),
    Key(
        "worker",
        "aws_max_attempts",
        "5",
        positive_int,
        "total attempts per AWS call (botocore standard retry mode)",
    ),
    # One section per utility; `queue` is the queue that utility consumes (name or URL).
    Key("archive", "queue", "gas-archive", nonempty, "queue of archive requests {job_id, user_id}"),
    Key(
        "archive",
        "grace_seconds",
        "300",
        non_negative_int,
        "free users keep their result this long after completion",
    ),
    Key(
        "archive",
        "part_size_mib",
        "16",
        power_of_two_mib(1),
        "Glacier multipart part size (MiB, power of two)",
    ),
    Key("restore", "queue", "gas-restore", nonempty, "queue of restore requests {user_id}"),
    Key("restore", "concurrency", "8", positive_int, "retrievals of one user started at once"),
    Key(
        "restore",
        "index_settle_seconds",
        "15",
        non_negative_int,
        "a restore message younger than this is looked at again once it is this old: the user_id_index may not yet show an archive recorded just before the upgrade",
    ),
    Key("restore", "page_size", "100", int_range(1, 1000), "jobs per query of the user_id_index"),
    Key(
        "restore",
        "claim_seconds",
        "300",
        positive_int,
        "a worker that crashed while starting a retrieval blocks it this long",
    ),
    # Short: thaw copies the result back at once, a restored copy is billed while it lasts,
    # and only once it has expired does a new restore (after a lapsed one) announce again.
    Key(
        "restore",
        "restore_days",
        "1",
        positive_int,
        "backend s3: days a restored copy stays readable (thaw copies it back at once)",
    ),
    Key(
        "restore",
        "retrieval_lifetime_seconds",
        "108000",
        positive_int,
        "a recorded retrieval older than this may be started again (Glacier keeps output 24 h after a job of up to 5 h)",
    ),
    Key("thaw", "queue", "gas-thaw", nonempty, "queue subscribed to the thaw topic"),
    # S3 parts must be at least 5 MiB, Glacier's tree-hash-aligned ranges a power of two.
    Key(
        "thaw",
        "part_size_mib",
        "16",
        power_of_two_mib(8),
        "verified range of Glacier job output, and S3 upload part (MiB)",
    ),
    Key("notify", "queue", "gas-notify", nonempty, "queue subscribed to the job-results topic"),
    Key("notify", "sender", "noreply@gas.example.com", nonempty, "verified SES sender address"),
    Key(
        "notify",
        "claim_seconds",
        "120",
        positive_int,
        "a copy of a message another worker is e-mailing waits this long for it",
    ),
    Key(
        "notify",
        "templates",
        "templates",
        nonempty,
        "directory of the e-mail templates (a relative path is taken from util/notify/)",
    ),
    # The anti-entropy sweep (util/reconcile): what it calls lost, late or orphaned.
    Key(
        "reconcile",
        "slack_seconds",
        "3600",
        non_negative_int,
        "a result still in S3 this long past the archive grace (and the archive queue's visibility timeout) means its archive message was lost",
    ),
    Key(
        "reconcile",
        "orphan_age_seconds",
        "86400",
        non_negative_int,
        "an archive no job names is deleted only if it was this old when it was listed (the vault: when its inventory was taken)",
    ),
    Key(
        "reconcile",
        "scan_segments",
        "4",
        int_range(1, 64),
        "parallel Scan segments over the annotations table",
    ),
    Key(
        "reconcile",
        "page_size",
        "1000",
        int_range(1, 1000),
        "items per Scan page, keys per S3 listing page",
    ),
    Key(
        "reconcile",
        "report_key",
        "reconcile/last-report.json",
        nonempty,
        "key in results_bucket where each pass leaves its report (read by util.status)",
    ),
    Key(
        "reconcile",
        "restore_grace_seconds",
        "900",
        non_negative_int,
        "a premium user is sent no restore message within this long of the one a pass sent, or of a pass seeing restore messages queued (perhaps the web app's)",
    ),
    # Metrics in CloudWatch Embedded Metric Format (util/metrics.py).
    Key(
        "metrics",
        "emf",
        "off",
        choice("off", "stdout", "stderr"),
        "where EMF metric lines go: off, stdout (a stream of their own), or stderr (with the log)",
    ),
    Key("metrics", "namespace", "GAS", nonempty, "CloudWatch namespace of the EMF metrics"),
    # The load generator (util/ann_load.py); its command line overrides these.
    Key(
        "ann_load",
        "users",
        "u-alice,u-bob,u-carol",
        names,
        "users jobs are submitted for, in turn (comma-separated user ids; each must exist)",
    ),
    Key(
        "ann_load",
        "prefix",
        "ann_load",
        nonempty,
        "S3 key prefix of synthetic inputs: <prefix>/<user_id>/<job_id>~<file name>",
    ),
    Key(
        "ann_load",
        "drain_seconds",
        "60",
        non_negative_int,
        "after the last send, how long to wait for jobs to complete",
    ),
    Key(
        "ann_load",
        "late_ms",
        "10",
        non_negative_int,
        "a send this many ms after its intended time counts as late",
    ),
)

UTILITY_DIR = Path(__file__).resolve().parent
# Keys of sections another package owns (the local stack's ``[local]``: localaws/settings.py),
# known to `load` once that package has registered them.
_REGISTERED: list[Key] = []


def register(keys: Iterable[Key]) -> None:
    """Make `keys` settings `load` knows (safe to call again)."""
    known = {(k.section, k.name) for k in all_keys()}
    _REGISTERED.extend(k for k in keys if (k.section, k.name) not in known)


def all_keys() -> tuple[Key, ...]:
    return KEYS + tuple(_REGISTERED)


def sections() -> tuple[str, ...]:
    return tuple(dict.fromkeys(key.section for key in all_keys()))


class Config(SimpleNamespace):
    """Parsed settings, one namespace per section: ``config.archive.grace_seconds``."""


def env_name(key: Key) -> str:
    return f"GAS_{key.section.upper()}_{key.name.upper()}"


def load(
    utility: str | None = None,
    files: Iterable[str | Path] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read every layer and return the parsed settings, or raise ConfigError naming the key."""
    environ = os.environ if environ is None else environ
    keys = all_keys()
    raw: dict[tuple[str, str], tuple[str, str]] = {
        (k.section, k.name): (k.default, "default") for k in keys
    }
    layers = [UTILITY_DIR / utility / f"{utility}_config.ini"] if utility else []
    for path in [*layers, *map(Path, files)]:
        raw.update(_read_ini(path))
    for key in keys:
        if env_name(key) in environ:
            raw[(key.section, key.name)] = (environ[env_name(key)], env_name(key))
    _reject_unknown_env(environ)

    parsed: dict[str, dict[str, Any]] = {section: {} for section in sections()}
    for key in keys:
        text, origin = raw[(key.section, key.name)]
        try:
            parsed[key.section][key.name] = key.parse(text.strip())
        except ValueError as exc:
            raise ConfigError(
                f"[{key.section}] {key.name} = {text!r} (from {origin}): {exc}"
            ) from None
    return Config(**{name: SimpleNamespace(**values) for name, values in parsed.items()})


def _read_ini(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    text = _read_text(path)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise _syntax_error(path, text, exc) from None
    known = {(k.section, k.name) for k in all_keys()}
    values = {}
    for section in parser.sections():
        if section not in sections():
            raise ConfigError(f"{path}: unknown section [{section}]")
        for name, text in parser.items(section):
            if (section, name) not in known:
                raise ConfigError(f"{path}: unknown key [{section}] {name}")
            values[(section, name)] = (text, str(path))
    return values


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, with or without the byte order mark Windows editors write."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data:
        raise ConfigError(f"config file {path}: UTF-16 (or has NUL bytes); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config file {path}, line {line}: not UTF-8; save it as UTF-8") from None


def _syntax_error(path: Path, text: str, exc: configparser.Error) -> ConfigError:
    """The file and the first bad line, in one line (configparser's message spans several)."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        number, problem = exc.lineno, "comes before any [section]"
    elif isinstance(exc, configparser.ParsingError):
        number, problem = exc.errors[0][0], "is not `key = value`"
    else:  # a [section] or a key twice: the message names it after the line
        number, problem = getattr(exc, "lineno", 0), exc.message.rpartition("]: ")[2]
        return ConfigError(f"config file {path}, line {number}: {problem}")
    line = text.split("\n")[number - 1].strip()[:80]  # as configparser numbers lines
    return ConfigError(f"config file {path}, line {number}: {line!r} {problem}")


def _reject_unknown_env(environ: Mapping[str, str]) -> None:
    """A misspelt GAS_ARCHIVE_GRACE_SECONDS would otherwise be silently ignored."""
    known = {env_name(k) for k in all_keys()}
    prefixes = tuple(f"GAS_{section.upper()}_" for section in sections())
    for name in environ:
        if name.startswith(prefixes) and name not in known:
            raise ConfigError(f"environment variable {name}: no such setting")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """The `--config FILE` option every command shares: .ini files over the defaults."""
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="extra .ini file (repeatable; later files win)",
    )


def markdown_table(keys: Iterable[Key] = KEYS) -> str:
    """A table of settings (docs/configuration.md's, from KEYS), generated so it cannot drift."""
    rows = ["| section | key | default | environment | meaning |", "|---|---|---|---|---|"]
    rows += [
        f"| {k.section} | {k.name} | `{k.default}` | `{env_name(k)}` | {k.doc} |" for k in keys
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
