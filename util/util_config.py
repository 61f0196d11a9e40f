"""Configuration common to all utilities: every key, its default and its type, in one place.

Layers, later wins: the defaults below -> the utility's ``<name>_config.ini`` -> each
``--config FILE`` -> environment variables ``GAS_<SECTION>_<KEY>`` (``GAS_ARCHIVE_QUEUE``).

AWS endpoint, region and credentials are deliberately absent: they come from the standard
AWS chain (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, profiles, instance profile).
"""

from __future__ import annotations

import argparse
import configparser
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be >= {low}" if high is None else f"must be {low}-{high}")
        return value

    return parse


_positive_int = _int_range(1)
_non_negative_int = _int_range(0)


def _power_of_two_mib(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if value < low or value > 4096 or value & (value - 1):
            raise ValueError(f"must be a power of two from {low} to 4096")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise ValueError("must be a finite number >= 0")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def _name(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of one or more names."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise ValueError("must be names separated by commas, none empty")
    return names


def _bool(text: str) -> bool:
    """The words configparser takes for a boolean, in any case."""
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError("must be true or false") from None


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
    Key("gas", "annotations_table", "gas-annotations", _name, "DynamoDB table of annotation jobs"),
    Key("gas", "users_table", "gas-users", _name, "DynamoDB table of users (role, name, email)"),
    Key("gas", "inputs_bucket", "gas-inputs", _name, "S3 bucket of uploaded input files"),
    Key("gas", "results_bucket", "gas-results", _name, "S3 bucket of result and log files"),
    # Where archived results live (util/backends.py): a Glacier vault, or S3 storage classes
    # (the vault API takes no new AWS accounts since 2025-12-15).
    Key(
        "gas",
        "archive_backend",
        "vault",
        _choice("vault", "s3"),
        "vault (Glacier vault API) or s3 (S3 Glacier storage classes)",
    ),
    Key(
        "gas",
        "vault",
        "gas-archive",
        _name,
        "Glacier vault of archived results (name), backend vault",
    ),
    Key(
        "gas",
        "archive_bucket",
        "gas-archive-objects",
        _name,
        "S3 bucket of archived results, backend s3",
    ),
    Key(
        "gas",
        "archive_prefix",
        "archive/",
        _name,
        "key prefix of archived results in archive_bucket",
    ),
    Key(
        "gas",
        "copy_part_size_mib",
        "64",
        _int_range(5, 5120),
        "backend s3: part size of server-side copies (MiB); larger objects are copied in parts",
    ),
    Key(
        "gas",
        "transfer_threads",
        "4",
        _int_range(1, 64),
        "parts of one transfer moved at once: vault uploads, thaw's ranges and uploads, S3 copies (memory: this x part size)",
    ),
    Key(
        "gas",
        "progress_seconds",
        "30",
        _positive_int,
        "a transfer still running logs its progress (bytes, rate, time left) this often",
    ),
    Key(
        "gas",
        "archive_storage_class",
        "GLACIER",
        _choice("GLACIER", "DEEP_ARCHIVE"),
        "S3 storage class of archived results, backend s3",
    ),
    Key(
        "gas",
        "job_requests_topic",
        "gas-job-requests",
        _name,
        "SNS topic of job requests (name or ARN)",
    ),
    Key(
        "gas",
        "job_requests_queue",
        "gas-job-requests",
        _name,
        "SQS queue of job requests the annotator fleet consumes (name or URL)",
    ),
    Key(
        "gas",
        "job_results_topic",
        "gas-job-results",
        _name,
        "SNS topic of job results (name or ARN)",
    ),
    Key(
        "gas",
        "thaw_topic",
        "gas-thaw",
        _name,
        "SNS topic Glacier announces finished retrievals on (name or ARN)",
    ),
    Key("gas", "web_url", "http://localhost:5000", _name, "base URL of the GAS web app"),
    # The worker runtime, shared by the four queue workers.
    Key("worker", "wait_seconds", "20", _int_range(0, 20), "SQS long-poll wait (0-20 s)"),
    Key("worker", "max_messages", "10", _int_range(1, 10), "messages per receive (1-10)"),
    Key(
        "worker",
        "concurrency",
        "4",
        _positive_int,
        "messages handled at once; a slot that frees is refilled at once",
    ),
    Key(
        "worker",
        "drain_seconds",
        "60",
        _positive_int,
        "on SIGTERM, how long in-flight work may finish",
    ),
    Key(
        "worker",
        "handler_timeout_seconds",
        "10800",
        _int_range(1, 43199),
        "past this a handler is cancelled and its message handed back",
    ),
    # With the defaults, the 10 retries wait 120, 240, 480, 960, 1920 and 5 x 3600 s: an outage
    # of 6 h (21,720 s) before the dead-letter queue (docs/runtime.md).
    Key(
        "worker",
        "retry_base_seconds",
        "120",
        _int_range(1, 43199),
        "a retried message comes back after this long, doubled per earlier retry (plus up to 25% jitter)",
    ),
    Key(
        "worker",
        "retry_max_seconds",
        "3600",
        _int_range(1, 43199),
        "the longest a retry or defer waits; a longer defer comes back then and is deferred again",
    ),
    Key(
        "worker",
        "max_retries",
        "10",
        _int_range(0, 1000),
        "retries of one message; at its handler's next retry the worker moves it to the dead-letter queue with the last reason",
    ),
    Key(
        "worker",
        "log_format",
        "text",
        _choice("text", "json"),
        "text or json (one object per line)",
    ),
    Key(
        "worker", "log_level", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "logging level"
    ),
    Key(
        "worker",
        "aws_max_attempts",
        "5",
        _positive_int,
        "total attempts per AWS call (botocore standard retry mode)",
    ),
    # One section per utility; `queue` is the queue that utility consumes (name or URL).
    Key("archive", "queue", "gas-archive", _name, "queue of archive requests {job_id, user_id}"),
    Key(
        "archive",
        "grace_seconds",
        "300",
        _non_negative_int,
        "free users keep their result this long after completion",
    ),
    Key(
        "archive",
        "part_size_mib",
        "16",
        _power_of_two_mib(1),
        "Glacier multipart part size (MiB, power of two)",
    ),
    Key("restore", "queue", "gas-restore", _name, "queue of restore requests {user_id}"),
    Key("restore", "concurrency", "8", _positive_int, "retrievals of one user started at once"),
    Key(
        "restore",
        "index_settle_seconds",
        "15",
        _non_negative_int,
        "a restore message younger than this is looked at again once it is this old: the user_id_index may not yet show an archive recorded just before the upgrade",
    ),
    Key("restore", "page_size", "100", _int_range(1, 1000), "jobs per query of the user_id_index"),
    Key(
        "restore",
        "claim_seconds",
        "300",
        _positive_int,
        "a worker that crashed while starting a retrieval blocks it this long",
    ),
    # Short: thaw copies the result back at once, a restored copy is billed while it lasts,
    # and only once it has expired does a new restore (after a lapsed one) announce again.
    Key(
        "restore",
        "restore_days",
        "1",
        _positive_int,
        "backend s3: days a restored copy stays readable (thaw copies it back at once)",
    ),
    Key(
        "restore",
        "retrieval_lifetime_seconds",
        "108000",
        _positive_int,
        "a recorded retrieval older than this may be started again (Glacier keeps output 24 h after a job of up to 5 h)",
    ),
    Key("thaw", "queue", "gas-thaw", _name, "queue subscribed to the thaw topic"),
    # S3 parts must be at least 5 MiB, Glacier's tree-hash-aligned ranges a power of two.
    Key(
        "thaw",
        "part_size_mib",
        "16",
        _power_of_two_mib(8),
        "verified range of Glacier job output, and S3 upload part (MiB)",
    ),
    Key("notify", "queue", "gas-notify", _name, "queue subscribed to the job-results topic"),
    Key("notify", "sender", "noreply@gas.example.com", _name, "verified SES sender address"),
    Key(
        "notify",
        "claim_seconds",
        "120",
        _positive_int,
        "a copy of a message another worker is e-mailing waits this long for it",
    ),
    Key(
        "notify",
        "templates",
        "templates",
        _name,
        "directory of the e-mail templates (a relative path is taken from util/notify/)",
    ),
    # The anti-entropy sweep (util/reconcile): what it calls lost, late or orphaned.
    Key(
        "reconcile",
        "slack_seconds",
        "3600",
        _non_negative_int,
        "a result still in S3 this long past the archive grace (and the archive queue's visibility timeout) means its archive message was lost",
    ),
    Key(
        "reconcile",
        "orphan_age_seconds",
        "86400",
        _non_negative_int,
        "an archive no job names is deleted only if it was this old when it was listed (the vault: when its inventory was taken)",
    ),
    Key(
        "reconcile",
        "scan_segments",
        "4",
        _int_range(1, 64),
        "parallel Scan segments over the annotations table",
    ),
    Key(
        "reconcile",
        "page_size",
        "1000",
        _int_range(1, 1000),
        "items per Scan page, keys per S3 listing page",
    ),
    Key(
        "reconcile",
        "report_key",
        "reconcile/last-report.json",
        _name,
        "key in results_bucket where each pass leaves its report (read by util.status)",
    ),
    Key(
        "reconcile",
        "restore_grace_seconds",
        "900",
        _non_negative_int,
        "a premium user is sent no restore message within this long of the one a pass sent, or of a pass seeing restore messages queued (perhaps the web app's)",
    ),
    # Metrics in CloudWatch Embedded Metric Format (util/metrics.py).
    Key(
        "metrics",
        "emf",
        "off",
        _choice("off", "stdout", "stderr"),
        "where EMF metric lines go: off, stdout (a stream of their own), or stderr (with the log)",
    ),
    Key("metrics", "namespace", "GAS", _name, "CloudWatch namespace of the EMF metrics"),
    # The load generator (util/ann_load.py); its command line overrides these.
    Key(
        "ann_load",
        "users",
        "u-alice,u-bob,u-carol",
        _names,
        "users jobs are submitted for, in turn (comma-separated user ids; each must exist)",
    ),
    Key(
        "ann_load",
        "prefix",
        "ann_load",
        _name,
        "S3 key prefix of synthetic inputs: <prefix>/<user_id>/<job_id>~<file name>",
    ),
    Key(
        "ann_load",
        "drain_seconds",
        "60",
        _non_negative_int,
        "after the last send, how long to wait for jobs to complete",
    ),
    Key(
        "ann_load",
        "late_ms",
        "10",
        _non_negative_int,
        "a send this many ms after its intended time counts as late",
    ),
    # The local stack's Glacier emulations (util/local/glacier.py, S3 restores: util/local/s3.py);
    # AWS itself ignores these.
    Key(
        "local",
        "expedited_seconds",
        "1",
        _non_negative_int,
        "local stack: seconds an Expedited Glacier job or S3 restore takes (0: at once)",
    ),
    Key(
        "local",
        "standard_seconds",
        "3",
        _non_negative_int,
        "local stack: seconds a Standard Glacier job or S3 restore takes",
    ),
    Key(
        "local",
        "bulk_seconds",
        "5",
        _non_negative_int,
        "local stack: seconds a Bulk Glacier job or S3 restore takes",
    ),
    Key(
        "local",
        "expedited_capacity",
        "true",
        _bool,
        "local stack: false makes Expedited retrievals fail with InsufficientCapacityException (vault) or GlacierExpeditedRetrievalNotAvailable (S3)",
    ),
    Key(
        "local",
        "fail_retrievals",
        "0",
        _non_negative_int,
        "local stack: the next N archive-retrieval jobs end Failed",
    ),
    Key(
        "local",
        "day_seconds",
        "86400",
        _positive_int,
        "local stack: seconds in a day, for the Days of restored S3 copies and the 24 h Glacier keeps job output (shorten to see them expire)",
    ),
    Key(
        "local",
        "inventory_delay_seconds",
        "0",
        _non_negative_int,
        "local stack: a new vault has no inventory until this long after its creation (AWS: up to a day)",
    ),
    Key(
        "local",
        "index_lag_seconds",
        "0",
        _non_negative_float,
        "local stack: a Query of a global secondary index sees the table as it was this many seconds ago (DynamoDB's index reads are eventually consistent)",
    ),
    Key(
        "local",
        "ses_sandbox",
        "false",
        _bool,
        "local stack: true refuses e-mail to recipients that are not verified, as SES's sandbox does",
    ),
    Key(
        "local",
        "bucket_encryption",
        "AES256",
        _choice("AES256", "aws:kms", "aws:kms:dsse"),
        "local stack: default encryption of the buckets it creates (AES256 is SSE-S3, AWS's default; aws:kms objects have ETags that are not MD5 digests)",
    ),
    # The simulated annotator (util/local/annotator.py).
    Key(
        "local",
        "annotator_concurrency",
        "10",
        _positive_int,
        "local stack: jobs the simulated annotator fleet runs at once",
    ),
    Key(
        "local",
        "annotator_seconds",
        "1",
        _non_negative_float,
        "local stack: seconds the simulated annotator takes per job",
    ),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(key.section for key in KEYS))
UTILITY_DIR = Path(__file__).resolve().parent


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
    raw: dict[tuple[str, str], tuple[str, str]] = {
        (k.section, k.name): (k.default, "default") for k in KEYS
    }
    layers = [UTILITY_DIR / utility / f"{utility}_config.ini"] if utility else []
    for path in [*layers, *map(Path, files)]:
        raw.update(_read_ini(path))
    for key in KEYS:
        if env_name(key) in environ:
            raw[(key.section, key.name)] = (environ[env_name(key)], env_name(key))
    _reject_unknown_env(environ)

    sections: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key in KEYS:
        text, origin = raw[(key.section, key.name)]
        try:
            sections[key.section][key.name] = key.parse(text.strip())
        except ValueError as exc:
            raise ConfigError(
                f"[{key.section}] {key.name} = {text!r} (from {origin}): {exc}"
            ) from None
    return Config(**{name: SimpleNamespace(**values) for name, values in sections.items()})


def _read_ini(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"config file {path}: {exc.message.splitlines()[0]}") from None
    known = {(k.section, k.name) for k in KEYS}
    values = {}
    for section in parser.sections():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]")
        for name, text in parser.items(section):
            if (section, name) not in known:
                raise ConfigError(f"{path}: unknown key [{section}] {name}")
            values[(section, name)] = (text, str(path))
    return values


def _reject_unknown_env(environ: Mapping[str, str]) -> None:
    """A misspelt GAS_ARCHIVE_GRACE_SECONDS would otherwise be silently ignored."""
    known = {env_name(k) for k in KEYS}
    prefixes = tuple(f"GAS_{section.upper()}_" for section in SECTIONS)
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


def markdown_table() -> str:
    """The table of settings in docs/configuration.md, generated from KEYS so it cannot drift."""
    rows = ["| section | key | default | environment | meaning |", "|---|---|---|---|---|"]
    rows += [
        f"| {k.section} | {k.name} | `{k.default}` | `{env_name(k)}` | {k.doc} |" for k in KEYS
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
