"""The rendered book: every chapter page with its figures, and no request leaves the machine."""

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

CHAPTERS = ["01_dsft", "02_aif", "03_ddpo", "04_evaluation"]
FIGURES = {"01_dsft": 2, "02_aif": 1, "03_ddpo": 1, "04_evaluation": 1}


def test_every_chapter_page_has_its_executed_figures(built_book):
    html = built_book / "html"
    assert (html / "intro.html").is_file() and (html / "appendix_results.html").is_file()
    assert "tunstall2023zephyr" in (html / "bibliography.html").read_text() or "Tunstall" in (html / "bibliography.html").read_text()
    for name in CHAPTERS:
        page = (html / "notebooks" / f"{name}.html").read_text()
        images = [src for src in re.findall(r'<img[^>]+src="([^"]+\.png)"', page)]
        assert len(images) >= FIGURES[name], f"{name}: {len(images)} figures"
        for src in images:
            assert (html / "notebooks" / src).resolve().is_file(), f"{name}: missing {src}"


def test_no_page_references_a_remote_script_style_or_image(built_book):
    for page in (built_book / "html").rglob("*.html"):
        text = page.read_text()
        remote = re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not remote, f"{page.name} loads {remote}"


# Clean pages: what a reader of the built book meets. The pages are those of the table of contents.

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def toc_pages() -> list[str]:
    """The HTML page of every file in book/_toc.yml, e.g. "intro.html", "notebooks/01_dsft.html"."""
    import yaml

    def files(node):
        if isinstance(node, dict):
            yield from ([node["file"]] if "file" in node else [])
            for key in ("root", "parts", "chapters", "sections"):
                value = node.get(key)
                yield from ([value] if key == "root" else files(value)) if value else []
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    return [f"{name}.html" for name in files(yaml.safe_load((BOOK / "_toc.yml").read_text()))]


def executed_notebooks(built_book) -> list[Path]:
    found = sorted((built_book / "jupyter_execute").rglob("*.ipynb"))
    assert len(found) >= len(CHAPTERS), found  # the chapters, and any page written as a MyST notebook
    return found


def outputs(built_book):
    """(notebook name, output) for every output of every executed notebook."""
    import nbformat

    for path in executed_notebooks(built_book):
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                yield path.name, output


def output_texts(output) -> list[str]:
    """Everything an output shows as text: a stream, a traceback, and every non-image representation."""
    texts = [output.get("text", "")] + output.get("traceback", [])
    texts += [v if isinstance(v, str) else json.dumps(v) for k, v in output.get("data", {}).items() if not k.startswith("image/")]
    return texts


def test_no_widget_state_in_executed_notebooks_or_pages(built_book):
    """Progress bars are off in the book build (ZEPHYR_PROGRESS=0): no widget, and no widget state, anywhere."""
    for path in executed_notebooks(built_book):
        assert "widgets" not in json.loads(path.read_text()).get("metadata", {}), f"{path.name}: widget state in the metadata"
    widgets = [(name, o["data"].get("text/plain", "")) for name, o in outputs(built_book)
               if any(k.startswith("application/vnd.jupyter.widget") for k in o.get("data", {}))]
    assert not widgets, f"widget outputs: {widgets[:5]}"
    for page in toc_pages():
        assert "application/vnd.jupyter.widget" not in (built_book / "html" / page).read_text(), f"{page}: widget state"


def test_no_stderr_in_executed_notebooks(built_book):
    """Warnings are fixed where they come from (or filtered exactly where a library raises one we cannot
    avoid), and the book shows stderr: so an executed notebook has none."""
    stderr = [(name, o["text"].strip().splitlines()[-1:]) for name, o in outputs(built_book) if o.get("name") == "stderr"]
    assert not stderr, f"stderr outputs (last line of each): {stderr[:5]}"


MACHINE_PATH = re.compile(r"/root/|/home/|/tmp/|/work/|/check/|(?:Posix|Windows)Path\(")


def test_no_machine_path_in_any_output_or_page(built_book):
    """No output shows where the book was built: paths are printed relative to the runs directory."""
    build_dirs = {str(built_book.parent), str(ROOT)}
    found = [(name, m.group(0), text[max(0, m.start() - 40) : m.end() + 40])
             for name, o in outputs(built_book) for text in output_texts(o) for m in MACHINE_PATH.finditer(text)]
    found += [(name, d, "") for name, o in outputs(built_book) for text in output_texts(o) for d in build_dirs if d in text]
    for page in toc_pages():
        text = (built_book / "html" / page).read_text()
        found += [(page, m.group(0), text[max(0, m.start() - 40) : m.end() + 40]) for m in MACHINE_PATH.finditer(text)]
    assert not found, f"machine paths: {found[:5]}"


def test_no_page_links_to_or_installs_from_another_repository(built_book):
    """No page or executed notebook links to a repository on github.com or installs from a git URL, unless it
    is the project's own ([project.urls] in pyproject.toml) or a cited work's address in references.bib."""
    import tomllib

    own = list(tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {}).get("urls", {}).values())
    cited = re.findall(r"url\s*=\s*[{\"]([^}\"]+)", (BOOK / "references.bib").read_text())

    def bare(url: str) -> str:
        return re.sub(r"^(?:git\+)?(?:[\w+]+://)?(?:www\.)?", "", url).rstrip("/.,;")

    allowed = [bare(u) for u in own + cited]
    repository = re.compile(r"git\+[\w+]+://[^\s\"'<>)\]\\]+|(?:https?://)?(?:www\.)?github\.com[^\s\"'<>)\]\\]*")
    texts = {page: (built_book / "html" / page).read_text() for page in toc_pages()}
    texts.update({path.name: path.read_text() for path in executed_notebooks(built_book)})
    found = [(name, m.group(0)) for name, text in texts.items() for m in repository.finditer(text)
             if not any(bare(m.group(0)) == a or bare(m.group(0)).startswith(a + "/") for a in allowed)]
    assert not found, f"links to or installs from another repository: {found[:5]}"


# The text column at a 1280 px wide window: sphinx-book-theme's article, 752 px with 32 px padding each side,
# so its content is 688 px wide. A figure is legible there when it is shown at least MIN_FIGURE_PX wide and
# at no less than MIN_FIGURE_SCALE of its own pixel size (the book draws figures at 100 dpi, so 10-point text
# stays at least 10 px high on screen).
VIEWPORT = {"width": 1280, "height": 900}
MIN_FIGURE_PX = 600
MIN_FIGURE_SCALE = 0.75

MEASURE = """() => {
  const article = document.querySelector('article.bd-article');
  const box = article.getBoundingClientRect(), style = getComputedStyle(article);
  const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
  const describe = (el) => el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ')[0] : '')
      + ': ' + (el.innerText || el.getAttribute('src') || '').trim().slice(0, 60).replace(/\\s+/g, ' ');
  const wide = [];
  for (const el of article.querySelectorAll('table, pre, img, figure, div.cell_output, div.output, div.highlight, div.pst-scrollable-table-container')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    if (r.left < left - 1 || r.right > right + 1) wide.push(`${describe(el)} spans ${Math.round(r.left)}-${Math.round(r.right)} px, the column ${Math.round(left)}-${Math.round(right)}`);
    else if (el.scrollWidth > el.clientWidth + 1) wide.push(`${describe(el)} scrolls: ${el.scrollWidth} px of content in ${el.clientWidth}`);
  }
  // A cell's printed output must fit as printed: the stylesheet's wrapping of long lines is only a fallback.
  for (const el of article.querySelectorAll('div.cell_output pre')) {
    const saved = [el.style.whiteSpace, el.style.overflowWrap];
    el.style.whiteSpace = 'pre'; el.style.overflowWrap = 'normal';
    if (el.scrollWidth > el.clientWidth + 1) wide.push(`${describe(el)} has lines of ${el.scrollWidth} px, unwrapped, in ${el.clientWidth}`);
    [el.style.whiteSpace, el.style.overflowWrap] = saved;
  }
  const figures = Array.from(article.querySelectorAll('img')).map(i => ({src: i.getAttribute('src'), width: i.getBoundingClientRect().width, natural: i.naturalWidth}));
  return {column: right - left, wide: wide, figures: figures};
}"""


@pytest.fixture(scope="module")
def served(built_book):
    root = str(built_book / "html")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # shutdown() waits a poll
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's page tests; each test opens its own page (a fresh context)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it where apt-get is available)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
            "--disable-component-update", "--disable-sync"])  # playwright gives it a fresh profile
        yield launched
        launched.close()


@pytest.mark.parametrize("page", toc_pages())
def test_pages_render_offline_in_chromium_within_the_text_column(served, browser, page, tmp_path):
    """Each page of the table of contents in headless Chromium at 1280 px: every request goes to the book's own
    server and succeeds, every image loads, the page has a title; no table, code block, output or figure is
    wider than the text column or scrolls inside it, and every figure is shown at a legible size (see
    MIN_FIGURE_PX and MIN_FIGURE_SCALE)."""
    requests, failed = [], []
    tab = browser.new_page(viewport=VIEWPORT)
    try:
        tab.on("request", lambda r: requests.append(r.url))
        tab.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        tab.goto(f"{served}/{page}", wait_until="networkidle")
        tab.evaluate("() => window.MathJax?.startup?.promise")  # MathJax typesets after the load
        broken_images = tab.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        title = tab.title()
        has_math = tab.locator("mjx-container").count()
        measured = tab.evaluate(MEASURE)
        small = [f"figure {f['src']} shown {f['width']:.0f} px wide, drawn {f['natural']} px wide" for f in measured["figures"]
                 if f["width"] < MIN_FIGURE_PX or f["width"] < MIN_FIGURE_SCALE * f["natural"]]
        problems = small + measured["wide"]
        if problems or measured["column"] < 600:  # a picture of the page, for the failure message
            tab.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    finally:
        tab.close()
    assert not failed, failed
    assert all(u.startswith(served) or u.startswith("data:") for u in requests), [u for u in requests if not u.startswith(served)]
    assert not broken_images, broken_images
    assert title, "the page has no title"
    if page.endswith("03_ddpo.html"):
        assert has_math > 5  # the DPO derivation is typeset by the local MathJax
    assert measured["column"] >= 600, measured["column"]  # the theme's column, as the limits above assume
    assert not problems, f"{page} (screenshot {tmp_path / 'page.png'}): " + "; ".join(problems[:8])
