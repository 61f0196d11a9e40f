"""`make install` on a copy of the Makefile, with fake Pythons: no network, no real venv.

A fake answers what the Makefile asks a Python (`-V`, `-c CODE`, `-m venv DIR`, `-m pip
install`) as one of its version would, and logs every call: the tests see what make ran, in
which order. pyproject.toml's `requires-python` is the one minimum the Makefile and the
tools read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import util
from tests.conftest import ROOT

FAKE_PYTHON = '''#!{real}
"""Python {version} as far as make can tell. As `python -m venv` over an existing venv does
(measured: 3.11 over one made by 3.9), an existing bin/python is kept; boto3 and ijson import
once `-m pip install` has run in this venv; FAKE_PIP_FAILS=1 makes pip fail."""
import os, shutil, sys
from pathlib import Path

me, args = Path(sys.argv[0]), sys.argv[1:]
with open({log!r}, "a") as log:
    print(me, *args, file=log)
installed = me.parent.parent / "pip-installed"
if args == ["-V"]:
    print("Python {version}")
elif args[:2] == ["-m", "venv"]:
    python = Path(args[2]) / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        shutil.copy(me, python)
elif args[:3] == ["-m", "pip", "install"]:
    if os.environ.get("FAKE_PIP_FAILS"):
        sys.exit("ERROR: No matching distribution found")
    installed.touch()
elif args[0] == "-c":
    sys.version_info = {version_info!r}
    if not installed.exists():
        sys.modules["boto3"] = sys.modules["ijson"] = None
    exec(args[1])
else:
    sys.exit(f"fake python: unexpected {{args}}")
'''


def fake_python(directory: Path, version: str, log: Path) -> Path:
    """An executable `python<major.minor>` in directory that answers as `version` would."""
    path = directory / ("python" + ".".join(version.split(".")[:2]))
    path.write_text(
        FAKE_PYTHON.format(
            real=sys.executable,
            version=version,
            version_info=tuple(int(n) for n in version.split(".")),
            log=str(log),
        )
    )
    path.chmod(0o755)
    return path


def checkout(tmp_path: Path) -> Path:
    """The files `make install` reads, in a directory of their own."""
    tree = tmp_path / "gas"
    tree.mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tree / name)
    return tree


def make_install(tree: Path, python: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`make install` as a user runs it (not as a sub-make of `make test`), in English."""
    outer = {k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}}
    return subprocess.run(
        ["make", "install", f"PYTHON={python}"],
        cwd=tree,
        env={**outer, "LC_ALL": "C", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(log: Path, tree: Path) -> list[str]:
    """The fakes' calls in order: `<python, from tree or its parent> <arguments>`, the code
    of `-c` left out."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [
        re.sub(r" -c .*", " -c", line.replace(f"{tree}/", "").replace(f"{tree.parent}/", ""))
        for line in lines
    ]


def test_an_old_python_is_refused_in_one_line_before_anything_is_installed(
    tmp_path: Path,
) -> None:
    tree, log = checkout(tmp_path), tmp_path / "calls"
    python39 = fake_python(tmp_path, "3.9.18", log)
    run = make_install(tree, python39)
    assert run.returncode != 0
    ours = [line for line in run.stderr.splitlines() if not line.startswith("make: ***")]
    assert ours == [
        f"make install: GAS needs Python 3.11 or newer; PYTHON={python39} is Python 3.9.18 "
        "(give one: make install PYTHON=python3.11)"
    ]
    assert calls(log, tree) == ["python3.9 -c", "python3.9 -V"]
    assert not (tree / ".venv").exists()


def test_a_python_not_found_is_named(tmp_path: Path) -> None:
    run = make_install(checkout(tmp_path), tmp_path / "python3.11")
    assert run.returncode != 0
    assert f"PYTHON={tmp_path / 'python3.11'} is not found" in run.stderr


def test_a_venv_left_by_an_old_python_is_made_anew(tmp_path: Path) -> None:
    """What a 3.9 left behind (the venv made, pip refused) is replaced on the next run."""
    tree, log = checkout(tmp_path), tmp_path / "calls"
    python39 = fake_python(tmp_path, "3.9.18", log)
    subprocess.run([python39, "-m", "venv", tree / ".venv"], check=True)
    python311 = fake_python(tmp_path, "3.11.7", log)
    run = make_install(tree, python311)
    assert run.returncode == 0, run.stderr
    venv_python = subprocess.run(
        [tree / ".venv" / "bin" / "python", "-V"], capture_output=True, text=True, check=True
    )
    assert venv_python.stdout == "Python 3.11.7\n"
    assert (tree / ".venv" / ".installed").exists()
    assert make_install(tree, python311).stdout == "make: Nothing to be done for 'install'.\n"


def test_after_a_failed_pip_no_stamp_and_the_next_run_mends_it(tmp_path: Path) -> None:
    tree, log = checkout(tmp_path), tmp_path / "calls"
    python311 = fake_python(tmp_path, "3.11.7", log)
    failed = make_install(tree, python311, FAKE_PIP_FAILS="1")
    assert failed.returncode != 0 and "No matching distribution" in failed.stderr
    assert not (tree / ".venv" / ".installed").exists()
    mended = make_install(tree, python311)
    assert mended.returncode == 0, mended.stderr
    assert (tree / ".venv" / ".installed").exists()
    # The venv that could not import boto3 was made anew, then installed into and checked.
    assert calls(log, tree)[-5:] == [
        ".venv/bin/python -c",
        "python3.11 -c",
        "python3.11 -m venv .venv",
        ".venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt",
        ".venv/bin/python -c",
    ]


def test_one_minimum_python_for_make_the_tools_and_the_version_for_util() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum is not None
    major, minor = minimum.groups()
    assert pyproject["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert pyproject["tool"]["mypy"]["python_version"] == f"{major}.{minor}"
    assert pyproject["project"]["version"] == util.__version__
