"""preprocess_handwriting: manifest, statistics, shards, splits, skips, a failed build; in-process
(memory://, no Ray) but for the failed build, which is also run in Ray tasks.

Synthetic IAM-OnDB roots (built in tmp_path) cover the rules; tests marked ``data`` repeat the
checks on a few real forms of the shared subset.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from seqgen.data.text import DatasetError
from seqgen.handwriting.dataset import assign_splits, load_lines, preprocess_handwriting
from seqgen.handwriting.iam import Alphabet, discover_forms, full_alphabet, graves57_alphabet, load_forms
from seqgen.storage import Storage


def write_form(root: Path, form: str, texts: list[str], n_xml: int | None = None, seed: int = 0) -> None:
    """An IAM-OnDB form in the original layout: CSR ``texts`` and ``n_xml`` random-walk line XMLs."""
    rng = np.random.default_rng(seed)
    d = f"{form[:3]}/{form.rsplit('-', 1)[0] if form.count('-') > 1 else form}"
    (root / "ascii" / d).mkdir(parents=True, exist_ok=True)
    (root / "ascii" / d / f"{form}.txt").write_text("OCR:\n\nx\n\nCSR:\n\n" + "\n".join(texts) + "\n")
    (root / "lineStrokes" / d).mkdir(parents=True, exist_ok=True)
    for k in range(1, (len(texts) if n_xml is None else n_xml) + 1):
        strokes = "".join(
            "<Stroke>" + "".join(f'<Point x="{x:.0f}" y="{y:.0f}" time="0"/>'
                                 for x, y in np.cumsum(rng.normal(8, 10, (rng.integers(5, 40), 2)), 0) + 1000) + "</Stroke>"
            for _ in range(rng.integers(2, 6)))
        (root / "lineStrokes" / d / f"{form}-{k:02d}.xml").write_text(
            f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><StrokeSet>{strokes}'
            "</StrokeSet></WhiteboardCaptureSession>\n")


@pytest.fixture
def storage():
    url = f"memory://hw-{uuid.uuid4().hex}"
    yield Storage.from_url(url)
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


@pytest.fixture
def root(tmp_path) -> Path:
    """Six good forms (2-3 lines each) and one transcription without strokes."""
    for i in range(6):
        write_form(tmp_path, f"x0{i}-00{i}", [f"line {j} of form {i}!" for j in range(2 + i % 2)], seed=i)
    (tmp_path / "ascii/y01/y01-000").mkdir(parents=True)
    (tmp_path / "ascii/y01/y01-000/y01-000.txt").write_text("CSR:\n\nno strokes here\n")
    return tmp_path


def _versions(storage: Storage, name: str) -> list[str]:
    if not storage.exists(storage.dataset_dir(name)):
        return []
    return [p for p in storage.fs.ls(storage.dataset_dir(name), detail=False) if p.rstrip("/").rsplit("/", 1)[-1].startswith("v-")]


def test_manifest_counts_stats_alphabet_and_skips(root, storage, capsys):
    m = preprocess_handwriting(storage, "hw", str(root), valid_fraction=0.2, forms_per_task=2, use_ray=False)
    records, _ = load_forms(root)
    assert m["kind"] == "handwriting" and m["schema_version"] == 1
    assert sum(s["lines"] for s in m["splits"].values()) == len(records) == 15
    assert sum(s["points"] for s in m["splits"].values()) == sum(len(r.strokes) for r in records)
    assert {s: sum(sh["lines"] for sh in v["shards"]) for s, v in m["splits"].items()} == {s: v["lines"] for s, v in m["splits"].items()}
    assert set(m["splits"]) == {"train", "valid"} and m["splits"]["valid"]["lines"] in (2, 3)  # round(6 * 0.2) = 1 form
    train_forms = {line["form_id"] for line in load_lines(storage, m, "train")}
    steps = np.concatenate([r.strokes[1:, :2] for r in records if r.form_id in train_forms]).astype(np.float64)
    np.testing.assert_allclose(m["offset_mean"], steps.mean(0), rtol=1e-9)
    np.testing.assert_allclose(m["offset_std"], steps.std(0), rtol=1e-6)
    assert Alphabet.from_json(m["alphabet"]) == full_alphabet(r.text for r in records)
    assert m["skipped"]["count"] == 1 and m["skipped"]["by_reason"] == {"no lineStrokes": 1}
    assert m["skipped"]["files"] == [["ascii/y01/y01-000/y01-000.txt", "no lineStrokes: no XML files for this form"]]
    assert "skipped 1 file(s)" in capsys.readouterr().err  # never silent
    assert m["sources"]["files"] == 1 + 6 + 15


def test_offsets_round_trip_and_worker_shares(root, storage):
    m = preprocess_handwriting(storage, "hw", str(root), valid_fraction=0.2, forms_per_task=2, use_ray=False)
    lines = load_lines(storage, m, "train") + load_lines(storage, m, "valid")
    by_id = {r.line_id: r for r in load_forms(root)[0]}
    assert len(lines) == len(by_id)
    for line in lines:
        np.testing.assert_array_equal(line["offsets"], by_id[line["line_id"]].strokes)
        assert line["offsets"].dtype == np.float32 and line["text"] == by_id[line["line_id"]].text
    train = load_lines(storage, m, "train")
    shares = [load_lines(storage, m, "train", r, 3) for r in range(3)]
    assert [x["line_id"] for s in shares for x in s] == [x["line_id"] for x in train]  # contiguous, in order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(KeyError, match="no 'test' split"):
        load_lines(storage, m, "test")


def test_idempotent_unless_forced(root, storage):
    m1 = preprocess_handwriting(storage, "hw", str(root), use_ray=False)
    assert preprocess_handwriting(storage, "hw", str(root), use_ray=False) == m1
    (v1,) = _versions(storage, "hw")
    m2 = preprocess_handwriting(storage, "hw", str(root), use_ray=False, force=True)
    (v2,) = _versions(storage, "hw")  # the old version is removed once the new manifest is written
    assert v1 != v2 and m2["fingerprint"] == m1["fingerprint"] and m2["splits"]["train"]["lines"] == m1["splits"]["train"]["lines"]
    m3 = preprocess_handwriting(storage, "hw", str(root), alphabet="graves57", use_ray=False)
    assert m3["fingerprint"] != m1["fingerprint"] and Alphabet.from_json(m3["alphabet"]) == graves57_alphabet()
    write_form(root, "x09-009", ["a new form"])  # a changed input is rebuilt
    assert preprocess_handwriting(storage, "hw", str(root), use_ray=False)["fingerprint"] != m1["fingerprint"]


def test_broken_files_are_reported_not_fatal(root, storage):
    bad = next((root / "lineStrokes").rglob("x01-001-02.xml"))
    bad.write_text("<WhiteboardCaptureSession><StrokeSet>")  # unreadable XML: that line is skipped
    write_form(root, "z01-000", ["one", "two"], n_xml=3)  # CSR / XML count mismatch: the form is skipped
    m = preprocess_handwriting(storage, "hw", str(root), use_ray=False)
    assert m["skipped"]["by_reason"] == {"no lineStrokes": 1, "unreadable XML": 1, "count mismatch": 1}
    assert ["lineStrokes/x01/x01-001/x01-001-02.xml"] == [f for f, r in m["skipped"]["files"] if r.startswith("unreadable")]
    assert sum(s["lines"] for s in m["splits"].values()) == 15 - 1


def test_nothing_usable_writes_nothing(tmp_path, storage):
    write_form(tmp_path, "z01-000", ["one", "two"], n_xml=1)
    with pytest.raises(DatasetError, match="(?s)no usable line.*count mismatch"):
        preprocess_handwriting(storage, "hw", str(tmp_path), use_ray=False)
    assert not storage.exists(storage.dataset_dir("hw") + "/manifest.json") and not _versions(storage, "hw")
    with pytest.raises(FileNotFoundError):
        preprocess_handwriting(storage, "hw", str(tmp_path / "missing"), use_ray=False)
    with pytest.raises(DatasetError, match="alphabet"):
        preprocess_handwriting(storage, "hw", str(tmp_path), alphabet="klingon", use_ray=False)


@pytest.mark.parametrize("where", ["in_process", pytest.param("ray_tasks", marks=pytest.mark.ray)])
def test_a_failed_build_leaves_no_shard_and_the_previous_version(root, storage, tmp_path, where, request):
    """The valid split's tasks write their shards, then the build fails (no usable train line):
    none of them stays, and the dataset published before is still the one readers get."""
    if where == "ray_tasks":
        request.getfixturevalue("ray_session")
        storage = Storage.from_url(str(tmp_path / "store"))  # where Ray tasks and the driver both see it
    use_ray = where == "ray_tasks"
    first = preprocess_handwriting(storage, "hw", str(root), use_ray=use_ray)
    before = sorted(storage.fs.find(storage.dataset_dir("hw")))
    write_form(root, "z01-000", ["one", "two"], n_xml=1)  # unusable: CSR / XML count mismatch
    good = [f.form_id for f in discover_forms(root) if f.form_id.startswith("x")]
    with pytest.raises(DatasetError, match="no usable line in the train split"):
        preprocess_handwriting(storage, "hw", str(root), splits={"train": ["z01-000"], "valid": good},
                               forms_per_task=2, use_ray=use_ray)
    assert sorted(storage.fs.find(storage.dataset_dir("hw"))) == before
    assert storage.read_json(storage.dataset_dir("hw") + "/manifest.json") == first
    assert len(load_lines(storage, first, "train")) == first["splits"]["train"]["lines"]


def test_assign_splits():
    forms = [f"f{i:03d}" for i in range(100)]
    a = assign_splits(forms, None, 0.1, 0.05)
    assert a == assign_splits(forms[::-1], None, 0.1, 0.05)  # deterministic, independent of order
    assert [list(a.values()).count(s) for s in ("train", "valid", "test")] == [85, 10, 5]
    assert list(assign_splits(["a", "b"], None, 0.1, 0.0).values()).count("valid") == 1  # at least one
    assert set(assign_splits(["a"], None, 0.1, 0.0).values()) == {"train"}  # ... but train keeps one
    assert assign_splits(forms[:3], {"valid": ["f001"]}, 0, 0) == {"f000": "train", "f001": "valid", "f002": "train"}
    assert assign_splits(forms[:3], {"train": ["f000"], "test": ["zzz"]}, 0, 0) == {"f000": "train", "zzz": "test"}
    with pytest.raises(DatasetError, match="both"):
        assign_splits(forms, {"train": ["f000"], "valid": ["f000"]}, 0, 0)
    with pytest.raises(DatasetError, match="unknown split"):
        assign_splits(forms, {"dev": []}, 0, 0)


@pytest.mark.data
def test_real_forms(shared_data, storage):
    root = shared_data / "handwriting" / "iam-ondb"
    forms = [f.form_id for f in discover_forms(root) if f.transcription and f.lines][:3]
    m = preprocess_handwriting(storage, "iam", str(root), splits={"train": forms[:2], "valid": forms[2:]}, use_ray=False)
    records, report = load_forms(root, forms)
    assert not len(report) and m["skipped"]["count"] == 0  # an explicit train list is a selection
    assert m["splits"]["train"]["lines"] + m["splits"]["valid"]["lines"] == len(records)
    steps = np.concatenate([r.strokes[1:, :2] for r in records if r.form_id in forms[:2]]).astype(np.float64)
    np.testing.assert_allclose(m["offset_mean"], steps.mean(0), rtol=1e-9)
    np.testing.assert_allclose(m["offset_std"], steps.std(0), rtol=1e-6)
    lines = load_lines(storage, m, "train") + load_lines(storage, m, "valid")
    for line, r in zip(lines, records):
        assert (line["line_id"], line["text"]) == (r.line_id, r.text)
        np.testing.assert_array_equal(line["offsets"], r.strokes)
    assert Alphabet.from_json(m["alphabet"]) == full_alphabet(r.text for r in records)
