"""The page at GET /, in a real headless Chromium (Debian's package, driven by playwright): type a
line -> handwriting drawn from the NDJSON stream; a prompt -> text streamed in. The screenshot of the
handwriting page becomes docs/img/endpoint-page.png (the README shows it) with SEQGEN_UPDATE_DOCS=1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        message = "no chromium on PATH (apt-get install chromium; .ci/run does)"
        if os.environ.get("SEQGEN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root; the rest keeps Chromium off the (closed) network
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


def test_page_writes_handwriting_as_the_strokes_stream(browser, hw_url, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{hw_url}/")
    page.wait_for_selector("#write-section.on")
    assert page.locator("#text-section.on").count() == 0  # a handwriting model serves no text
    assert page.locator("#style option").count() == 14  # none + the 13 shipped styles
    page.fill("#write-text", "seqgen writes")
    page.eval_on_selector("#bias", "e => { e.value = '1.5'; e.dispatchEvent(new Event('input')); }")
    assert page.text_content("#bias-value") == "1.5"
    page.click("#write-button")
    page.wait_for_function("document.querySelectorAll('#strokes path').length > 5", timeout=60_000)
    page.wait_for_function("document.getElementById('write-status').textContent.includes('points in')",
                           timeout=60_000)
    status = page.text_content("#write-status")
    points = int(status.split()[0])
    assert points > 50 and "seed" in status
    assert page.locator("#strokes path").count() > 5
    with page.expect_download() as download:
        page.click("#download")
    svg = Path(download.value.path()).read_text()
    assert svg.startswith("<svg") and svg.count("<path") > 5
    page.screenshot(path=str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000
    if os.environ.get("SEQGEN_UPDATE_DOCS"):  # refresh the README's picture
        shutil.copy(tmp_path / "page.png", ROOT / "docs" / "img" / "endpoint-page.png")
    assert not errors, errors


def test_page_writes_the_best_of_several_candidates(browser, hw_url):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda r: requests.append(r.post_data_json) if r.url.endswith("/write") else None)
    page.goto(f"{hw_url}/")
    page.wait_for_selector("#write-section.on")
    page.fill("#write-text", "hello")
    page.select_option("#best-of", "4")
    page.click("#write-button")
    page.wait_for_function("document.getElementById('write-status').textContent.includes('best of 4')",
                           timeout=120_000)
    assert "read as" in page.text_content("#write-status")
    assert page.locator("#strokes path").count() > 1
    assert requests and requests[-1]["best_of"] == 4 and requests[-1]["stream"] is False
    assert not errors, errors


def test_page_streams_text(browser, serve_url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{serve_url}/")
    page.wait_for_selector("#text-section.on")
    assert page.locator("#write-section.on").count() == 0
    page.fill("#prompt", "ROMEO:")
    page.fill("#length", "400")
    page.click("#generate-button")
    page.wait_for_function("document.getElementById('output').textContent.length > 0", timeout=60_000)
    partial = len(page.text_content("#output"))
    page.wait_for_function("document.getElementById('text-status').textContent.includes('symbols in')",
                           timeout=60_000)
    assert len(page.text_content("#output")) == 400 and partial <= 400
    assert "400 symbols" in page.text_content("#text-status")
    assert not errors, errors


def test_page_has_a_section_per_kind_and_picks_the_text_model(browser, multi_url):
    """Several models behind one URL: the handwriting and the text section, each naming its model;
    the text section's model picker sends the chosen one."""
    from seqgen.catalog import bundled, load_model
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.text_sampling import generate

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{multi_url}/")
    page.wait_for_selector("#write-section.on")
    page.wait_for_selector("#text-section.on")
    assert "hw-cont" in page.text_content("#write-section h2")
    assert "serve-tiny" in page.text_content("#text-section h2")
    assert page.locator("#style option").count() == 14  # the handwriting model's styles
    assert page.locator("#text-model option").all_text_contents() == ["serve-tiny", "shakespeare-bundled"]
    page.select_option("#text-model", "shakespeare-bundled")
    assert "shakespeare-bundled" in page.text_content("#text-section h2")
    page.fill("#prompt", "ROMEO:")
    page.fill("#length", "80")
    page.eval_on_selector("#temperature", "e => { e.value = '0'; e.dispatchEvent(new Event('input')); }")
    page.click("#generate-button")
    page.wait_for_function("document.getElementById('text-status').textContent.includes('symbols in')",
                           timeout=60_000)
    model, loaded = load_model(bundled("shakespeare"))
    greedy = generate(model, Vocabulary.from_json(loaded.meta["vocab"]), "ROMEO:", length=80, temperature=0.0)[0]
    assert page.text_content("#output") == greedy  # written by the model picked
    assert not errors, errors
