"""What a utility host installs is what util/ needs: a fresh virtualenv with requirements.txt
alone (as `make install` makes it) imports every module of util/. The local stack, the tests
and their packages (moto, pytest) live apart (localaws/, tests/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def util_modules() -> list[str]:
    """Every module under util/, by its import name."""
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "util").rglob("*.py")
    )


def test_the_production_install_imports_every_module_of_util(tmp_path: Path) -> None:
    # Given a fresh virtualenv with requirements.txt alone
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    # When every module of util/ is imported there
    modules = util_modules()
    assert "util.archives.s3" in modules and "util.local.__main__" in modules
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)",
            *modules,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then each imports: nothing of util/ needs what the production install lacks
    assert imported.returncode == 0, imported.stderr
