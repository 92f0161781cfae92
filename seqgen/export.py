"""Export a checkpoint's one-step function to TorchScript or ONNX, to run the sampler elsewhere.

The exported function is one step of the model's step protocol, with the recurrent state passed
in and out as a flat list of tensors (batch first, any batch size B):

    text                 (token (B,) int64, *state)               -> (logits (B, V), *state)
    handwriting pred.    (x (B, 3) float, *state)                  -> (yhat (B, 6M+1), *state)
    handwriting synth.   (x (B, 3), chars (B, U) int64, char_mask (B, U) float, *state)
                                                                   -> (yhat (B, 6M+1), phi (B, U+1), *state)

Start from zeros of the listed state shapes (``initial_state``: LSTM h and c, and for synthesis
kappa_0 = 0, w_0 = 0) and feed each step's state outputs back in. ``chars`` are the text's class
indices in the checkpoint's alphabet (0 = END / padding) and ``char_mask`` is 1 on real
characters, as in ``HandwritingModel.forward``; handwriting inputs are normalised offsets
(``offset_mean`` / ``offset_std``), yhat is eq. 17 before eqs. 18-22, and phi includes the dummy
position U+1 of the stop rule (sec. 5). Sampling (temperature, top-k, bias) is the caller's.

Every exported file carries ``seqgen.json`` (TorchScript extra file / ONNX metadata_props): the
input and output names, the state shapes, and the vocabulary or alphabet + offset statistics, so
it is self-describing. docs/export.md shows how to drive it.

Which ONNX exporter (measured with torch 2.13): the default ``dynamo=True`` one
(torch.export) needs ``onnxscript`` and took 2.5-10 s per model here; the TorchScript-based one
(``dynamo=False``, deprecated but shipped) took 0.04-0.3 s, needs only ``onnx``, and both gave the
same outputs (within 1e-6 of eager over 50 steps, every cell). We use ``dynamo=False``. When
torch drops it, `_export_onnx` needs ``dynamo=True, dynamic_shapes=(token_dims, tuple(state_dims))``
(the varargs state is one tuple there) and onnxscript in the ``export`` extra.
"""

from __future__ import annotations

import json

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

FORMATS = ("torchscript", "onnx")


class TextStep(nn.Module):
    def __init__(self, model, spec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, token: Tensor, *state: Tensor):
        logits, new = self.model(token[:, None], tree_unflatten(list(state), self.spec))
        return (logits[:, 0], *tree_flatten(new)[0])


class PredictionStep(nn.Module):
    def __init__(self, model, spec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: Tensor, *state: Tensor):
        from seqgen.handwriting.models import HandwritingState

        empty = x.new_zeros(x.shape[0], 0)  # the prediction network has no window: kappa and w are (B, 0)
        state = HandwritingState(tree_unflatten(list(state), self.spec), empty, empty)
        yhat, new = self.model(x[:, None], state)
        return (yhat[:, 0], *tree_flatten(new.layers)[0])


class SynthesisStep(nn.Module):
    def __init__(self, model, spec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: Tensor, chars: Tensor, char_mask: Tensor, *state: Tensor):
        yhat, new, phi = self.model(x[:, None], tree_unflatten(list(state), self.spec), chars, char_mask,
                                    return_phi=True)
        return (yhat[:, 0], phi[:, 0], *tree_flatten(new)[0])


def step_module(model, kind: str, batch: int = 2, text_len: int = 5):
    """(wrapper module, example inputs, input names, output names) of ``model``'s one-step function,
    built by the kind's exporter (`seqgen.kinds`)."""
    from seqgen import kinds

    exporter = kinds.get(kind).exporter
    if exporter is None:
        raise ValueError(f"a {kind} model has no one-step function to export (it reads whole sequences)")
    return kinds.resolve(exporter)(model.eval(), batch, text_len)


def _state_names(leaves: list) -> list[str]:
    return [f"state_{i}" for i in range(len(leaves))]


def text_step(model, batch: int, text_len: int):
    leaves, spec = tree_flatten(model.initial_state(batch))
    names = _state_names(leaves)
    return (TextStep(model, spec), (torch.zeros(batch, dtype=torch.long), *leaves),
            ["token", *names], ["logits", *[f"next_{n}" for n in names]])


def prediction_step(model, batch: int, text_len: int):
    leaves, spec = tree_flatten(model.initial_state(batch).layers)
    names = _state_names(leaves)
    return (PredictionStep(model, spec), (torch.zeros(batch, 3), *leaves),
            ["x", *names], ["yhat", *[f"next_{n}" for n in names]])


def synthesis_step(model, batch: int, text_len: int):
    leaves, spec = tree_flatten(model.initial_state(batch))
    names = _state_names(leaves)
    chars = torch.ones(batch, text_len, dtype=torch.long)
    return (SynthesisStep(model, spec), (torch.zeros(batch, 3), chars, torch.ones(batch, text_len), *leaves),
            ["x", "chars", "char_mask", *names], ["yhat", "phi", *[f"next_{n}" for n in names]])


def describe(meta: dict, kind: str, inputs: list[str], outputs: list[str], example: tuple) -> dict:
    """The ``seqgen.json`` carried by an exported file."""
    n_state = sum(n.startswith("state_") for n in inputs)
    info = {"format": 1, "kind": kind, "inputs": inputs, "outputs": outputs,
            "state_shapes": [["B", *t.shape[1:]] for t in example[len(example) - n_state:]]}
    for key in ("vocab", "alphabet", "offset_mean", "offset_std", "points_per_char", "ink_per_char", "pen_step"):
        if meta.get(key) is not None:
            info[key] = meta[key]
    return info


def export(model, meta: dict, kind: str, out: str, fmt: str = "torchscript") -> dict:
    """Write ``model``'s one-step function to ``out`` as ``fmt``; returns its ``seqgen.json``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (valid: {', '.join(FORMATS)})")
    step, example, inputs, outputs = step_module(model, kind)
    info = describe(meta, kind, inputs, outputs, example)
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(step, example, check_trace=False)
            torch.jit.save(traced, out, _extra_files={"seqgen.json": json.dumps(info)})
            return info
        _export_onnx(step, example, inputs, outputs, out)
    import onnx

    proto = onnx.load(out)
    proto.metadata_props.add(key="seqgen.json", value=json.dumps(info))
    onnx.save(proto, out)
    return info


def _export_onnx(step, example, inputs: list[str], outputs: list[str], out: str) -> None:
    import warnings

    axes = {"chars": {0: "batch", 1: "text"}, "char_mask": {0: "batch", 1: "text"}, "phi": {0: "batch", 1: "text+1"}}
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice and RNN batch-size hints
        warnings.simplefilter("ignore")
        torch.onnx.export(step, example, out, dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes={n: axes.get(n, {0: "batch"}) for n in inputs + outputs})
