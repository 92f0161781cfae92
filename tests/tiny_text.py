"""A tiny character vocabulary and a seeded random 2 x 16 LSTM text model over it: what the
sampling, sampling-control and engine tests generate with (no training, no storage)."""

from __future__ import annotations

from collections import Counter

import torch

from seqgen.config import ModelConfig
from seqgen.data.tokenizers import Vocabulary, split_symbols
from seqgen.models.text import TextModel

CORPUS = "the quick brown fox jumps over the lazy dog.\nTHE END, 42!\n"


def tiny_vocab() -> Vocabulary:
    return Vocabulary.build("char", Counter(split_symbols("char", CORPUS.encode())))


def tiny_text_model(vocab: Vocabulary, seed: int) -> TextModel:
    torch.manual_seed(seed)
    m = TextModel(ModelConfig(hidden_size=16, num_layers=2), len(vocab))
    with torch.no_grad():  # sharpen the random model a little so samples are not uniform noise
        m.head.weight.mul_(4.0)
    return m.eval()
