"""The evaluation history beside a run: ``metrics.csv``, a PNG of the learning curves and a
TensorBoard event file (``tensorboard --logdir <storage>`` shows every run and Tune trial).

All three are rewritten from the whole history at every evaluation, never appended to: the
history travels in the checkpoint, so after a resume (a re-run, or Ray Train restarting the
workers) they hold each evaluation exactly once, in order.
"""

from __future__ import annotations

import csv
import io
import struct

from seqgen.storage import Storage, join


def write_curves(storage: Storage, run_name: str, evals: list[dict], plot: bool = True) -> None:
    """metrics.csv always; curves.png when ``plot`` (plotting costs ~0.1-1 s, so the loop
    redraws it at most every half minute and at the end)."""
    if not evals:
        return
    run_dir = storage.run_dir(run_name)
    keys = sorted({k for e in evals for k in e})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(evals)
    storage.write_bytes_atomic(join(run_dir, "metrics.csv"), buf.getvalue().encode())
    storage.write_bytes_atomic(join(run_dir, EVENTS_FILE), tensorboard_events(evals))
    if plot:
        storage.write_bytes_atomic(join(run_dir, "curves.png"), _plot(run_name, evals))


#: TensorBoard reads files whose name contains "tfevents"; one fixed name, replaced as it grows.
EVENTS_FILE = "events.out.tfevents.seqgen"


def tensorboard_events(evals: list[dict]) -> bytes:
    """A TensorBoard event file: every numeric metric of every evaluation as a scalar at its step.

    The file is a sequence of TFRecords (length, masked CRC-32C of the length, an ``Event``
    protobuf, masked CRC-32C of it); tensorboardX provides the protobuf and the checksum."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c
    from tensorboardX.summary import scalar

    def record(event) -> bytes:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))

    start = evals[0].get("wall_time", 0.0)
    out = [record(Event(wall_time=start, file_version="brain.Event:2"))]
    for e in evals:
        for key, value in e.items():
            if key not in ("step", "wall_time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(record(Event(wall_time=e.get("wall_time", start), step=int(e["step"]),
                                        summary=scalar(key, float(value)))))
    return b"".join(out)


def _plot(title: str, evals: list[dict]) -> bytes:
    steps = [e["step"] for e in evals]
    curves = [(key.replace("_", " "), [(s, e[key]) for s, e in zip(steps, evals) if key in e])
              for key in ("train_loss", "valid_loss")]
    return curves_png(title, curves, "loss (bits/token; handwriting: nats/line)")


def curves_png(title: str, curves: list[tuple[str, list[tuple[int, float]]]], ylabel: str,
               marker_step: int | None = None) -> bytes:
    """One line per (label, [(step, value), ...]) (a run's losses, a search's trials); a dotted
    vertical line at ``marker_step`` (where a staged search's stage 2 starts from stage 1's best)."""
    # a Figure of its own, not pyplot's: no global figure state, and pyplot's backend machinery
    # (~0.3 s to import in every training process) is not needed to write a PNG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.subplots()
    for label, points in curves:
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    if marker_step is not None:
        ax.axvline(marker_step, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(points for _, points in curves):
        ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()
