"""seqgen.export: the exported one-step function (TorchScript always; ONNX through onnxruntime)
matches the model's own eager step over 50 steps, for every cell and model kind, at another batch
size and text length than it was traced with; docs/export.md's commands and programs run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_flatten
from typer.testing import CliRunner

from seqgen.config import ModelConfig
from seqgen.export import export
from seqgen.handwriting.models import HandwritingModel
from seqgen.models.text import TextModel

DOC = Path(__file__).parents[1] / "docs" / "export.md"
STEPS, B = 50, 3
FORMATS = ["torchscript", pytest.param("onnx", marks=pytest.mark.skipif(
    not all(map(__import__("importlib").util.find_spec, ["onnx", "onnxruntime"])), reason="needs onnx + onnxruntime"))]


def load_exported(path: str):
    """(callable step, seqgen.json) of an exported file, as another runtime would load it:
    ``step(*inputs) -> list of outputs`` (TorchScript via torch.jit.load, ONNX via onnxruntime)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":  # TorchScript archives are zip files
        files = {"seqgen.json": ""}
        module = torch.jit.load(path, _extra_files=files)

        def run(*args):
            with torch.no_grad():
                return [t.numpy() for t in module(*(torch.as_tensor(a) for a in args))]
        return run, json.loads(files["seqgen.json"])
    import onnx
    import onnxruntime as ort

    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return (lambda *args: session.run(None, {n: np.asarray(a) for n, a in zip(names, args)})), json.loads(meta["seqgen.json"])


def _flat(state) -> list[np.ndarray]:
    return [t.numpy() for t in tree_flatten(state)[0]]


def _close(a, b, tol=1e-5):
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= tol * max(1.0, np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cell, extra", [("lstm", {}), ("lstm", {"peephole": True, "deriv_clip": 10.0}),
                                         ("gru", {}), ("rnn", {}), ("scrn", {})])
def test_text_step_matches_eager(tmp_path, fmt, cell, extra):
    torch.manual_seed(0)
    model = TextModel(ModelConfig(cell=cell, hidden_size=16, num_layers=2, **extra), 11).eval()
    path = str(tmp_path / f"step.{fmt}")
    export(model, {}, "text", path, fmt)
    step, info = load_exported(path)
    assert info["inputs"][0] == "token" and len(info["state_shapes"]) == len(tree_flatten(model.initial_state(1))[0])
    state, flat = model.initial_state(B), _flat(model.initial_state(B))
    token = torch.tensor([1, 5, 9])
    for _ in range(STEPS):  # feed the eager model's own greedy choices to both
        with torch.no_grad():
            logits, state = model(token[:, None], state)
        logits_x, *flat = step(token.numpy(), *flat)
        _close(logits_x, logits[:, 0])
        for a, b in zip(flat, _flat(state)):
            _close(a, b)
        token = logits[:, 0].argmax(-1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind, extra", [("prediction", {}), ("prediction", {"peephole": True}),
                                         ("synthesis", {"deriv_clip": 10.0}), ("synthesis", {})])
def test_handwriting_step_matches_eager(tmp_path, fmt, kind, extra):
    torch.manual_seed(0)
    C = 6 if kind == "synthesis" else 0
    cfg = ModelConfig(kind=f"handwriting_{kind}", hidden_size=16, num_layers=2, mixture_components=3,
                      window_components=2, **extra)
    model = HandwritingModel(cfg, C).eval()
    path = str(tmp_path / f"step.{fmt}")
    meta = {"offset_mean": [1.0, 2.0], "offset_std": [3.0, 4.0]}
    info = export(model, meta, cfg.kind, path, fmt)
    assert info["kind"] == cfg.kind
    assert info["offset_std"] == [3.0, 4.0]
    step, _ = load_exported(path)
    gen = torch.Generator().manual_seed(1)
    chars = torch.randint(1, 6, (B, 7), generator=gen)  # traced with U = 5: other lengths work too
    chars[0, 4:] = 0  # a shorter, padded text in row 0
    mask = (chars != 0).float()
    state, x = model.initial_state(B), torch.zeros(B, 3)
    flat = _flat(state if model.synthesis else state.layers)
    for _ in range(STEPS):
        with torch.no_grad():
            if model.synthesis:
                yhat, state, phi = model(x[:, None], state, chars, mask, return_phi=True)
                yhat_x, phi_x, *flat = step(x.numpy(), chars.numpy(), mask.numpy(), *flat)
                _close(phi_x, phi[:, 0])
            else:
                yhat, state = model(x[:, None], state)
                yhat_x, *flat = step(x.numpy(), *flat)
        _close(yhat_x, yhat[:, 0])
        for a, b in zip(flat, _flat(state if model.synthesis else state.layers)):
            _close(a, b)
        x = torch.cat([torch.randn(B, 2, generator=gen), (torch.rand(B, 1, generator=gen) < 0.1).float()], 1)


def test_docs_commands_and_programs_run(tmp_path, monkeypatch):
    """Run docs/export.md as a user would: its `seqgen export` lines through the CLI on a storage
    holding a run of the name it uses, then each of its Python programs on the files they wrote."""
    pytest.importorskip("onnxruntime")
    from seqgen.cli import app
    from tiny_storage import new_storage, text_checkpoint, text_dataset

    doc = DOC.read_text()
    commands = [line for block in re.findall(r"```bash\n(.*?)```", doc, re.S) for line in block.splitlines() if line]
    programs = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(commands) == 2 and len(programs) == 2
    st = new_storage("export-doc")
    run = shlex.split(commands[0])[2]
    text_checkpoint(st, text_dataset(st, tmp_path), run=run)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        args = shlex.split(command)
        assert args[:2] == ["seqgen", "export"]
        result = CliRunner().invoke(app, [*args[1:], "--storage", st.url])
        assert result.exit_code == 0, result.output
    for program in programs:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(program, str(DOC), "exec"), {"__name__": "__main__"})
        assert out.getvalue().strip()
    assert os.path.exists("step.onnx") and os.path.exists("step.pt")
