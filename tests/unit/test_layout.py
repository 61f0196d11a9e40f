"""The shape of util/ stays as docs/design.md and the README say: small modules that say what
they are, and one place that picks the archive back end."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

MODULES = sorted((ROOT / "util").rglob("*.py"))
# Everything that might branch on the back end: the utilities, the local stack, deploy, bench.
PROJECT = sorted(
    p for d in ("util", "localaws", "deploy", "bench") for p in (ROOT / d).rglob("*.py")
)


def test_every_module_is_under_500_lines_and_opens_with_a_short_docstring() -> None:
    too_long = []
    for path in MODULES:
        source = path.read_text()
        docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
        lines = len(source.splitlines())
        if lines > 500 or not docstring or len(docstring.strip("\n").splitlines()) >= 15:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert too_long == []


def test_only_backend_class_looks_at_which_back_end_is_configured() -> None:
    # A branch on the back end's name (archive_backend == "s3", say) anywhere else would
    # make a third back end, or retiring the vault, an edit of every such place.
    chooses = re.compile(r"archive_backend\s*(==|!=|\bin\b)|backend\w*\s*[!=]=\s*\"(s3|vault)\"")
    branches = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in PROJECT
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if chooses.search(line)
    ]
    assert branches == []
    picks = [p for p in MODULES if "config.gas.archive_backend" in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in picks] == [
        "util/archives/__init__.py",
        "util/reconcile/reconcile.py",  # the report's label, no branch
    ]
