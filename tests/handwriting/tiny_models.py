"""Tiny untrained handwriting checkpoints (a 1 x 8 synthesis network and recognizer with the bundled
model's alphabet and statistics) for command-line tests that need real checkpoints, not trained ones."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seqgen import checkpoint as ckpt
from seqgen import config
from seqgen.catalog import BUNDLED_HANDWRITING
from seqgen.models import build_model
from seqgen.storage import Storage, join


def save_checkpoint(st: Storage, name: str, kind: str, meta: dict, *overrides,
                    chars_per_point: float | None = None) -> str:
    """``chars_per_point``: the synthesis window's step exp(kappahat) (eq. 51) starts at this pace
    instead of the data's (an untrained network then ends a line, by the stop rule of sec. 5, after
    about len(line) / chars_per_point points instead of running to the length limit)."""
    cfg = config.load(None, [f"run_name={name}", "dataset=iam", f"model.kind={kind}", "model.hidden_size=8",
                             "model.num_layers=1", "model.mixture_components=2", "model.window_components=2",
                             *overrides])
    url = st.url_of(join(st.run_dir(name), ckpt.checkpoint_name(1)))
    meta = {**meta, "kind": kind}
    model = build_model(cfg, meta)
    if chars_per_point is not None:
        with torch.no_grad():
            model.window.bias[2 * model.K :].fill_(math.log(chars_per_point))
    ckpt.save(url, cfg, meta, model.state_dict(), {}, {"step": 1, "evals": [{"step": 1, "valid_cer": 0.25}]})
    return url


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained 1 x 8 synthesis network and recognizer with the bundled model's alphabet and statistics."""
    meta = json.loads((BUNDLED_HANDWRITING / "meta.json").read_text())
    st = Storage.from_url(str(tmp_path_factory.mktemp("legibility")))
    synth = save_checkpoint(st, "synth", "handwriting_synthesis", meta)
    reader = save_checkpoint(st, "reader", "handwriting_recognition", meta, "model.frame_stack=4")
    texts = tmp_path_factory.mktemp("texts") / "texts.txt"
    texts.write_text("ab\n\nhi there\n")
    return st, synth, reader, texts


