"""The datasets are readable by ray.data (and pandas), through a real local Ray.

Training with two DDP workers, each reading its own share of the shards, and resuming them from a
checkpoint is tested where it already runs: tests/integration/test_cluster.py (a worker per node,
the checkpoint's per-worker state checked there), tests/train/test_recovery.py and
tests/train/test_regularizers.py (on the local Ray).
"""

from __future__ import annotations

import pytest

from seqgen.data.presets import text_preset
from seqgen.data.text import load_manifest, preprocess_text
from seqgen.storage import Storage

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    st = Storage.from_url(str(tmp_path_factory.mktemp("dist")))
    preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)  # here: the reading is tested
    return st


def test_dataset_is_readable_by_ray_data_and_pandas(store):
    import pandas as pd
    import ray.data

    manifest = load_manifest(store, "shakespeare")
    train_dir = f"{store.dataset_dir('shakespeare')}/{manifest['splits']['train']['shards'][0]['path'].split('/')[0]}/train"
    ds = ray.data.read_parquet(train_dir)
    assert sum(len(row["tokens"]) for row in ds.iter_rows()) == manifest["splits"]["train"]["tokens"]
    frame = pd.read_parquet(train_dir)
    assert frame["tokens"].map(len).sum() == manifest["splits"]["train"]["tokens"]
