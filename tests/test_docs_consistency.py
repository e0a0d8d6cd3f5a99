"""The README and docs/ against the code: set-up commands, links, every setting and its default (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

# What CI (.ci/run) and users run: the README opens with exactly these two commands.
SETUP = """# rad3d

```bash
bash scripts/demo.sh    # set up .venv/ (and WordNet), build the sample benchmark end to end, print where to look
bash scripts/test.sh    # set up .venv/ (and the Debian packages the tests need), lint, type-check, run every test
```
"""
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
VARIABLE = re.compile(r"\bRAD3D_[A-Z0-9_]*[A-Z0-9]\b")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(path: Path) -> list[str]:
    """Relative links of a Markdown file whose file or #anchor does not exist (code blocks ignored)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    broken = []
    for link in LINK.findall(text):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{path.name}: {link} (no such file)")
        elif anchor and file.suffix == ".md":
            body = FENCE.sub("", file.read_text(encoding="utf-8"))
            if anchor not in {slug(h) for h in HEADING.findall(body)}:
                broken.append(f"{path.name}: {link} (no such heading)")
    return broken


def settings_rows(text: str) -> dict[str, str]:
    """``NAME -> default cell`` for every backticked name in the first cell of a table row."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3:
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
                rows.setdefault(name, cells[1])
    return rows


def default_documented(default: str, cell: str) -> bool:
    if default == "":
        return "unset" in cell or "<out>" in cell
    return f"`{default}`" in cell


def test_readme_opens_with_the_two_setup_commands_and_fits_a_page() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.startswith(SETUP)
    assert "exec bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    assert len(text.splitlines()) < 200


def test_the_link_checker_catches_what_it_is_for(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n[ok](#two-words) [ok](a.md#top) [web](https://x.y/z)\n")
    (tmp_path / "b.md").write_text("[gone](missing.md) [bad](a.md#nowhere)\n```\n[in code](nothing.md)\n```\n")
    assert broken_links(tmp_path / "a.md") == []
    assert broken_links(tmp_path / "b.md") == [
        "b.md: missing.md (no such file)",
        "b.md: a.md#nowhere (no such heading)",
    ]
    assert slug("The leaderboard's extra columns") == "the-leaderboards-extra-columns"


def test_every_link_of_the_readme_and_docs_resolves() -> None:
    pages = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 10
    assert [b for page in pages for b in broken_links(page)] == []


def test_the_readme_links_every_page_of_docs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in readme] == []


def test_every_variable_the_code_reads_is_in_the_settings_reference() -> None:
    documented = settings_rows((DOCS / "settings.md").read_text(encoding="utf-8"))
    used: set[str] = set()
    for folder in ("rad3d", "rad3d_pipeline", "assets", "resources", "deploy", "scripts"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in {".py", ".yaml", ".sh"} and "__pycache__" not in path.parts:
                used.update(VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace")))
    used.update(VARIABLE.findall((REPO / "tests" / "conftest.py").read_text(encoding="utf-8")))
    assert len(used) > 40
    assert sorted(used - set(documented)) == []


def test_the_settings_reference_has_the_table_s_defaults() -> None:
    from resources import environment

    documented = settings_rows((DOCS / "settings.md").read_text(encoding="utf-8"))
    wrong = [
        f"{s.name}: code {s.default!r}, docs {documented.get(s.name)!r}"
        for s in environment.TABLE
        if s.name not in documented or not default_documented(s.default, documented[s.name])
    ]
    assert wrong == []
    # The comparison itself: a wrong or missing default is caught.
    assert not default_documented("8", "`80`") and not default_documented("", "`8`")
    assert default_documented("", "`<out>/sample_ctrate`") and default_documented("0 3 * * 0", "`0 3 * * 0`")
