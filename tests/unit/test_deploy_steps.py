"""docs/deploy.md's steps, walked on a scratch root: they install every unit and file that the
documentation later names.

The `sh` blocks of the numbered steps ("## 1." on) run in order, as one bash script (`set -e`,
`pipefail`), with these rules:

- absolute paths are moved under the scratch root (`/etc/gas` is `<root>/etc/gas`), which
  starts with what a systemd host has: `/etc/systemd/system`, `/etc/sysusers.d`, `/opt`;
- `<this repository>` is this repository;
- PATH holds nothing but: recorders for the commands that act on the system rather than on
  files (RECORDED: package managers, git, make, systemd, aws, users), which log their
  arguments and directory, `git clone` also copying `deploy/` and `docs/` to its target;
  `sudo`, which runs its command; `install`, without `-g`/`-o` (there is no user gas here);
  and the real file commands of FILES. Any other command is not found and fails the walk:
  a new one goes in one of the two lists.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.unit.test_systemd_units import service_section

DEPLOY = ROOT / "docs" / "deploy.md"
RECORDED = (
    "dnf apt-get yum git make systemctl systemd-sysusers useradd groupadd journalctl aws".split()
)
FILES = "cp mkdir ln tee tr cat chmod mv".split()
HOST_DIRECTORIES = ("etc/systemd/system", "etc/sysusers.d", "opt")
UNITS = "etc/systemd/system"

RECORDER = """#!/bin/sh
printf '%s\\t%s\\n' "$PWD" "${0##*/} $*" >> "$CALLS"
if [ "${0##*/}" = git ] && [ "$1" = clone ]; then
  mkdir -p "$3" && cp -R "$2/deploy" "$2/docs" "$3/"
fi
"""
SUDO = '#!/bin/sh\nexec "$@"\n'
INSTALL = """#!/bin/sh
n=$#; drop=
for a in "$@"; do
  if [ -n "$drop" ]; then drop=
  elif [ "$a" = -g ] || [ "$a" = -o ]; then drop=1
  else set -- "$@" "$a"; fi
done
shift $n
exec {install} "$@"
"""


def step_blocks() -> str:
    """The sh blocks of the numbered steps, in order."""
    steps = re.split(r"^## ", DEPLOY.read_text(), flags=re.MULTILINE)
    numbered = [step for step in steps if re.match(r"\d+\.", step)]
    return "\n".join(
        block for step in numbered for block in re.findall(r"```sh\n(.*?)```", step, re.DOTALL)
    )


def walk(root: Path, bin_dir: Path, calls: Path) -> subprocess.CompletedProcess[str]:
    """Runs the steps on root, under the rules above."""
    bin_dir.mkdir()
    for name in RECORDED:
        (bin_dir / name).write_text(RECORDER)
    (bin_dir / "sudo").write_text(SUDO)
    (bin_dir / "install").write_text(INSTALL.format(install=shutil.which("install")))
    for name in FILES:
        (bin_dir / name).symlink_to(shutil.which(name) or name)
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    for directory in HOST_DIRECTORIES:
        (root / directory).mkdir(parents=True)
    script = re.sub(r"(?<=[\s='\"])/(?=\w)", f"{root}/", step_blocks())
    script = script.replace("<this repository>", str(ROOT))
    return subprocess.run(
        [shutil.which("bash") or "bash", "-e", "-o", "pipefail", "-c", script],
        cwd=root,
        env={"PATH": str(bin_dir), "CALLS": str(calls), "HOME": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def unit_file(name: str) -> str:
    """The file of a unit as systemctl or journalctl names it: `gas-worker@thaw-2` and
    `gas-worker@*` are instances of `gas-worker@.service`; no suffix is a service."""
    name = name.strip("'\"")
    if "@" in name:
        prefix, _, rest = name.partition("@")
        return f"{prefix}@{rest[rest.index('.') :] if '.' in rest else '.service'}"
    return name if re.search(r"\.(service|timer|target)$", name) else f"{name}.service"


def named_units() -> dict[str, set[str]]:
    """Every GAS unit a systemctl or journalctl command names in README.md, docs/ or the unit
    files' comments, with where."""
    sources = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "deploy" / "systemd").iterdir()),
    ]
    command = re.compile(r"(?:systemctl(?: [a-z-]+)*|journalctl -u) ((?:'?gas-[\w@.*{},-]*'? ?)+)")
    found: dict[str, set[str]] = {}
    for source in sources:
        for names in command.findall(source.read_text()):
            for name in names.split():
                for expanded in braces(name):
                    found.setdefault(unit_file(expanded), set()).add(source.name)
    return found


def braces(name: str) -> list[str]:
    """A shell brace expansion of one word: `gas-worker@{archive,thaw}`."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [part.split(",") if i % 2 else [part] for i, part in enumerate(parts)]
    return ["".join(chosen) for chosen in itertools.product(*choices)]


def test_the_steps_install_every_unit_the_documentation_names(tmp_path: Path) -> None:
    root, calls = tmp_path / "root", tmp_path / "calls"
    run = walk(root, tmp_path / "bin", calls)
    assert run.returncode == 0, run.stderr
    installed = {path.name for path in (root / UNITS).iterdir()}
    missing = {name: where for name, where in named_units().items() if name not in installed}
    assert missing == {}
    for name in installed:
        if name.endswith(".timer"):
            assert service_section(root / UNITS / name, "Timer")["Unit"] in installed


def test_the_steps_make_what_the_units_read(tmp_path: Path) -> None:
    """The code and its venv where the units run it, the settings file, the user; the units
    loaded (daemon-reload) before any is enabled."""
    root, calls = tmp_path / "root", tmp_path / "calls"
    assert walk(root, tmp_path / "bin", calls).returncode == 0
    log = [line.rstrip().split("\t") for line in calls.read_text().splitlines()]
    commands = [command for _, command in log]
    assert [cwd for cwd, command in log if command.startswith("make install")] == [
        f"{root}/opt/gas"
    ]
    assert (root / "etc/sysusers.d/gas.conf").exists() and "systemd-sysusers" in commands
    reload = commands.index("systemctl daemon-reload")
    assert all(not c.startswith("systemctl enable") for c in commands[:reload])
    for name in ("gas-worker@.service", "gas-reconcile.service"):
        service = service_section(root / UNITS / name)
        assert (root / service["WorkingDirectory"].lstrip("/")).is_dir()
        assert "/opt/gas/.venv/bin/python" in service["ExecStart"]  # made by make install
        # The settings of every unit come first (the unit's own overrides after, made at will).
        assert unit_env_files(root / UNITS / name)[0] == "-/etc/gas/gas.env"
        assert (root / "etc/gas/gas.env").is_file()


def unit_env_files(path: Path) -> list[str]:
    """Every EnvironmentFile= of a unit (configparser keeps only the last of a repeated key)."""
    return re.findall(r"^EnvironmentFile=(\S+)", path.read_text(), re.MULTILINE)
