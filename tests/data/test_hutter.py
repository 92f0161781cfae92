"""The Hutter byte preset and config, and the text task's lazy streams (what a resumed run reads)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

import seqgen
from seqgen.config import load
from seqgen.data.presets import text_preset, text_spec
from seqgen.data.text import load_split, preprocess_text
from seqgen.evaluate import batchify, evaluate_tokens
from seqgen.storage import Storage
from seqgen.train.text_task import TextTask

HUTTER_YAML = Path(seqgen.__file__).parent / "configs" / "hutter.yaml"


@pytest.fixture
def byte_corpus():
    """Wikipedia-ish bytes: markup, UTF-8 and a few raw bytes, ~200 KB, in memory://."""
    root = f"memory://hutter-{uuid.uuid4().hex}"
    rng = random.Random(0)
    words = ["[[Anarchism]]", "the", "of", "&lt;ref&gt;", "Zürich", "{{cite}}", "λόγος", "1917", "\n"]
    data = " ".join(rng.choice(words) for _ in range(30_000)).encode() + bytes(range(256))
    with fsspec.open(f"{root}/in/enwik", "wb") as f:
        f.write(data)
    storage = Storage.from_url(f"{root}/store")
    yield storage, f"{root}/in/enwik", data
    fsspec.filesystem("memory").rm(root, recursive=True)


def test_hutter_preset_is_bytes_split_90_5_5(byte_corpus):
    storage, url, data = byte_corpus
    spec = text_spec("wiki", [url], preset="hutter", chunk_bytes=16 << 10)
    assert (spec.tokenizer, spec.valid_fraction, spec.test_fraction) == ("byte", 0.05, 0.05)
    assert text_preset("hutter", data_dir="s3://b/data").files == {"train": ["s3://b/data/text/enwik8"]}
    m = preprocess_text(storage, "wiki", spec)
    assert m["vocab_size"] == 256 and m["vocab"]["symbols"] == list(range(256))  # every byte value
    sizes = {s: m["splits"][s]["tokens"] for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == len(data)
    assert abs(sizes["valid"] - 0.05 * len(data)) <= 1 and abs(sizes["test"] - 0.05 * len(data)) <= 1
    assert all(m["splits"][s]["chars"] == n for s, n in sizes.items())  # a byte is a character here
    ids = np.concatenate([load_split(storage, m, s) for s in ("train", "valid", "test")])
    assert bytes(ids.astype(np.uint8)) == data


def _tiny_hutter(**train):
    overrides = ["dataset=wiki", "model.hidden_size=16", "model.num_layers=2", "train.batch_size=6",
                 "train.seq_len=20", *(f"train.{k}={v}" for k, v in train.items())]
    return load(HUTTER_YAML, overrides)


def test_hutter_config_keeps_the_papers_data_regime():
    cfg = load(HUTTER_YAML)
    assert cfg.dataset == "hutter" and cfg.model.skip and cfg.model.deriv_clip == 1.0
    assert (cfg.train.seq_len, cfg.train.reset_every, cfg.train.shuffle) == (100, 100, False)


@pytest.mark.parametrize("shuffle", [False, True])
def test_task_streams_read_lazily_the_windows_of_batchify_and_resume_exactly(byte_corpus, shuffle):
    storage, url, _ = byte_corpus
    m = preprocess_text(storage, "wiki", text_spec("wiki", [url], preset="hutter", chunk_bytes=16 << 10,
                                                    block_tokens=1000))
    cfg = _tiny_hutter(shuffle=str(shuffle).lower())
    for rank, world in ((0, 1), (1, 2)):
        task = TextTask(cfg, storage, rank, world)
        rows = batchify(load_split(storage, m, "train", rank, world), 6 // world)  # the in-memory layout
        assert task.streams.shape == tuple(rows.shape)
        batches = [task.next_batch() for _ in range(7)]
        saved = task.state_dict()
        later = [task.next_batch() for _ in range(task.num_windows + 3)]  # into the next epoch
        order = np.random.default_rng([cfg.train.seed, 0]).permutation(task.num_windows) if shuffle else range(7)
        for (x, y, _), w in zip(batches, order):
            torch.testing.assert_close(x, rows[:, w * 20 : w * 20 + 20])
            torch.testing.assert_close(y, rows[:, w * 20 + 1 : w * 20 + 21])
        resumed = TextTask(cfg, storage, rank, world)
        resumed.load_state_dict(saved)
        for (x, y, reset), (x2, y2, reset2) in zip(later, (resumed.next_batch() for _ in later)):
            torch.testing.assert_close(x2, x)
            torch.testing.assert_close(y2, y)
            assert reset2 == reset
        # the reader holds a few row groups per stream, not the share
        assert task.streams.tokens.reader.cached <= max(32 << 20, (2 * 3 + 2) * 1000)


def test_lazy_evaluation_equals_in_memory(byte_corpus):
    storage, url, _ = byte_corpus
    m = preprocess_text(storage, "wiki", text_spec("wiki", [url], preset="hutter", block_tokens=500))
    cfg = _tiny_hutter()
    task = TextTask(cfg, storage)
    torch.manual_seed(0)
    model = task.build_model()
    ids = load_split(storage, m, "valid")
    lazy = evaluate_tokens(model, task.valid, streams=4, seq_len=30)
    eager = evaluate_tokens(model, ids, streams=4, seq_len=30)
    assert lazy.count == eager.count == len(ids) - len(ids) % 4 - 4
    assert lazy.nll == pytest.approx(eager.nll, rel=1e-6) and lazy.correct == eager.correct
    assert task.valid.reader.groups_read <= len(ids) // 500 + 4 * 2
