"""The evaluation history beside a run: metrics.csv and a TensorBoard event file that TensorBoard's
record format reader accepts (lengths and CRC-32C checked here, events parsed with the protobuf)."""

from __future__ import annotations

import struct

import pytest
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from seqgen import config
from seqgen.data.presets import text_preset
from seqgen.data.text import preprocess_text
from seqgen.storage import Storage
from seqgen.train.curves import EVENTS_FILE, tensorboard_events
from seqgen.train.run import train


def read_events(data: bytes) -> list[Event]:
    """Parse a TFRecord file of Event protos, checking every length and data checksum."""
    events, i = [], 0
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked_crc32c(header), f"bad length CRC at {i}"
        body = data[i + 12:i + 12 + length]
        assert struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0] == masked_crc32c(body), f"bad CRC at {i}"
        events.append(Event.FromString(body))
        i += 16 + length
    return events


def scalars(events: list[Event]) -> dict[str, list[tuple[int, float]]]:
    out: dict = {}
    for e in events:
        for v in e.summary.value:
            out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def test_events_hold_every_numeric_metric_at_its_step():
    evals = [{"step": 2, "train_loss": 4.5, "valid_loss": 4.25, "wall_time": 100.0, "flag": True},
             {"step": 4, "train_loss": 3.5, "lr": 0.001, "wall_time": 101.5}]
    events = read_events(tensorboard_events(evals))
    assert events[0].file_version == "brain.Event:2"
    got = scalars(events)
    assert got["train_loss"] == [(2, 4.5), (4, 3.5)] and got["valid_loss"] == [(2, 4.25)]
    assert got["lr"] == [(4, pytest.approx(0.001))] and "flag" not in got and "wall_time" not in got
    assert [e.wall_time for e in events[1:]] == [100.0, 100.0, 101.5, 101.5]


@pytest.mark.ray
def test_a_run_writes_events_beside_metrics_csv(ray_session):
    st = Storage.from_url("memory://curves-run")
    preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)
    cfg = config.load(None, ["run_name=tb", "model.hidden_size=8", "train.batch_size=4", "train.seq_len=10",
                             "train.eval_tokens=200", "train.max_steps=6", "train.eval_every=2", "train.progress=false"])
    train(cfg, st)
    run_dir = st.run_dir("tb")
    assert st.exists(f"{run_dir}/metrics.csv")
    got = scalars(read_events(st.fs.cat_file(f"{run_dir}/{EVENTS_FILE}")))
    assert [s for s, _ in got["train_loss"]] == [2, 4, 6] and [s for s, _ in got["valid_loss"]] == [2, 4, 6]
    assert all(0 < v < 10 for _, v in got["valid_loss"])  # nats per char of a barely trained model
