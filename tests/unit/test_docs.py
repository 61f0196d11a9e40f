"""The documentation's links and the sections files name resolve, nothing in the repository
points outside it, and a figure the pages give twice is the same, or the one measured."""

import re
import subprocess
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.mutate import EQUIVALENT, MUTANTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for line in markdown.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []


def headings(markdown: Path) -> list[str]:
    return [
        line.lstrip("#").strip() for line in markdown.read_text().splitlines() if line[:1] == "#"
    ]


# A page named outside a markdown link: `docs/deploy.md#iam`, `docs/deploy.md, "IAM"` or
# `docs/deploy.md, step 4` (its heading "## 4. ..."), in any tracked file.
REFERENCE = re.compile(
    r'(?<![\w:/.-])((?:[\w-]+/)*[\w-]+\.md)(?:#([\w-]+)|, "([^"]+)"|, step (\d+))'
)


def test_every_section_a_file_names_exists() -> None:
    broken = []
    for name in tracked_files():
        source = ROOT / name
        if source.suffix in {".vcf", ".pyc"} or not source.is_file():
            continue
        for match in REFERENCE.finditer(source.read_text(errors="replace")):
            path, anchor, title, step = match.groups()
            page = next((p for p in (ROOT / path, source.parent / path) if p.is_file()), None)
            if page is None:
                broken.append(f"{name}: {path} (no such file)")
            elif anchor and anchor not in anchors(page):
                broken.append(f"{name}: {path}#{anchor} (no such heading)")
            elif title and " ".join(re.sub(r"\n\s*#?", " ", title).split()).lower() not in {
                heading.lower() for heading in headings(page)
            }:
                broken.append(f'{name}: {path}, "{title}" (no such heading)')
            elif step and not any(h.startswith(f"{step}. ") for h in headings(page)):
                broken.append(f"{name}: {path}, step {step} (no such step)")
    assert broken == []


def tracked_files() -> list[str]:
    return subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


def test_no_tracked_file_points_outside_the_repository() -> None:
    outside = ("../" + "shared", "DESIGN" + ".md")
    hits = [
        f"{name}: {word}"
        for name in tracked_files()
        if (ROOT / name).is_file() and not name.endswith((".vcf", ".pyc"))
        for word in outside
        if word in (ROOT / name).read_text(errors="replace")
    ]
    assert hits == []


def test_the_fidelity_table_names_every_contract_test_and_no_other() -> None:
    page = (ROOT / "docs" / "local-stack.md").read_text()
    table = page.split("## Fidelity")[1].split("\n## ")[0]
    named = set(re.findall(r"::(test_\w+)", table))
    defined = {
        name
        for path in (ROOT / "tests" / "contract").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert named == defined


def said(pattern: str) -> list[tuple[str, tuple[str, ...]]]:
    """Where README.md and docs/ say a figure, and its groups: (page, groups)."""
    return [
        (doc.name, match.groups())
        for doc in DOCS
        for match in re.finditer(pattern, doc.read_text())
    ]


def test_the_mutation_figures_are_said_once_and_count_the_list() -> None:
    assert {groups for _, groups in said(r"(\d+) mutants")} == {(str(len(MUTANTS)),)}
    [(_, (killed, counted))] = said(r"(\d+) of (\d+)\s+killed")
    assert int(counted) + len(EQUIVALENT) == len(MUTANTS) and int(killed) <= int(counted)
    assert {groups for _, groups in said(r"(\d+) equivalent")} == {(str(len(EQUIVALENT)),)}


def test_readme_gives_the_measured_time_of_make_test() -> None:
    [(_, (minutes,))] = said(r"make test .*\(about (\d+) minutes")
    [(_, (seconds,))] = said(r"\| `make test` \| [^|]* \| (\d+) s")
    assert int(minutes) == round(int(seconds) / 60)


NUMBERS = "one two three four five six seven eight nine ten eleven twelve".split()


def test_deploy_names_every_package_make_install_installs() -> None:
    """The distributions requirements.txt brings, by the metadata of those installed here."""
    wanted, installs = (ROOT / "requirements.txt").read_text().splitlines(), set()
    while wanted:
        line = wanted.pop().split("#")[0].strip()
        requirement = Requirement(line) if line else None
        if requirement is None or (
            requirement.marker and not requirement.marker.evaluate({"extra": ""})
        ):
            continue
        if (name := canonicalize_name(requirement.name)) not in installs:
            installs.add(name)
            wanted.extend(requires(name) or [])
    page = (ROOT / "docs" / "deploy.md").read_text()
    listed, count = re.search(
        r"installs `requirements.txt` only: (.*?) — (\w+) packages", page, re.DOTALL
    ).groups()
    named = {
        canonicalize_name(n) for n in re.split(r",\s*(?:and\s+)?|\s+and\s+|\s+with\s+", listed) if n
    }
    assert named == installs and NUMBERS.index(count) + 1 == len(installs)
