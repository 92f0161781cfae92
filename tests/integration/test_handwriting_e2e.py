"""Handwriting end to end through a real local Ray: IAM-OnDB forms -> Ray tasks -> Parquet shards ->
Ray Train (iam-synthesis.yaml, tiny) -> checkpoint -> load_model -> synthesize -> SVG."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqgen import config
from seqgen.handwriting.dataset import preprocess_handwriting
from seqgen.handwriting.iam import discover_forms
from seqgen.catalog import load_model
from seqgen.storage import Storage
from seqgen import checkpoint as ckpt
from seqgen.train.run import train

pytestmark = [pytest.mark.ray, pytest.mark.data]
CONFIG = Path(__file__).resolve().parents[2] / "seqgen" / "configs" / "iam-synthesis.yaml"


def test_preprocess_train_load_write(ray_session, shared_data, tmp_path):
    root = shared_data / "handwriting" / "iam-ondb"
    forms = [f.form_id for f in discover_forms(root) if f.transcription and f.lines][:3]
    storage = Storage.from_url(str(tmp_path / "store"))
    assert storage.shared_across_processes  # so preprocessing runs as Ray tasks
    m = preprocess_handwriting(storage, "iam-e2e", str(root), splits={"train": forms[:2], "valid": forms[2:]},
                               forms_per_task=1)
    assert len(m["splits"]["train"]["shards"]) == 2 and m["splits"]["valid"]["lines"] > 0

    cfg = config.load(CONFIG, ["run_name=hw-e2e", "dataset=iam-e2e", "model.hidden_size=16", "model.num_layers=1",
                               "model.mixture_components=3", "model.window_components=2", "train.max_steps=3",
                               "train.eval_every=3", "train.batch_size=4", "train.seq_len=400", "train.eval_tokens=4",
                               "train.max_minutes=0", "train.num_workers=0", "train.progress=false"])
    result = train(cfg, storage)
    assert ckpt.list_checkpoints(result.run_url)
    model, loaded = load_model(result.latest_checkpoint)
    (last,) = loaded.progress["evals"]
    assert last["step"] == 3 and last["valid_lines"] == 4 and last["valid_loss"] == last["valid_loss"]  # not NaN
    assert loaded.meta["kind"] == "handwriting_synthesis" and loaded.meta["offset_std"] == m["offset_std"]
    from seqgen.handwriting.render import strokes_svg
    from seqgen.handwriting.sampling import synthesize

    (line,) = synthesize(model, loaded.meta, ["hello"], bias=1.0, seed=0, max_points=200)
    assert line.offsets.shape[1] == 3 and 0 < len(line.offsets) <= 5 * 40
    svg = tmp_path / "hello.svg"
    svg.write_text(strokes_svg([line.offsets]))
    assert svg.read_text().startswith("<svg") and "<path" in svg.read_text()
