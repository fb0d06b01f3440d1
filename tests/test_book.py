"""The rendered book: every chapter page with its figures, and no request leaves the machine."""

import functools
import http.server
import re
import shutil
import threading

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


@pytest.fixture
def served(built_book):
    root = str(built_book / "html")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("page", ["intro.html"] + [f"notebooks/{c}.html" for c in CHAPTERS])
def test_pages_render_in_chromium_with_no_failed_or_remote_request(served, page, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it where apt-get is available)")
    from playwright.sync_api import sync_playwright

    requests, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
            "--disable-component-update", "--disable-sync"])  # playwright gives it a fresh profile
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("request", lambda r: requests.append(r.url))
            tab.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            tab.goto(f"{served}/{page}", wait_until="networkidle")
            tab.wait_for_timeout(500)
            broken_images = tab.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
            title = tab.title()
            has_math = tab.locator("mjx-container").count()
            tab.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert not failed, failed
    assert all(u.startswith(served) or u.startswith("data:") for u in requests), [u for u in requests if not u.startswith(served)]
    assert not broken_images, broken_images
    assert title, "the page has no title"
    if page.endswith("03_ddpo.html"):
        assert has_math > 5  # the DPO derivation is typeset by the local MathJax
