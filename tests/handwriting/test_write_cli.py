"""``seqgen write``: a page, your own hand (a JSON prime or an IAM-OnDB XML), every character, the
look of the page and its PNG; with a tiny untrained synthesis network (tests/handwriting/tiny_models.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
from typer.testing import CliRunner

from seqgen.cli import app
from tests.handwriting.tiny_models import tiny  # noqa: F401 - the fixture

runner = CliRunner()
SVG = "{http://www.w3.org/2000/svg}"


def run(st, *args):
    result = runner.invoke(app, [*args, "--storage", st.url])
    return result.exit_code, result.stdout, result.stderr.strip()


def _drawing(n=150):
    """A mouse-drawn line: absolute pixels, y down, a pen lift every 30 points."""
    t = np.arange(n)
    return [[float(50 + 2 * i), float(100 + 10 * np.sin(i / 3)), int(i % 30 == 29 or i == n - 1)] for i in t]


def test_a_page_in_my_hand_with_substitutes(tiny, tmp_path):
    st, synth, _, _ = tiny
    prime = tmp_path / "mine.json"
    prime.write_text(json.dumps({"text": "my hand", "strokes": _drawing()}))
    out = tmp_path / "page.svg"
    code, stdout, err = run(st, "write", "Zebra @ noon\n\nsee you", "--checkpoint", synth, "--prime-file", str(prime),
                            "--unknown", "substitute", "--wrap", "10", "--seed", "2", "--out", str(out),
                            "--width", "600", "--color", "#223344", "--stroke-width", "2")
    assert code == 0, err
    assert "character 0: 'Z' -> 'z'" in stdout and "character 6: '@' -> 'at'" in stdout
    assert "wrote" in stdout and "3 lines" in stdout  # "zebra at", "noon", "see you" (and a blank line)
    root = ET.fromstring(out.read_text())
    assert float(root.get("width")) == 600 and root.find(f"{SVG}g").get("stroke") == "#223344"
    assert all("C" in p.get("d") or len(p.get("d").split()) <= 2 for p in root.iter(f"{SVG}path"))  # smooth


def test_an_iam_xml_primes_and_a_png_is_written(tiny, tmp_path):
    st, synth, _, _ = tiny
    xml = tmp_path / "line.xml"
    strokes = "".join("<Stroke>" + "".join(f'<Point x="{x}" y="{y}" time="0"/>' for x, y, _ in chunk) + "</Stroke>"
                      for chunk in np.array_split(np.array(_drawing(120)), 4))
    xml.write_text(f'<?xml version="1.0"?><WhiteboardCaptureSession><StrokeSet>{strokes}</StrokeSet>'
                   "</WhiteboardCaptureSession>")
    out = tmp_path / "line.png"
    code, stdout, err = run(st, "write", "ab", "--checkpoint", synth, "--prime-xml", str(xml), "--prime-text",
                            "four", "--seed", "1", "--out", str(out))
    assert code == 0, err
    assert out.read_bytes().startswith(b"\x89PNG")


def test_write_errors_are_one_line_and_exit_2(tiny, tmp_path):
    st, synth, _, _ = tiny
    prime = tmp_path / "short.json"
    prime.write_text(json.dumps({"text": "my hand", "strokes": _drawing(20)}))
    cases = [
        (["Zebra"], "cannot write: ['Z']"),
        (["hi", "--unknown", "maybe"], "unknown must be one of"),
        (["hi", "--wrap", "0"], "--wrap must be between"),
        (["hi", "--prime-file", str(prime)], "points, got 20"),
        (["hi", "--prime-xml", str(tmp_path / "x.xml")], "--prime-xml and --prime-text go together"),
        (["hi", "--style", "3", "--prime-file", str(prime)], "give one hand"),
        (["\u2603"], "cannot write"),
        (["\u2603", "--unknown", "drop"], "nothing to write"),
    ]
    for args, message in cases:
        code, _, err = run(st, "write", *args, "--checkpoint", synth, "--out", str(tmp_path / "x.svg"))
        assert code == 2 and message in err and len(err.splitlines()) == 1, (args, err)
