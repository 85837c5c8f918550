"""Every relative link and ``#anchor`` in README.md and docs/*.md resolves: the file exists, and the
anchor is the GitHub slug of one of the target file's headings (issue 26, item 6)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.M)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (neither holds links)."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower case, without punctuation (letters of
    any script, digits, ``_``, ``-`` and spaces kept), spaces as ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", path.read_text())):
        s = slug(m.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    bad = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:: not a relative link
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{path.name}: {target}: no file {file}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{path.name}: {target}: no heading #{anchor} in {dest.name}")
    return bad


def test_every_relative_link_and_anchor_resolves():
    docs = documents()
    assert {p.name for p in docs} >= {"README.md", "analysis.md", "training.md", "tuning.md", "datasets.md",
                                      "performance.md", "scaling.md", "baselines.md"}
    bad = [b for p in docs for b in broken_links(p)]
    assert not bad, bad


def test_the_readme_links_every_docs_page():
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in LINK.findall(_prose(readme.read_text()))}
    missing = [p.name for p in documents()[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_slugs_are_githubs():
    assert slug("Choosing γp on validation (pdmp tune)") == "choosing-γp-on-validation-pdmp-tune"
    assert slug("Fusions (`--fusion`)") == "fusions---fusion"
    assert slug("The paper's Table I: every method in one command") == "the-papers-table-i-every-method-in-one-command"
    assert slug("The data pipeline: the packed store") == "the-data-pipeline-the-packed-store"
    assert slug("Multimodal training (pdmp train)") == "multimodal-training-pdmp-train"


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "a.md").write_text(
        "# A\n\n## Same\n\n## Same\n\n```bash\n# not a heading\n[x](nowhere.md)\n```\n\n"
        "[ok](b.md#two) [ok](#same-1) [ok](b.md) [web](https://example.org/x#y) `[code](gone.md)`\n"
        "[bad anchor](b.md#three) [bad file](c.md#two) [bad here](#not-a-heading) ![img](pic.png)\n"
    )
    (tmp_path / "b.md").write_text("# B\n\n## Two\n")
    assert broken_links(tmp_path / "a.md") == [
        "a.md: b.md#three: no heading #three in b.md",
        "a.md: c.md#two: no file c.md",
        "a.md: #not-a-heading: no heading #not-a-heading in a.md",
        "a.md: pic.png: no file pic.png",
    ]
    assert anchors(tmp_path / "a.md") == {"a", "same", "same-1"}
