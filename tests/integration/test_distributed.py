"""Real Ray workers: DDP training with two workers each reading its own share of the shards, and
the datasets readable by ray.data."""

from __future__ import annotations

import pytest
import torch

from seqgen import config
from seqgen.data.presets import text_preset
from seqgen.data.text import load_manifest, preprocess_text
from seqgen.storage import Storage
from seqgen import checkpoint as ckpt
from seqgen.train.run import train

pytestmark = pytest.mark.ray
OVERRIDES = ["run_name=ddp", "model.hidden_size=16", "train.batch_size=8", "train.seq_len=20", "train.eval_every=2",
             "train.eval_tokens=2000", "train.num_workers=2", "train.cpus_per_worker=1", "train.progress=false"]


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    st = Storage.from_url(str(tmp_path_factory.mktemp("dist")))
    preprocess_text(st, "shakespeare", text_preset("shakespeare"))  # through Ray tasks
    return st


def test_two_ddp_workers_train_and_checkpoint(store):
    result = train(config.load(None, [*OVERRIDES, "train.max_steps=4"]), store)
    workers = [ckpt.load(result.latest_checkpoint, with_trainer=True, rank=r) for r in (0, 1)]
    assert workers[0].progress["step"] == 4
    assert not any(k.startswith("module.") for k in workers[0].model_state)  # the bare model, not DDP's wrapper
    states = [w.trainer_state["worker"]["task"]["state"][0][0] for w in workers]
    assert states[0].shape == states[1].shape == (4, 16)  # each worker: batch_size / world streams
    assert not torch.equal(states[0], states[1])  # ... of its own share of the corpus

    # resuming with two workers continues from each worker's own cursor and carried state
    more = train(config.load(None, [*OVERRIDES, "train.max_steps=6"]), store)
    assert ckpt.load(more.latest_checkpoint).progress["step"] == 6


def test_dataset_is_readable_by_ray_data_and_pandas(store):
    import pandas as pd
    import ray.data

    manifest = load_manifest(store, "shakespeare")
    train_dir = f"{store.dataset_dir('shakespeare')}/{manifest['splits']['train']['shards'][0]['path'].split('/')[0]}/train"
    ds = ray.data.read_parquet(train_dir)
    assert sum(len(row["tokens"]) for row in ds.iter_rows()) == manifest["splits"]["train"]["tokens"]
    frame = pd.read_parquet(train_dir)
    assert frame["tokens"].map(len).sum() == manifest["splits"]["train"]["tokens"]
