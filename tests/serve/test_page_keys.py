"""The page in a real headless Chromium against a server with API keys (it asks for a key on the
first 401 and keeps it for the tab) and with the text sampling controls (top p, stop string)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.serve.conftest import KEY

pytestmark = pytest.mark.ray


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
