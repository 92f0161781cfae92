"""The page at GET /, in a real headless Chromium (Debian's package, driven by playwright): type a
line -> handwriting drawn from the NDJSON stream; a prompt -> text streamed in, with the sampling
controls (top p, stop string); a server with API keys (the page asks once and keeps the key for the
tab). The screenshot of the handwriting page becomes docs/img/endpoint-page.png (the README shows
it) with SEQGEN_UPDATE_DOCS=1."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.serve.conftest import KEY

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium (Debian's package, driven by playwright) for every page test. Module
    scope, not session: playwright's sync API keeps an asyncio loop running in this thread while it
    is open, where the tests that follow call asyncio.run."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        message = "no chromium on PATH (apt-get install chromium; .ci/run does)"
        if os.environ.get("SEQGEN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root; the rest keeps Chromium off the (closed) network
        b = p.chromium.launch(executable_path=chromium, args=[
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
    with page.expect_response(lambda r: r.url.endswith("/write")) as response:
        page.click("#write-button")
    page.wait_for_function("document.getElementById('write-status').textContent.includes('points in')",
                           timeout=60_000)
    status = page.text_content("#write-status")
    points = int(status.split()[0])
    assert points > 50 and "seed" in status
    # one path per stroke the stream drew (the page sends no seed, so how many is the sampler's)
    streamed = [json.loads(line) for line in response.value.text().splitlines() if line.strip()]
    pen = [p for m in streamed if not m.get("done") for p in m["points"]]
    assert len(pen) == points
    strokes = sum(p[2] > 0.5 for p in pen) + (pen[-1][2] <= 0.5)
    assert page.locator("#strokes path").count() == strokes >= 1
    page.screenshot(path=str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000
    if os.environ.get("SEQGEN_UPDATE_DOCS"):  # refresh the README's picture
        shutil.copy(tmp_path / "page.png", ROOT / "docs" / "img" / "endpoint-page.png")
    # the look changes the drawing in place: curves by default, straight segments when unticked
    paths = "[...document.querySelectorAll('#strokes path')].map((p) => p.getAttribute('d'))"
    assert any(" C" in d for d in page.evaluate(paths))
    page.uncheck("#smooth")
    assert not any(" C" in d for d in page.evaluate(paths))
    page.eval_on_selector("#color", "e => { e.value = '#cc0000'; e.dispatchEvent(new Event('input')); }")
    with page.expect_download() as download:
        page.click("#download")
    svg = Path(download.value.path()).read_text()
    assert svg.startswith("<svg") and svg.count("<path") == strokes and 'stroke="#cc0000"' in svg
    assert 'width="1200"' in svg and " C" not in svg
    with page.expect_download() as download:
        page.click("#download-png")
    assert download.value.suggested_filename == "handwriting.png"
    img = _rgb(download.value.path())
    assert img.shape[1] == 1200
    red = (img[..., 0] > 0.6) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() > 500 and (img.min(-1) > 0.95).mean() > 0.5  # red ink on a white page
    assert not errors, errors


def _rgb(path):
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]


def test_the_pages_strokes_are_drawn_as_the_server_draws_them(browser, hw_url):
    """The page draws live strokes in JavaScript; its paths are the server's (`render._curve`,
    `render._polyline`) for the same points, smooth or straight, a dot and two points included."""
    import numpy as np

    from seqgen.handwriting.render import _curve, _polyline

    page = browser.new_page()
    page.goto(f"{hw_url}/")
    page.wait_for_selector("#write-section.on")
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 40):
        s = np.cumsum(rng.normal(0, 5, (n, 2)), axis=0)
        for smooth, draw in ((True, _curve), (False, _polyline)):
            drawn = page.evaluate("([s, smooth]) => strokePath(s, smooth)", [s.tolist(), smooth])
            ours = draw(s)
            assert drawn.replace("-0.00", "0.00") == ours.replace("-0.00", "0.00"), (n, smooth)


def _a_written_line(url: str, text: str, box: dict) -> list[list[tuple[float, float]]]:
    """A line the served model writes in shipped style 9, as strokes of screen points inside ``box``
    (the drawing area), for the mouse to draw: someone's handwriting, not a zigzag."""
    import numpy as np

    from seqgen.handwriting.iam import offsets_to_strokes

    answer = requests.post(f"{url}/write", json={"text": text, "style": 9, "seed": 1, "bias": 2.0}, timeout=60).json()
    strokes = offsets_to_strokes(np.array(answer["strokes"]))
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    scale = min(0.9 * box["width"] / (hi[0] - lo[0]), 0.8 * box["height"] / (hi[1] - lo[1]))
    origin = np.array([box["x"] + 0.05 * box["width"], box["y"] + 0.1 * box["height"]])
    return [[tuple(p) for p in (s - lo) * scale + origin] for s in strokes]


def test_page_writes_a_page_in_a_hand_drawn_with_the_mouse(browser, hw_url, tmp_path):
    """Draw a line on the page's drawing area with the mouse, say what it says, write three lines in
    that hand: the request carries the drawn strokes, the page shows three lines, the prime is kept
    in localStorage until cleared. The screenshot is docs/img/endpoint-page-primed.png (README)."""
    page = browser.new_page(viewport={"width": 1000, "height": 1000})
    errors, sent = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/write") else None)
    page.goto(f"{hw_url}/")
    page.wait_for_selector("#write-section.on")
    page.click("#my-hand summary")
    box = page.locator("#pad").bounding_box()
    drawn = _a_written_line(hw_url, "hello there", box)
    for stroke in drawn:  # drawn with the mouse, point by point
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(x, y)
        page.mouse.up()
    strokes = len(drawn)
    page.fill("#prime-text", "hello there")
    page.fill("#write-text", "one line\ntwo lines here\nand Zebra three")
    page.click("#prime-button")
    page.wait_for_function("document.getElementById('write-status').textContent.includes('3 lines')", timeout=120_000)
    body = sent[-1]
    assert body["prime"]["text"] == "hello there" and len(body["prime"]["strokes"]) >= 150
    assert sum(p[2] for p in body["prime"]["strokes"]) == strokes  # a pen lift per drawn stroke
    assert body["unknown"] == "substitute" and "style" not in body
    assert page.locator("#strokes g.line").count() == 3
    # every line drew ink (how many strokes a line takes is the sampler's, and the page sends no seed)
    assert all(page.locator("#strokes g.line").nth(i).locator("path").count() >= 1 for i in range(3))
    assert "Z" in page.text_content("#write-note")  # what was written instead
    page.screenshot(path=str(tmp_path / "primed.png"), full_page=True)
    if os.environ.get("SEQGEN_UPDATE_DOCS"):  # refresh the README's picture
        shutil.copy(tmp_path / "primed.png", ROOT / "docs" / "img" / "endpoint-page-primed.png")
    page.reload()  # the hand is kept for later pages ...
    page.wait_for_selector("#write-section.on")
    assert "hello there" in page.text_content("#prime-status")
    page.fill("#write-text", "again")
    page.click("#write-button")
    page.wait_for_function("(s => s.textContent.includes(' line') || s.className.includes('error'))"
                           "(document.getElementById('write-status'))", timeout=120_000)
    assert "1 line" in page.text_content("#write-status"), page.text_content("#write-status")
    assert sent[-1]["prime"]["text"] == "hello there"
    page.click("#my-hand summary")
    page.click("#prime-clear")  # ... until cleared
    assert page.evaluate("localStorage.getItem('seqgen-prime')") is None
    assert not errors, errors


def test_page_writes_the_best_of_several_candidates(browser, hw_url):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/write") else None)
    page.goto(f"{hw_url}/")
    page.wait_for_selector("#write-section.on")
    page.fill("#write-text", "hello")
    page.select_option("#best-of", "4")
    with page.expect_response(lambda r: r.url.endswith("/write"), timeout=120_000) as response:
        page.click("#write-button")
    page.wait_for_function("document.getElementById('write-status').textContent.includes('best of 4')",
                           timeout=120_000)
    assert "read as" in page.text_content("#write-status")
    # one path per stroke of the candidate the server chose (the page sends no seed: how many is the sampler's)
    pen = response.value.json()["strokes"]
    assert page.locator("#strokes path").count() == sum(p[2] > 0.5 for p in pen) + (pen[-1][2] <= 0.5) >= 1
    assert sent and sent[-1]["best_of"] == 4 and sent[-1]["stream"] is False
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
    assert "handwriting-tiny" in page.text_content("#write-section h2")
    assert page.locator("#hw-model-label").is_hidden()  # one handwriting model: nothing to pick
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
    with page.expect_request(lambda r: r.url.endswith("/write")) as sent:
        page.fill("#write-text", "hi")
        page.click("#write-button")
    assert sent.value.post_data_json["model"] == "handwriting-tiny"  # the handwriting model named, not the default
    page.wait_for_function("document.getElementById('write-status').textContent.includes('points in')",
                           timeout=60_000)
    assert not errors, errors


def test_the_page_asks_for_a_key_once_and_keeps_it_for_the_tab(browser, keyed_url):
    page = browser.new_page()
    errors, asked = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept("wrong-key" if len(asked) == 1 else KEY)

    page.on("dialog", answer)
    page.goto(f"{keyed_url}/")
    page.wait_for_function("document.getElementById('model').textContent !== 'loading…'", timeout=30_000)
    assert "serve-tiny" in page.text_content("#model"), (page.text_content("#model"), asked, errors)
    assert page.locator("#text-section.on").count() == 1  # /info answered once the key was right
    assert asked == ["This server needs an API key:", "That API key was refused. API key:"]
    assert page.evaluate("sessionStorage.getItem('seqgen-api-key')") == KEY
    page.fill("#length", "50")
    page.click("#generate-button")
    page.wait_for_function("document.getElementById('text-status').textContent.includes('symbols in')",
                           timeout=60_000)
    assert len(page.text_content("#output")) == 50 and len(asked) == 2  # the kept key: no third question
    assert not errors, errors


def test_the_page_sends_top_p_and_a_stop_string(browser, serve_url):
    full = requests.post(f"{serve_url}/generate", json={"prompt": "ROMEO:", "length": 300, "seed": 8, "top_p": 0.9},
                         timeout=60).json()["samples"][0]
    stop = full[30:32]
    page = browser.new_page()
    errors, sent = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/generate") else None)
    # the page draws a random seed: fix it on the way out, so the text can be compared
    page.route("**/generate", lambda route: route.continue_(post_data=json.dumps({**route.request.post_data_json, "seed": 8})))
    page.goto(f"{serve_url}/")
    page.wait_for_selector("#text-section.on")
    page.fill("#length", "300")
    page.eval_on_selector("#top-p", "e => { e.value = '0.9'; e.dispatchEvent(new Event('input')); }")
    assert page.text_content("#top-p-value") == "0.9"
    page.fill("#stop", stop.replace("\n", "\\n"))
    page.click("#generate-button")
    page.wait_for_function("document.getElementById('text-status').textContent.includes('symbols in')",
                           timeout=60_000)
    assert sent[-1]["top_p"] == 0.9 and sent[-1]["stop"] == [stop]
    assert page.text_content("#output") == full[: full.find(stop)]
    assert "stopped at the stop string" in page.text_content("#text-status")
    assert not errors, errors
