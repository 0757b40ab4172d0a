"""The README is the front door: short, its commands the ones CI runs, every link alive; the
options removed in issue 30 appear in the docs only as measured results."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"


def _links(path: Path) -> list[str]:
    """Relative link and image targets of a Markdown file (no URLs, no anchors-only links)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]


def test_readme_fits_in_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_readme_train_and_test_commands_are_the_ones_ci_runs():
    """The README's two commands (install and train; install and test), verbatim, are the
    commands .ci/run runs, in that order."""
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("pip install")]
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    assert ci == ["pip install . && lenet5 train", 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest']
    assert all(command in lines for command in ci)


def test_every_link_in_the_readme_and_docs_exists():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    broken = [(p.name, t) for p in pages for t in _links(p) if not (p.parent / t).exists()]
    assert not broken, broken
    linked = {(README.parent / t).resolve() for t in _links(README)}
    assert {p.resolve() for p in DOCS.glob("*.md")} <= linked  # every page is reachable from the README


def test_removed_options_are_only_results():
    removed = ["--label-smoothing", "--cutout", "--ema", "elastic-mild"]
    for page in [README, *DOCS.glob("*.md")]:
        if page.name == "results.md":
            continue
        text = page.read_text()
        assert not [o for o in removed if o in text], page.name
