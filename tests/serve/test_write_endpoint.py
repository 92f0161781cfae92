"""The endpoint's handwriting route: the bundled synthesis model served over real HTTP (and the tiny
network at /multi where only the batching is checked)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import requests

pytestmark = pytest.mark.ray


def test_write_returns_svg_and_strokes(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "hello", "bias": 1.0, "seed": 3}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    svg = ET.fromstring(body["svg"])
    assert svg.tag.endswith("svg") and len(body["strokes"]) == body["points"] > 0
    assert all(len(row) == 3 for row in body["strokes"])
    again = requests.post(f"{hw_url}/write", json={"text": "hello", "bias": 1.0, "seed": 3}, timeout=60).json()
    assert again["strokes"] == body["strokes"]  # same seed, same strokes


def test_write_rejects_unknown_characters_naming_them(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "hello {Z}"}, timeout=30)
    assert r.status_code == 400
    assert set(r.json()["unknown_symbols"]) == {"{", "}", "Z"}


def test_write_substitutes_what_the_model_cannot_write_and_lists_every_change(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "Zebra @ 10:30", "unknown": "substitute", "seed": 1}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [line["text"] for line in body["lines"]] == ["zebra at 10:30"]
    assert body["changes"] == [{"at": 0, "char": "Z", "to": "z"}, {"at": 6, "char": "@", "to": "at"}]


def test_a_paragraph_is_one_batch_and_each_line_is_what_it_is_alone(multi_url):
    """Wrapped lines, a blank line, a bias per line: one engine job whose rows step together, every
    line as it is alone (the tiny handwriting network at /multi: what is checked is how a page is
    written, not the hand)."""
    text = "This is a longer sentence that a person might want to write\n\nas a note"
    def stats() -> dict:
        return requests.get(f"{multi_url}/stats", timeout=30).json()["models"]["handwriting-tiny"]

    before = stats()
    r = requests.post(f"{multi_url}/write", json={"text": text, "wrap": 25, "seed": 5, "bias": [1.0, 2.0]}, timeout=120)
    assert r.status_code == 200, r.text
    after = stats()
    page = r.json()
    texts = ["This is a longer sentence", "that a person might want", "to write", "as a note"]
    assert [line["text"] for line in page["lines"]] == texts
    assert [line["line"] for line in page["lines"]] == [0, 1, 2, 4]  # line 3 is blank
    assert after["requests"]["admitted"] - before["requests"].get("admitted", 0) == 1  # one engine job
    assert after["steps"] - before["steps"] == max(line["points"] for line in page["lines"])  # rows stepped together
    assert page["points"] == sum(line["points"] for line in page["lines"]) and page["strokes"] == page["lines"][0]["strokes"]
    svg = ET.fromstring(page["svg"])
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}path"))) >= len(texts)  # a stroke or more a line
    for i, line in enumerate(page["lines"]):  # line i used seed + i and bias [1, 2, 2, ...][i]
        alone = requests.post(f"{multi_url}/write", json={"text": line["text"], "seed": 5 + i, "bias": [1.0, 2.0][min(i, 1)]},
                              timeout=60).json()
        assert line["seed"] == 5 + i and alone["strokes"] == line["strokes"]


def test_a_paragraph_streams_every_line_with_its_index(hw_url):
    body = {"text": "one line\nand another", "seed": 2}
    whole = requests.post(f"{hw_url}/write", json=body, timeout=120).json()
    r = requests.post(f"{hw_url}/write", json={**body, "stream": True}, timeout=120)
    events = [json.loads(line) for line in r.text.splitlines()]
    done = events.pop()
    assert done["done"] and done["points"] == whole["points"] and done["lines"] == whole["lines"]
    for i in (0, 1):
        points = [p for e in events if e["line"] == i for p in e["points"]]
        assert points == whole["lines"][i]["strokes"]
    assert len(events) > 2  # the lines streamed in pieces


def _drawn(line: dict, unit: float = 0.1, origin=(50.0, 80.0)) -> list[list[float]]:
    """A written line as a canvas would give it: absolute points in pixels, y down, pen_up on stroke ends."""
    import numpy as np

    from seqgen.handwriting.iam import offsets_to_strokes
    from seqgen.handwriting.prime import strokes_to_points

    strokes = offsets_to_strokes(np.array(line["strokes"]))
    return (strokes_to_points(strokes) * [unit, unit, 1] + [*origin, 0]).round(2).tolist()


def test_write_in_my_hand(hw_url):
    mine = requests.post(f"{hw_url}/write", json={"text": "my own hand", "seed": 3, "style": 9}, timeout=60).json()
    prime = {"text": "my own hand", "strokes": _drawn(mine["lines"][0])}
    body = {"text": "write like me\nand a page", "seed": 4, "prime": prime}
    r = requests.post(f"{hw_url}/write", json=body, timeout=120)
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["lines"]) == 2 and all(line["points"] > 20 for line in page["lines"])
    # the drawing's unit and origin do not matter: the size is measured, the prime made like the data
    bigger = {**prime, "strokes": _drawn(mine["lines"][0], unit=3.0, origin=(-500.0, 7.0))}
    again = requests.post(f"{hw_url}/write", json={**body, "prime": bigger}, timeout=120).json()
    assert again["lines"][0]["points"] == page["lines"][0]["points"]
    first, again_first = page["lines"][0]["strokes"][:20], again["lines"][0]["strokes"][:20]
    assert max(abs(x - y) for ra, rb in zip(first, again_first) for x, y in zip(ra, rb)) < 0.5


@pytest.mark.parametrize("prime, status, words", [
    ({"text": "hello", "strokes": []}, 422, "strokes"),  # no strokes
    ({"text": "hello", "strokes": [[1, 2, 1]]}, 422, "strokes"),  # a single point
    ({"text": "hello", "strokes": [[i, 0, 0] for i in range(2001)]}, 422, "strokes"),  # over the points limit
    ({"text": "hello", "strokes": [[i, 1e7, 0] for i in range(200)]}, 422, "strokes"),  # off any page
    ({"text": "hi", "strokes": [[i, 0, 0] for i in range(200)]}, 422, "text"),  # text too short for its strokes
    ({"text": "hello " * 9, "strokes": [[i, 0, 0] for i in range(200)]}, 422, "text"),  # too long
    ({"text": "Zorro", "strokes": [[i, i % 7, i % 9 == 0] for i in range(200)]}, 400, "Z"),  # unwritable
])
def test_bad_primes_are_4xx_naming_the_problem(hw_url, prime, status, words):
    prime = {**prime, "strokes": [[x, y, int(p)] for x, y, p in prime["strokes"]]}
    r = requests.post(f"{hw_url}/write", json={"text": "hello", "prime": prime}, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"] in ("bad_request", "invalid_request") and words in r.text


def test_nan_in_a_prime_is_refused(hw_url):
    data = '{"text": "hello", "prime": {"text": "hello", "strokes": [' + ",".join(["[NaN, 0, 0]"] * 150) + "]}}"
    r = requests.post(f"{hw_url}/write", data=data, headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500 and r.headers["content-type"].startswith("application/json"), r.text


def test_style_or_prime_not_both(hw_url):
    prime = {"text": "hello", "strokes": [[i, i % 5, 0] for i in range(150)]}
    r = requests.post(f"{hw_url}/write", json={"text": "hi", "style": 3, "prime": prime}, timeout=30)
    assert r.status_code == 422 and "not both" in r.text


@pytest.mark.parametrize("body, status", [
    ({"text": "hello", "wrap": 61}, 400),  # lines longer than the model can write in its point budget
    ({"text": "a" * 1001}, 422),  # over the hard request bound
    ({"text": ""}, 422),
    ({"text": "hello", "bias": -1}, 422),
    ({"text": "hello", "bias": "high"}, 422),
    ({"text": "hello", "colour": "red"}, 422),
])
def test_write_bad_requests_get_json_4xx(hw_url, body, status):
    r = requests.post(f"{hw_url}/write", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")


def test_text_routes_are_not_served_by_a_handwriting_model(hw_url):
    r = requests.post(f"{hw_url}/generate", json={"prompt": "a"}, timeout=30)
    assert r.status_code == 404 and "write" in r.json()["message"]


def test_best_of_writes_its_candidates_as_one_batch_and_answers_the_best_read(hw_url):
    before = requests.get(f"{hw_url}/stats", timeout=30).json()
    body = {"text": "hello", "bias": 0.75, "seed": 11, "best_of": 4}
    r = requests.post(f"{hw_url}/write", json=body, timeout=120)
    assert r.status_code == 200, r.text
    answer = r.json()
    after = requests.get(f"{hw_url}/stats", timeout=30).json()
    steps, symbols = after["steps"] - before["steps"], after["symbols_generated"] - before["symbols_generated"]
    assert symbols > 2 * steps  # four rows stepped together (one after another would make symbols == steps)
    chosen = answer["legibility"]
    assert chosen["candidates"] == 4 and 0 <= chosen["candidate"] < 4 and 0 <= chosen["cer"]
    assert isinstance(chosen["reading"], str)
    # candidate j used seed + j: written alone with that seed, it is the same line
    alone = requests.post(f"{hw_url}/write", json={"text": "hello", "bias": 0.75, "seed": 11 + chosen["candidate"]},
                          timeout=60).json()
    assert alone["strokes"] == answer["strokes"] and alone["legibility"] is None
    assert requests.post(f"{hw_url}/write", json=body, timeout=120).json() == answer  # seeded: the same answer


def test_best_of_streams_the_chosen_candidate_once_chosen(hw_url):
    body = {"text": "hello", "bias": 0.75, "seed": 11, "best_of": 2}
    whole = requests.post(f"{hw_url}/write", json=body, timeout=120).json()
    r = requests.post(f"{hw_url}/write", json={**body, "stream": True}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    points, done = [json.loads(line) for line in r.text.splitlines()]
    assert points["points"] == whole["strokes"]
    assert done["done"] and done["legibility"] == whole["legibility"] and done["points"] == whole["points"]


def test_best_of_limits(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "hello", "best_of": 9}, timeout=30)
    assert r.status_code == 422 and "best_of" in r.text, r.text


def test_a_prime_without_ink_is_still_answered(hw_url):
    """Schema-valid is answerable: points that never move have no size to measure, and are read as they are."""
    prime = {"text": "0000", "strokes": [[0.0, 0.0, 0]] * 150}
    r = requests.post(f"{hw_url}/write", json={"text": "0", "unknown": "drop", "prime": prime, "seed": 0}, timeout=60)
    assert r.status_code == 200, r.text


def test_the_page_in_its_style_and_as_png(hw_url):
    import base64
    import io

    import matplotlib.image

    body = {"text": "ink\nand paper", "seed": 1, "width": 500, "stroke_width": 3, "color": "#c01010", "margin": 8,
            "png": True}
    page = requests.post(f"{hw_url}/write", json=body, timeout=120).json()
    svg = ET.fromstring(page["svg"])
    assert float(svg.get("width")) == 500
    g = svg.find("{http://www.w3.org/2000/svg}g")
    assert g.get("stroke") == "#c01010" and all(" C" in p.get("d") or "C" in p.get("d") for p in g if len(p.get("d")) > 40)
    img = matplotlib.image.imread(io.BytesIO(base64.b64decode(page["png"])))
    assert img.shape[1] == 500
    assert ((img[..., 0] > 0.6) & (img[..., 1] < 0.3)).sum() > 100  # red ink on white
    straight = requests.post(f"{hw_url}/write", json={**body, "smooth": False, "png": False}, timeout=120).json()
    assert straight["png"] is None and straight["lines"] == page["lines"] and " L" in straight["svg"]


def test_a_page_longer_than_the_batch_is_written_in_turns(multi_url):
    """40 lines and a 16-row engine (the tiny handwriting network at /multi: what is checked is how
    a page is batched, not the hand): three jobs one after the other, every line as it is alone."""
    words = [f"w{i}" for i in range(40)]
    rows = requests.get(f"{multi_url}/info", timeout=30).json()["engine"]["max_streams"]
    assert rows == 16
    before = requests.get(f"{multi_url}/stats", timeout=30).json()["models"]["handwriting-tiny"]
    page = requests.post(f"{multi_url}/write", json={"text": "\n".join(words), "seed": 9, "bias": 2.0}, timeout=300).json()
    after = requests.get(f"{multi_url}/stats", timeout=30).json()["models"]["handwriting-tiny"]
    assert [line["text"] for line in page["lines"]] == words and [line["line"] for line in page["lines"]] == list(range(40))
    assert after["requests"]["admitted"] - before["requests"].get("admitted", 0) == 3
    for i in (0, 15, 16, 31, 32, 39):  # either side of each cut
        alone = requests.post(f"{multi_url}/write", json={"text": words[i], "seed": 9 + i, "bias": 2.0}, timeout=60).json()
        mine = page["lines"][i]["strokes"]
        assert len(alone["strokes"]) == len(mine), i
        worst = max(abs(a - b) for ra, rb in zip(alone["strokes"], mine) for a, b in zip(ra, rb))
        assert worst < 0.01, (i, worst)  # MKL's sgemm on this CPU: a row's last bits can change with the batch
