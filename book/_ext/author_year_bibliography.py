"""Bibliography entries labelled as the text cites them: "Tunstall et al., 2023", not "[TBL+23]".

`bibtex_reference_style: author_year` makes sphinxcontrib-bibtex cite works in the text by author and year,
but the bibliography page takes its labels from the pybtex formatting style, and the default one ("alpha")
prints "[TBL+23]". This extension registers a formatting style, "author_year", whose labels follow the same
rule as the in-text citations (one author: "Bradley"; two: "Bradley and Terry"; three or more: "Tunstall
et al."; then ", year"), sorted by author, year and title. `_config.yml` turns it on with
`bibtex_default_style: author_year`.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting

STYLE = "author_year"


def _surname(person) -> str:
    return " ".join(str(part.render_as("text")) for part in person.rich_prelast_names + person.rich_last_names)


def author_year_label(entry) -> str:
    """ "Tunstall et al., 2023", as sphinxcontrib-bibtex's author_year style cites the entry in the text."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in persons]
    if not names:
        who = str(entry.fields.get("title", entry.key))
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        repeated = Counter(labels)
        seen: Counter = Counter()
        for label in labels:  # two works with the same label: "Li et al., 2023a", "Li et al., 2023b"
            if repeated[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = AuthorYearTitleSorting


register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle)


def setup(app):
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
