"""Citations: every work the book cites is in its bibliography, and the bibliography labels entries the way the
text cites them (author and year), without building the book."""

import json
import re
import sys
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def cited_keys() -> dict[str, set[str]]:
    """Cited key -> the pages that cite it, from the .md pages and the notebooks' markdown cells."""
    texts = {p.name: p.read_text() for p in BOOK.glob("*.md")}
    for nb in sorted((BOOK / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts[nb.name] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    keys: dict[str, set[str]] = {}
    for page, text in texts.items():
        for group in CITE.findall(text):
            for key in group.split(","):
                keys.setdefault(key.strip(), set()).add(page)
    return keys


def test_every_cited_key_is_in_the_bibliography():
    pybtex = pytest.importorskip("pybtex.database")
    entries = pybtex.parse_file(str(BOOK / "references.bib")).entries
    keys = cited_keys()
    assert len(keys) >= 10, sorted(keys)  # the parser found the citations
    missing = {k: sorted(pages) for k, pages in keys.items() if k not in entries}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_bibliography_labels_are_author_year_like_the_citations_in_the_text():
    pytest.importorskip("pybtex")
    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    config = (BOOK / "_config.yml").read_text()
    assert "bibtex_reference_style: author_year" in config and "bibtex_default_style: author_year" in config
    sys.path.insert(0, str(BOOK / "_ext"))
    try:
        import author_year_bibliography  # noqa: F401  (registers the style)
    finally:
        sys.path.remove(str(BOOK / "_ext"))
    style = find_plugin("pybtex.style.formatting", "author_year")()
    labels = {e.key: e.label for e in style.format_bibliography(parse_file(str(BOOK / "references.bib")))}
    assert labels["tunstall2023zephyr"] == "Tunstall et al., 2023"
    assert labels["bradley1952rank"] == "Bradley and Terry, 1952"
    assert labels["vonwerra2020trl"] == "von Werra et al., 2020"
    assert all(re.fullmatch(r".+, \d{4}[a-z]?", label) for label in labels.values()), labels
    assert len(set(labels.values())) == len(labels)  # no two entries share a label
