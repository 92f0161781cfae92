"""docs/bundle_checkpoint.py, how the bundled models are made: inference files only, weights in
float16 on request (half the bytes, the same network to float16 rounding), a new run name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from seqgen import checkpoint as ckpt
from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.storage import Storage
from tests.handwriting.tiny_models import save_checkpoint

sys.path.insert(0, str(Path(__file__).parents[2] / "docs"))
from bundle_checkpoint import bundle  # noqa: E402


def _outputs(url: str) -> torch.Tensor:
    """The network's raw mixture outputs (eq. 17) along a fixed random line and text."""
    model, loaded = load_model(url)
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, 40, 2, generator=gen), (torch.rand(1, 40, 1, generator=gen) < 0.1).float()], -1)
    chars = torch.randint(1, len(json.loads(loaded.meta["alphabet"])["chars"]), (1, 6), generator=gen)
    with torch.no_grad():
        return model(x, model.initial_state(1), chars)[0]


def test_fp16_bundle_is_half_the_bytes_and_the_same_network_to_rounding(tmp_path):
    meta = json.loads((BUNDLED_HANDWRITING / "meta.json").read_text())
    source = save_checkpoint(Storage.from_url(str(tmp_path / "store")), "wide", "handwriting_synthesis", meta,
                             "model.hidden_size=64")
    full = bundle(source, tmp_path / "fp32")
    half = bundle(source, tmp_path / "fp16", fp16=True, name="handwriting-bundled")
    assert 0.45 < (tmp_path / "fp16" / "model.pt").stat().st_size / (tmp_path / "fp32" / "model.pt").stat().st_size < 0.55
    assert half < full
    stored = torch.load(tmp_path / "fp16" / "model.pt", weights_only=True)
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}

    loaded = ckpt.load(str(tmp_path / "fp16"))
    assert loaded.config.run_name == "handwriting-bundled" and loaded.meta == ckpt.load(source).meta
    assert not (tmp_path / "fp16" / "worker-0.pt").exists()  # inference only: no optimiser or worker state
    model, _ = load_model(str(tmp_path / "fp16"))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # loading casts back to the model's dtype
    exact, rounded = _outputs(source), _outputs(str(tmp_path / "fp16"))
    assert not torch.equal(exact, rounded)  # the weights were rounded...
    torch.testing.assert_close(rounded, exact, rtol=1e-2, atol=1e-2)  # ... to float16 precision only
