"""Data from anywhere: presets as CLI settings, inputs at fsspec URLs (memory:// here, s3:// in
tests/integration/test_s3.py) giving the same dataset as the local build, and the sha256 of every
shard checked on load."""

from __future__ import annotations

import json
import uuid

import fsspec
import numpy as np
import pytest
from typer.testing import CliRunner

from seqgen.cli import app
from seqgen.data.presets import BUNDLED_SHAKESPEARE, text_spec
from seqgen.data.shards import DatasetError
from seqgen.data.text import TextSpec, load_manifest, load_split, preprocess_text
from seqgen.storage import Storage, join

runner = CliRunner()
PTB_CHAR = [f"ptb.char.{s}.txt" for s in ("train", "valid", "test")]


@pytest.fixture
def mem():
    root = f"memory://src-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def same_dataset(a: dict, b: dict, storage_a: Storage, storage_b: Storage) -> None:
    """Equal fingerprints, vocabularies, split sizes, shard bytes and tokens; only where the
    sources were read from (and when/which version) may differ."""
    assert a["fingerprint"] == b["fingerprint"]
    assert a["vocab"] == b["vocab"] and a["settings"] == b["settings"]
    strip = lambda m: {s: {k: v for k, v in i.items() if k != "shards"} | {"sha256": [sh["sha256"] for sh in i["shards"]]}  # noqa: E731
                       for s, i in m["splits"].items()}
    assert strip(a) == strip(b)
    for split in a["splits"]:
        np.testing.assert_array_equal(load_split(storage_a, a, split), load_split(storage_b, b, split))


# ---------------------------------------------------------------------------------------------
# preset settings as options
def test_text_spec_starts_from_the_preset_and_options_override():
    spec = text_spec("ptb-char", ["s3://b/train.txt"], ["s3://b/valid.txt"])
    assert spec.tokenizer == "word" and spec.tokens_are_chars and spec.max_vocab == 0
    assert spec.files == {"train": ["s3://b/train.txt"], "valid": ["s3://b/valid.txt"]}
    mine = text_spec("mine", ["x.txt"], preset="ptb-word", max_vocab=500, tokenizer=None)
    assert (mine.tokenizer, mine.max_vocab) == ("word", 500)  # None = "not given": the preset's value stays
    plain = text_spec("mine", ["x.txt"], tokenizer="byte", valid_fraction=0.04)
    assert plain.settings() == TextSpec("byte", valid_fraction=0.04).settings()
    shakes = text_spec("shakespeare")
    assert shakes.files == {"train": [BUNDLED_SHAKESPEARE]} and shakes.valid_fraction == 0.1
    assert text_spec("ptb-word", data_dir="s3://bucket/data/").files["valid"] == ["s3://bucket/data/text/ptb/ptb.valid.txt"]
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        text_spec("x", ["a"], preset="nope")
    with pytest.raises(ValueError, match="is not a preset"):
        text_spec("x")
    with pytest.raises(ValueError, match="only together with --input"):
        text_spec("ptb-char", valid=["v.txt"])


def test_fingerprint_ignores_where_the_input_lives(mem, tmp_path):
    local = tmp_path / "corpus.txt"
    local.write_bytes(open(BUNDLED_SHAKESPEARE, "rb").read()[:20000])
    with fsspec.open(f"{mem}/in/corpus.txt", "wb") as f:
        f.write(local.read_bytes())
    st_a, st_b = Storage.from_url(f"{mem}/a"), Storage.from_url(f"{mem}/b")
    spec = dict(tokenizer="char", valid_fraction=0.1, chunk_bytes=4096)
    a = preprocess_text(st_a, "d", TextSpec(files={"train": [str(local)]}, **spec))
    b = preprocess_text(st_b, "d", TextSpec(files={"train": [f"{mem}/in/corpus.txt"]}, **spec))
    same_dataset(a, b, st_a, st_b)
    assert [s["url"] for s in b["sources"]] == [f"{mem}/in/corpus.txt"] * 2  # train and valid parts
    other = preprocess_text(st_b, "e", TextSpec(files={"train": [str(local)]}, **spec | {"valid_fraction": 0.2}))
    assert other["fingerprint"] != a["fingerprint"]


@pytest.mark.data
def test_ptb_char_from_memory_url_equals_the_preset(shared_data, ptb_presets, mem):
    """The same dataset from a copy of the files at memory:// given as options, as --data-dir, and
    from the local preset."""
    fs = fsspec.filesystem("memory")
    for name in PTB_CHAR:
        fs.pipe(f"{mem}/data/text/ptb/{name}".removeprefix("memory://"), (shared_data / "text" / "ptb" / name).read_bytes())
    local, reference = ptb_presets[0], ptb_presets[1]["ptb-char"]

    store = Storage.from_url(f"{mem}/copy")
    urls = [f"{mem}/data/text/ptb/{n}" for n in PTB_CHAR]
    out = cli("preprocess", "chars", "-i", urls[0], "--valid", urls[1], "--test", urls[2], "--tokenizer", "word",
              "--tokens-are-chars", "--storage", store.url)
    assert reference["fingerprint"][:12] in out
    same_dataset(reference, load_manifest(store, "chars"), local, store)
    assert load_manifest(store, "chars")["sources"][0]["url"] == urls[0]

    cli("preprocess", "ptb-char", "--data-dir", f"{mem}/data", "--storage", store.url)  # the whole preset moved
    same_dataset(reference, load_manifest(store, "ptb-char"), local, store)
    # without the preset's settings it is another dataset (the bug this fixes: -i lost them)
    cli("preprocess", "plain", "-i", urls[0], "--tokenizer", "char", "--storage", store.url)
    assert load_manifest(store, "plain")["fingerprint"] != reference["fingerprint"]


# ---------------------------------------------------------------------------------------------
# IAM-OnDB from a URL
IAM_FORMS = ("a01-000u", "a01-001w", "a01-003u", "a01-007u")


def _copy_iam_subset(shared_data, dest: str) -> list[str]:
    """The files of a few real forms, at ``dest`` in the original layout."""
    src = shared_data / "handwriting" / "iam-ondb"
    files = [p for sub in ("ascii", "lineStrokes") for p in (src / sub).rglob("*") if p.is_file()
             and any(p.name.startswith(f) for f in IAM_FORMS)]
    for p in files:
        with fsspec.open(f"{dest}/{p.relative_to(src).as_posix()}", "wb") as f:
            f.write(p.read_bytes())
    return files


@pytest.mark.data
def test_iam_from_memory_url_equals_the_local_copy(shared_data, mem, tmp_path):
    from seqgen.handwriting.dataset import load_lines, preprocess_handwriting

    files = _copy_iam_subset(shared_data, f"{mem}/iam")
    _copy_iam_subset(shared_data, str(tmp_path / "iam"))
    assert len(files) > len(IAM_FORMS)
    st_a, st_b = Storage.from_url(f"{mem}/a"), Storage.from_url(f"{mem}/b")
    local = preprocess_handwriting(st_a, "hw", str(tmp_path / "iam"), valid_fraction=0.25, forms_per_task=2)
    out = cli("preprocess", "hw", "--handwriting", "-i", f"{mem}/iam", "--valid-fraction", "0.25",
              "--forms-per-task", "2", "--storage", st_b.url)
    remote = load_manifest(st_b, "hw")
    assert "dataset hw" in out and remote["fingerprint"] == local["fingerprint"]
    assert remote["sources"]["root"] == f"{mem}/iam" and remote["sources"]["files"] == len(files)
    summary = lambda m: {s: (i["lines"], i["points"], [sh["sha256"] for sh in i["shards"]])  # noqa: E731
                         for s, i in m["splits"].items()}
    assert summary(remote) == summary(local)
    for split in local["splits"]:
        a, b = load_lines(st_a, local, split), load_lines(st_b, remote, split)
        assert [x["line_id"] for x in a] == [x["line_id"] for x in b] and len(a) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x["offsets"], y["offsets"])
    with pytest.raises(FileNotFoundError, match="IAM-OnDB root not found: memory://nowhere"):
        preprocess_handwriting(st_b, "hw2", "memory://nowhere/iam")


# ---------------------------------------------------------------------------------------------
# content hashes
def _damage(storage: Storage, manifest: dict, split: str) -> str:
    shard = manifest["splits"][split]["shards"][0]
    path = join(storage.dataset_dir(manifest["name"]), shard["path"])
    data = bytearray(storage.fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF  # same size, other content: a size check would not see it
    storage.fs.pipe(path, bytes(data))
    return storage.url_of(path)


def test_text_shard_hash_checked_on_load(mem):
    storage = Storage.from_url(f"{mem}/st")
    with fsspec.open(f"{mem}/in.txt", "wb") as f:
        f.write(b"hello world, a small corpus\n" * 200)
    m = preprocess_text(storage, "t", TextSpec("char", {"train": [f"{mem}/in.txt"]}, valid_fraction=0.2, chunk_bytes=1000))
    assert all(len(sh["sha256"]) == 64 for s in m["splits"].values() for sh in s["shards"])
    valid = load_split(storage, m, "valid")
    # a manifest written before hashes existed loads as before
    old = json.loads(json.dumps(m))
    for s in old["splits"].values():
        for sh in s["shards"]:
            del sh["sha256"]
    assert len(load_split(storage, old, "train")) == m["splits"]["train"]["tokens"]

    url = _damage(storage, m, "train")
    with pytest.raises(DatasetError, match=f"dataset 't' is damaged: shard {url} has sha256 .*--force"):
        load_split(storage, m, "train")
    np.testing.assert_array_equal(load_split(storage, m, "valid"), valid)  # other shards still load

    storage.fs.rm(join(storage.dataset_dir("t"), m["splits"]["valid"]["shards"][0]["path"]))
    with pytest.raises(DatasetError, match="shard .*part-.*parquet is missing"):
        load_split(storage, m, "valid")


def test_handwriting_shard_hash_checked_on_load(mem, tmp_path):
    from seqgen.handwriting.dataset import load_lines, preprocess_handwriting

    root = tmp_path / "iam"
    for form in ("x01-000", "x01-001"):
        (root / "ascii/x01" / form).mkdir(parents=True)
        (root / "ascii/x01" / form / f"{form}.txt").write_text("CSR:\n\nab\ncd\n")
        (root / "lineStrokes/x01" / form).mkdir(parents=True)
        for k in (1, 2):
            points = "".join(f'<Point x="{10 * i + k}" y="{5 * i}" time="0"/>' for i in range(6))
            (root / "lineStrokes/x01" / form / f"{form}-{k:02d}.xml").write_text(
                f"<WhiteboardCaptureSession><StrokeSet><Stroke>{points}</Stroke></StrokeSet></WhiteboardCaptureSession>")
    storage = Storage.from_url(f"{mem}/st")
    m = preprocess_handwriting(storage, "hw", str(root), valid_fraction=0.5)
    assert all(len(sh["sha256"]) == 64 for s in m["splits"].values() for sh in s["shards"])
    assert len(load_lines(storage, m, "train")) == 2
    url = _damage(storage, m, "train")
    with pytest.raises(DatasetError, match=f"shard {url} has sha256"):
        load_lines(storage, m, "train")
