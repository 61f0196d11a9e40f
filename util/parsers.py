"""How a setting or an option's text becomes a value: one parser per kind of value, for the
configuration (util/util_config.py: a ValueError says what is wrong, and load names the key)
and the command lines (`argument` makes one an argparse type)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

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


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole(text)
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be >= {low}" if high is None else f"must be {low}-{high}")
        return value

    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)


def power_of_two_mib(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _whole(text)
        if value < low or value > 4096 or value & (value - 1):
            raise ValueError(f"must be a power of two from {low} to 4096")
        return value

    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):  # also refuses nan
        raise ValueError("must be a finite number")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise ValueError("must be a finite number > 0")
    return value


def float_range(low: float, high: float, above: bool = False) -> Callable[[str], float]:
    """A finite number from `low` (or, `above`, more than it) up to `high`."""

    def parse(text: str) -> float:
        value = _finite(text)
        if value < low or (above and value == low) or value > high:
            raise ValueError(f"must be a number {'>' if above else '>='} {low:g} and <= {high:g}")
        return value

    return parse


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return parse


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(text: str) -> str:
    """A logging level, in any case (debug or DEBUG), as logging names it."""
    if text.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (any case)")
    return text.upper()


def nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list of one or more names."""
    parsed = tuple(name.strip() for name in text.split(","))
    if not all(parsed):
        raise ValueError("must be names separated by commas, none empty")
    return parsed


def boolean(text: str) -> bool:
    """The words configparser takes for a boolean, in any case."""
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError("must be true or false") from None


def argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` as an argparse type: its message, not argparse's "invalid value"."""

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    typed.__name__ = getattr(parse, "__name__", "value")
    return typed
