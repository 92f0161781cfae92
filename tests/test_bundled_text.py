"""The bundled Tiny Shakespeare model (seqgen/assets/shakespeare): found as bundled:shakespeare,
small, and a real language model of its corpus (in-process)."""

from __future__ import annotations

import math

import pytest

from seqgen.catalog import BUNDLED, CheckpointError, find_checkpoint, load_model
from seqgen.storage import Storage


def test_bundled_names_resolve_to_the_shipped_checkpoints(tmp_path):
    st = Storage.from_url(str(tmp_path))
    assert find_checkpoint(st, "bundled:shakespeare") == str(BUNDLED["shakespeare"])
    assert find_checkpoint(st, "bundled:handwriting") == str(BUNDLED["handwriting"])
    with pytest.raises(CheckpointError, match="bundled: bundled:shakespeare, bundled:handwriting"):
        find_checkpoint(st, "bundled:hamlet")


def test_the_bundled_text_model_is_small_and_knows_shakespeare():
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.text_sampling import generate, score_text

    url = find_checkpoint(Storage.from_url("memory://bundled"), "bundled:shakespeare")
    size = sum(f.stat().st_size for f in BUNDLED["shakespeare"].iterdir())
    assert size < 4.2e6
    model, loaded = load_model(url)
    assert loaded.config.model.kind == "text" and loaded.config.dataset == "shakespeare"
    assert loaded.progress["best"] < 2.2  # validation bits/char when it was bundled (docs/serving.md)
    vocab = Vocabulary.from_json(loaded.meta["vocab"])
    line = "ROMEO:\nI will not be so, my lord; I am content to hear you speak.\n"
    uniform = math.log2(len(vocab))
    assert score_text(model, vocab, line)["bits_per_token"] < 0.5 * uniform
    (text,) = generate(model, vocab, "ROMEO:\n", 200, temperature=0.8, seed=1)
    assert len(text) == 200 and text.count(" ") > 20  # words, not noise
