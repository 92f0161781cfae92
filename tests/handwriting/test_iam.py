"""IAM-OnDB reader, stroke <-> offset conversion, alphabets and sjvasquez styles.

Tests marked ``data`` read the shared copy (SEQGEN_DATA_DIR, default <repo>/../shared/data) and
skip when it is absent; the others build their own files in tmp_path.
"""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from seqgen.handwriting.iam import (
    END,
    Alphabet,
    HandwritingFormatError,
    discover_forms,
    full_alphabet,
    graves57_alphabet,
    list_styles,
    load_forms,
    load_style,
    offsets_to_strokes,
    read_line_strokes,
    read_transcription,
    strokes_to_offsets,
)

DATA = Path(os.environ.get("SEQGEN_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
IAM = DATA / "handwriting" / "iam-ondb"
STYLES = DATA / "handwriting" / "sjvasquez-styles"


def needs(path: Path, what: str):
    skip = pytest.mark.skipif(not path.is_dir(), reason=f"{what} not found at {path} (set SEQGEN_DATA_DIR)")
    return lambda test: pytest.mark.data(skip(test))


needs_iam, needs_styles = needs(IAM, "IAM-OnDB subset"), needs(STYLES, "sjvasquez styles")


def xml_bytes(strokes, extra=""):
    """A lineStrokes XML in the IAM-OnDB layout for the given [(n_i, 2)] strokes."""
    body = "".join(
        '<Stroke colour="black" start_time="0" end_time="1">'
        + "".join(f'<Point x="{x:g}" y="{y:g}" time="{i * 0.01:.2f}"/>' for i, (x, y) in enumerate(s))
        + "</Stroke>"
        for s in strokes
    )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><WhiteboardDescription>'
        f'<SensorLocation corner="top_left"/></WhiteboardDescription>{extra}<StrokeSet>{body}</StrokeSet>'
        "</WhiteboardCaptureSession>\n"
    ).encode("latin-1")


def ascii_bytes(lines, newline="\n"):
    return newline.join(["OCR:", "", *lines, "", "CSR:", "", *lines, ""]).encode()


def write_form(root, form, lines=None, xmls=(), newline="\n"):
    """ascii/<grp>/<dir>/<form>.txt and lineStrokes/<grp>/<dir>/<form>-NN.xml; xmls are bytes."""
    grp, d = form[:3], form[:7]
    if lines is not None:
        (root / "ascii" / grp / d).mkdir(parents=True, exist_ok=True)
        (root / "ascii" / grp / d / f"{form}.txt").write_bytes(ascii_bytes(lines, newline))
    for k, data in enumerate(xmls, 1):
        (root / "lineStrokes" / grp / d).mkdir(parents=True, exist_ok=True)
        (root / "lineStrokes" / grp / d / f"{form}-{k:02d}.xml").write_bytes(data)


def walk(n, seed, step=1.0):
    """A random pen-down trace of n points with steps of length in [0.8, 1.2] * step."""
    rng = np.random.default_rng(seed)
    a, r = rng.uniform(0, 2 * np.pi, n - 1), rng.uniform(0.8, 1.2, n - 1) * step
    return np.cumsum(np.r_[[rng.uniform(0, 20, 2)], np.c_[r * np.cos(a), r * np.sin(a)]], 0)


# ----------------------------------------------------------------------------- offsets


def test_offsets_round_trip_and_first_row_convention():
    strokes = [walk(n, seed) for seed, n in enumerate((12, 1, 30, 2, 7))]
    o = strokes_to_offsets(strokes)  # default thresholds: nothing is an outlier or a gap here
    assert o.dtype == np.float32 and o.shape == (52, 3)
    assert o[0, :2].tolist() == [0, 0] and o[0, 2] == 0  # row 0: the first point is the origin
    assert np.flatnonzero(o[:, 2]).tolist() == [11, 12, 42, 44, 51]  # eos on each stroke's last point
    back = offsets_to_strokes(o)
    assert [len(s) for s in back] == [12, 1, 30, 2, 7]
    for b, s in zip(back, strokes):
        np.testing.assert_allclose(b, s - strokes[0][0], atol=1e-3)
    exact = strokes_to_offsets([np.array([[5, 7], [6, 9], [4000, 9000]]), np.array([[3, 3]])], None, None)
    assert exact.tolist() == [[0, 0, 0], [1, 2, 0], [3994, 8991, 1], [-3997, -8997, 1]]
    assert [s.tolist() for s in offsets_to_strokes(exact)] == [[[0, 0], [1, 2], [3995, 8993]], [[-2, -4]]]
    with pytest.raises(ValueError, match="no points"):
        strokes_to_offsets([np.empty((0, 2))])


def test_missing_readings_are_interpolated():
    s = np.array([[0, 0], [1, 0], [2, 0], [12, 0], [13, 0], [14, 0]], float)  # a 10-step gap in one stroke
    o = strokes_to_offsets([s, s + [0, 5]])
    (a, b) = offsets_to_strokes(o)
    np.testing.assert_allclose(a, np.c_[np.arange(15), np.zeros(15)], atol=1e-6)  # 9 points filled in
    np.testing.assert_allclose(b[[0, -1]], [[0, 5], [14, 5]], atol=1e-6)
    assert o[:, 2].sum() == 2
    # a pen-up jump is never interpolated, only pen-down steps are
    far = strokes_to_offsets([s[:3], s[:3] + [50, 0]])
    assert len(far) == 6


def test_outlier_steps_are_dropped_and_stroke_ends_kept():
    line = np.c_[np.arange(20.0), np.zeros(20)]
    spike = line.copy()
    spike[10] = [10, 5000]  # a one-point glitch inside the stroke: both of its steps go
    o = strokes_to_offsets([spike])
    assert len(o) == 18 and np.abs(o[:, :2]).max() <= 1
    glitch_end = np.r_[line, [[19, -9000]]]  # the stroke's last point is the glitch: its eos moves back
    o = strokes_to_offsets([glitch_end, line + [25, 0]])
    assert len(o) == 39 and o[19, 2] == 1 and o[:, 2].sum() == 2  # stroke 2 loses its first point (the jump back)
    assert len(strokes_to_offsets([spike], max_step=None, gap_factor=None)) == 20


BAD_COORD = xml_bytes([[(1, 2)]]).replace(b'y="2"', b'y="oops"')


@pytest.mark.parametrize("data", [b"<Whiteboard", b"not xml at all", BAD_COORD])
def test_unreadable_xml_raises_format_error(tmp_path, data):
    f = tmp_path / "x01-000-01.xml"
    f.write_bytes(data)
    with pytest.raises(HandwritingFormatError, match="x01-000-01.xml: unreadable XML") as e:
        read_line_strokes(f)
    assert isinstance(e.value, ValueError)


def test_reader_on_file_objects_and_empty_strokes():
    data = xml_bytes([[(1, 2), (3, 4)], [], [(5, 6)]], extra="<!-- caf\xe9 -->")  # latin-1 byte 0xE9
    strokes = read_line_strokes(io.BytesIO(data))
    assert [s.tolist() for s in strokes] == [[[1, 2], [3, 4]], [[5, 6]]]  # the empty <Stroke/> is ignored
    with pytest.raises(HandwritingFormatError, match="<stream>: no strokes"):
        read_line_strokes(io.BytesIO(xml_bytes([])))


# ----------------------------------------------------------------------------- forms


def test_load_forms_quirks_in_tmp_path(tmp_path):
    good = [xml_bytes([walk(30, 1), walk(20, 2)]), xml_bytes([walk(25, 3)])]
    write_form(tmp_path, "x01-000a", ["Hello there .", "second line"], good, newline="\r\n")
    write_form(tmp_path, "x01-001b", ["only one line"], good + good[:1])  # 1 CSR line, 3 XML files
    texts = ["fine", "bad xml", "bone %%%%%%%%%%% pinned."]
    write_form(tmp_path, "x01-002c", texts, [good[0], b"<Whiteboard", good[1]])
    write_form(tmp_path, "x01-003d", ["text only"])
    write_form(tmp_path, "x01-004e", None, good[:1])  # strokes without a transcription
    write_form(tmp_path, "x01-005f", ["empty"], [xml_bytes([])])
    assert [f.form_id for f in discover_forms(tmp_path)] == [f"x01-00{i}{c}" for i, c in enumerate("abcdef")]

    records, report = load_forms(tmp_path)
    assert [(r.line_id, r.text) for r in records] == [
        ("x01-000a-01", "Hello there ."), ("x01-000a-02", "second line"), ("x01-002c-01", "fine")
    ]
    assert records[0].strokes.shape == (50, 3) and records[0].strokes[:, 2].sum() == 2
    reasons = {Path(f).name: r for f, r in report.skipped}
    assert reasons == {
        "x01-001b.txt": "count mismatch: 1 CSR lines, 3 XML files",
        "x01-002c-02.xml": reasons["x01-002c-02.xml"],
        "x01-002c-03.xml": "placeholder text: 'bone %%%%%%%%%%% pinned.'",
        "x01-003d.txt": "no lineStrokes: no XML files for this form",
        "x01-004e-01.xml": "no transcription: 1 XML file(s) without ascii/x01-004e.txt",
        "x01-005f-01.xml": "no strokes: no StrokeSet/Stroke/Point in the file",
    }
    assert reasons["x01-002c-02.xml"].startswith("unreadable XML: ")
    summary = report.summary()
    assert summary.startswith("skipped 6 file(s):")
    kinds = ("count mismatch", "placeholder text", "unreadable XML", "no lineStrokes", "no transcription", "no strokes")
    assert all(f"  {kind} [1]: " in summary for kind in kinds)
    assert "x01-001b.txt (1 CSR lines, 3 XML files)" in summary

    records, report = load_forms(tmp_path, ["x01-000a", "zz-nothing"])
    assert len(records) == 2 and report.skipped == [(str(tmp_path / "zz-nothing"), report.skipped[0][1])]
    assert report.skipped[0][1].startswith("not found")


def test_read_transcription_line_endings(tmp_path):
    for nl in ("\n", "\r\n"):
        (tmp_path / "f.txt").write_bytes(ascii_bytes(["a b", "", "  c  "], nl))
        assert read_transcription(tmp_path / "f.txt") == ["a b", "c"]
    (tmp_path / "g.txt").write_bytes(b"OCR:\n\nno csr here\n")
    with pytest.raises(HandwritingFormatError, match="CSR"):
        read_transcription(tmp_path / "g.txt")


@needs_iam
def test_real_transcriptions_crlf_and_lf():
    lf, crlf = IAM / "ascii/a01/a01-000/a01-000u.txt", IAM / "ascii/d01/d01-025/d01-025z.txt"
    assert b"\r\n" not in lf.read_bytes() and b"\r\n" in crlf.read_bytes()
    assert read_transcription(lf) == [
        "A MOVE to stop Mr . Gaitskell", "from nomnating any more Labour", "life Peers is to be made at a",
        "meeting of Labour M Ps tomorrow", "Mr . Michael Foot has put down a", "resolution on the subject",
    ]
    lines = read_transcription(crlf)
    assert lines and not any("\r" in s or not s.strip() for s in lines)
    assert len(lines) == len(list((IAM / "lineStrokes/d01/d01-025").glob("d01-025z-*.xml")))


@needs_iam
def test_real_line_strokes_and_discovery():
    f = IAM / "lineStrokes/a01/a01-000/a01-000u-01.xml"
    strokes = read_line_strokes(f)
    assert strokes[0][0].tolist() == [1073, 1058] and strokes[0][1].tolist() == [1072, 1085]
    assert sum(map(len, strokes)) == f.read_bytes().count(b"<Point ")
    o = strokes_to_offsets(strokes)
    assert len(o) >= sum(map(len, strokes)) and o[:, 2].sum() == len(strokes) and o[-1, 2] == 1
    exact = strokes_to_offsets(strokes, None, None)
    for b, s in zip(offsets_to_strokes(exact), strokes):
        np.testing.assert_array_equal(b, s - strokes[0][0])

    forms = discover_forms(IAM)
    with_lines = [f for f in forms if f.lines]
    assert sum(len(f.lines) for f in with_lines) == 1383  # SOURCES.md: 1,383 line files
    assert all(f.transcription is not None for f in with_lines)
    a01 = next(f for f in forms if f.form_id == "a01-000u")
    assert [Path(p).name for p in a01.lines] == [f"a01-000u-{k:02d}.xml" for k in range(1, 7)]


@needs_iam
def test_load_real_forms():
    records, report = load_forms(IAM, ["a01-000u", "d01-025z"])
    assert len(report) == 0, report.summary()
    assert records[0].line_id == "a01-000u-01" and records[0].text == "A MOVE to stop Mr . Gaitskell"
    n_d01 = len(read_transcription(IAM / "ascii/d01/d01-025/d01-025z.txt"))
    assert [r.form_id for r in records].count("d01-025z") == n_d01
    for r in records:
        assert r.strokes.dtype == np.float32 and r.strokes.ndim == 2 and r.strokes.shape[1] == 3
        assert 60 < len(r.strokes) < 2000 and r.strokes[-1, 2] == 1 and set(np.unique(r.strokes[:, 2])) <= {0, 1}


@needs_iam
def test_real_placeholder_form_in_tmp_path(tmp_path):
    """a08-551z (CRLF, line 8 holds '%%%%%%%%%%%') has no strokes in the shared subset: give it some."""
    shutil.copytree(IAM / "ascii/a08/a08-551", tmp_path / "ascii/a08/a08-551")
    src = sorted((IAM / "lineStrokes/a01").rglob("*.xml"))[:8]
    write_form(tmp_path, "a08-551z", None, [p.read_bytes() for p in src])
    records, report = load_forms(tmp_path)
    assert len(records) == 7 and records[-1].text == "and there he will stay for the next three"
    ((file, reason),) = report.skipped
    assert Path(file).name == "a08-551z-08.xml" and reason.startswith("placeholder text")


# ----------------------------------------------------------------------------- alphabets


def test_full_alphabet():
    a = full_alphabet(["ab c", "Ca!"])
    assert a.chars == [END, " ", "!", "C", "a", "b", "c"] and a.chars[0] == "\x00"
    ids = a.encode("cab !")
    assert ids.dtype == np.int64 and ids.min() >= 1 and a.decode(ids) == "cab !"
    assert a.decode(np.r_[ids, 0, 3]) == "cab !"  # stops at the END/pad index
    assert a.unknown_chars("a?x a") == ["?", "x"]
    with pytest.raises(KeyError):
        a.encode("a?")
    assert Alphabet.from_json(a.to_json()) == a


def test_graves57_alphabet():
    g = graves57_alphabet()
    assert len(g) == 58 and g.chars[0] == END  # 57 text classes + the END dummy
    assert g.encode("aAzZ .,\"").tolist() == [1, 27, 26, 52, 53, 54, 55, 56]
    assert g.decode(g.encode("Mr. 5's (1963) \u00e9t\u00e9!")) == "Mr. ##s ###### #t##"
    assert set(g.encode("0123456789'-?!:;()#%/[]+*_@&").tolist()) == {57}
    assert g.unknown_chars("two-twenty carried, for him,") == ["-"]
    assert Alphabet.from_json(g.to_json()) == g


# ----------------------------------------------------------------------------- styles


@needs_styles
def test_load_style():
    assert list_styles(STYLES) == list(range(13))
    offsets, text = load_style(STYLES, 9)
    assert text == "two-twenty carried, for him,"
    assert offsets.dtype == np.float32 and offsets.shape[1] == 3 and 386 <= len(offsets) <= 881
    assert offsets[0].tolist() == [0, 0, 1] and offsets[-1, 2] == 0  # the files leave the last stroke open
    assert len(offsets_to_strokes(offsets)) == int(offsets[:, 2].sum()) + 1
