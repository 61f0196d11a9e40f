"""The documentation's links resolve, and nothing in the repository points outside it."""

import re
import subprocess
from pathlib import Path

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


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = ("../" + "shared", "DESIGN" + ".md")
    hits = [
        f"{name}: {word}"
        for name in files
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
