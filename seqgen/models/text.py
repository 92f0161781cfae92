"""Next-token text models (Graves sec. 3, char-rnn, RNN-CF, the WildML LM): tokens -> softmax.

The step protocol every model in seqgen follows::

    state = model.initial_state(batch)
    logits, state = model(tokens (B, T), state)        # T = 1 is one sampling step
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from seqgen.config import ExperimentConfig, ModelConfig
from seqgen.models.stack import DeepRecurrent


def build_text_model(cfg: ExperimentConfig, meta: dict) -> "TextModel":
    """The text network a checkpoint's config + meta (its vocabulary) describe (`seqgen.kinds`)."""
    return TextModel(cfg.model, len(meta["vocab"]["symbols"]))


class TextModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        # One-hot inputs as in the paper (eq. 12), or a learned embedding (word models).
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim) if cfg.embedding_dim else None
        input_size = cfg.embedding_dim or vocab_size
        self.rnn = DeepRecurrent(
            cfg.cell, input_size, cfg.hidden_size, cfg.num_layers, skip=cfg.skip, dropout=cfg.dropout,
            peephole=cfg.peephole, deriv_clip=cfg.deriv_clip, context_size=cfg.context_size, alpha=cfg.alpha,
        )
        self.head = nn.Linear(self.rnn.output_size, vocab_size)  # eq. 3: b_y + sum_n W_{hn,y} h^n_t

    def unit_readers(self) -> dict[str, int]:
        """The weights outside the stack that read its units (`seqgen.models.widen`)."""
        return {"head.weight": self.rnn.output_layers}

    def initial_state(self, batch: int, device=None) -> tuple:
        return self.rnn.initial_state(batch, device or self.head.weight.device, self.head.weight.dtype)

    def embed(self, tokens: Tensor) -> Tensor:
        if self.embedding is not None:
            return self.embedding(tokens)
        return F.one_hot(tokens, self.vocab_size).to(self.head.weight.dtype)

    def forward(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """tokens (B, T) int64 -> logits (B, T, V) (yhat_t: eq. 12 before the softmax), new state."""
        h, state = self.rnn(self.embed(tokens), state)
        return self.head(h), state
