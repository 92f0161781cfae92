"""``seqgen runs``, ``seqgen inspect`` and ``seqgen export``: what runs are on storage, what a
checkpoint holds, and its one-step function for other runtimes."""

from __future__ import annotations

import json
from typing import Optional

import typer

from seqgen.cli.options import CheckpointArg, JsonOpt, StorageOpt, load_model
from seqgen.cli.tables import num, table
from seqgen.storage import Storage


def runs(storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt):
    """List the training runs on storage: kind, steps, best metric, checkpoints, last update."""
    from dataclasses import asdict

    from seqgen.catalog import list_runs

    st = Storage.from_url(storage)
    found = list_runs(st)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in found], indent=2))
        return
    rows = [[r.name, r.kind or "?", f"{r.steps}/{r.max_steps}" if r.max_steps else str(r.steps),
             f"{r.best_metric} {num(r.best)}" + (f" @ {r.best_step}" if r.best_step else "") if r.best_metric else "",
             str(r.checkpoints), r.updated] for r in found]
    table(f"runs on {st.url}", ["name", "kind", "steps", "best", "checkpoints", "updated"], rows)


def inspect(checkpoint: str = CheckpointArg, storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt):
    """What a checkpoint holds: kind, step, metrics, parameters, dataset, vocabulary or alphabet,
    file sizes and the config it was trained with."""
    from seqgen.catalog import find_checkpoint, inspect_checkpoint

    info = inspect_checkpoint(find_checkpoint(Storage.from_url(storage), checkpoint))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    best = info["best"]
    rows = [["checkpoint", info["checkpoint"]], ["kind", info["kind"]], ["run", info["run_name"]],
            ["dataset", info["dataset"]], ["step", str(info["step"])], ["parameters", f"{info['parameters']:,}"],
            ["best", f"{best['metric']} {num(best['value'])} at step {best['step']}" if best["metric"] else ""],
            ["last evaluation", "  ".join(f"{k}={num(v)}" for k, v in info["metrics"].items())],
            ["resumable", "yes" if info["resumable"] else "no (inference only)"]]
    if "vocabulary" in info:
        v = info["vocabulary"]
        k = 80 if v["kind"] == "char" else 30
        shown = "".join(v["symbols"][:k]) if v["kind"] == "char" else " ".join(map(str, v["symbols"][:k]))
        rows.append(["vocabulary", f"{v['size']} {v['kind']} symbols: {shown!r}" + (" ..." if v["size"] > k else "")])
    if "alphabet" in info:
        a = info["alphabet"]
        rows.append(["alphabet", f"{a['size']} classes (END + {a['chars']!r})"])
    rows.append(["files", ", ".join(f"{k} {v:,} B" for k, v in info["files"].items()) + f" (total {info['total_bytes']:,} B)"])
    rows += [[f"config {section}", "  ".join(f"{k}={v}" for k, v in values.items())] if isinstance(values, dict)
             else [f"config {section}", str(values)] for section, values in info["config"].items()]
    table(f"checkpoint {checkpoint}", ["", ""], rows)


def export(
    checkpoint: str = CheckpointArg,
    format: str = typer.Option("torchscript", "--format", help="torchscript | onnx."),
    out: str = typer.Option(..., "--out", help="Output file (e.g. model.pt or model.onnx)."),
    storage: Optional[str] = StorageOpt,
    as_json: bool = JsonOpt,
):
    """Export the model's one-step function (state in, state out) to TorchScript or ONNX, to run
    the sampler elsewhere (docs/export.md)."""
    from seqgen.export import export as run_export

    model, loaded = load_model(checkpoint, storage)
    info = run_export(model, loaded.meta, loaded.config.model.kind, out, format)
    summary = {"out": out, "format": format, "kind": loaded.config.model.kind, "inputs": info["inputs"],
               "outputs": info["outputs"], "state_shapes": info["state_shapes"]}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {out} ({format}; inputs: {', '.join(info['inputs'])}; outputs: {', '.join(info['outputs'])})")
