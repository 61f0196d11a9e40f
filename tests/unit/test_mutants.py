"""The mutation check's list follows the code: each mutant's snippet is found exactly once
(tests/mutate.py; a moved guard otherwise shows only in the hour-long `make mutate`)."""

from tests.mutate import MUTANTS, ROOT


def test_every_mutant_applies_exactly_once() -> None:
    misplaced = [
        f"{m.name}: found {(ROOT / m.file).read_text().count(m.original)} times in {m.file}"
        for m in MUTANTS
        if (ROOT / m.file).read_text().count(m.original) != 1
    ]
    assert misplaced == []
