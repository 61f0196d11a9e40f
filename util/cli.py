"""What the commands share: the options, defined once (``--config``, ``--log-level``,
``--log-format``, ``--version``, and ``--format`` where a command prints results:
docs/operations.md#options-every-command-takes), and counts printed as words."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from util import __version__
from util.parsers import LOG_LEVELS, argument, log_level
from util.util_config import Config, add_config_option

FORMATS = ("text", "json")


def parser(prog: str, description: str, results: str | None = None) -> argparse.ArgumentParser:
    """A command's parser with the shared options; `results` says what `--format json`
    prints, for a command that prints results (it has no `--format` otherwise)."""
    parsed = argparse.ArgumentParser(prog=prog, description=description)
    add_config_option(parsed)
    parsed.add_argument(
        "--log-level",
        type=argument(log_level),
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)}, any case (default: [worker] log_level)",
    )
    parsed.add_argument(
        "--log-format",
        choices=FORMATS,
        help="text, or json: one object per line (default: [worker] log_format)",
    )
    parsed.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    if results is not None:
        parsed.add_argument(
            "--format",
            choices=FORMATS,
            default="text",
            help=f"print the results as text to read (the default), or json: {results}",
        )
    return parsed


def log_settings(args: argparse.Namespace, config: Config) -> tuple[str, str]:
    """The log format and level: the command line's, else the configuration's."""
    return (
        args.log_format or config.worker.log_format,
        args.log_level or config.worker.log_level,
    )


def counted(counts: Mapping[str, int | None]) -> str:
    """Counts named by plural nouns as words: ``{"items": 1, "archives": 0, "users": None}``
    is ``1 item, 0 archives, users unknown``."""
    return ", ".join(
        f"{name} unknown"
        if n is None
        else f"{n} {name[:-1] if n == 1 and name.endswith('s') else name}"
        for name, n in counts.items()
    )
