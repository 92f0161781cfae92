"""The model kinds seqgen knows, in one table that the rest of the package consults.

A checkpoint's ``config.model.kind`` names one of them. Each kind says where its parts live, as
import strings resolved only when used (so this module imports nothing heavy and any layer may
import it):

    network    (ExperimentConfig, meta) -> nn.Module                    `seqgen.models.build_model`
    task       the training task (loss, data, evaluation)               `seqgen.train.loop`
    handler    the serving handler, or None when the kind is not served `seqgen.serve`
    exporter   (model, batch, text_len) -> its one-step module + example,   `seqgen.export`
               or None when the kind has no one-step function (a bidirectional reader)

Adding a kind is one entry here plus its modules: model building, training, serving and export
consult this table. The CLI still names kinds where a command exists for some of them only
(``score`` is for text, ``write`` for synthesis, ``sample`` draws text or strokes), and inside
the handwriting package prediction and synthesis share one network that tells them apart.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelKind:
    name: str
    network: str  # "module:function" building the network from (cfg, meta)
    task: str  # "module:Class" of the training task
    handler: str | None  # "module:Class" of the serving handler
    exporter: str | None  # "module:function" giving the one-step function to export
    description: str


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("text", "seqgen.models.text:build_text_model", "seqgen.train.text_task:TextTask",
              "seqgen.serve.handlers:TextHandler", "seqgen.export:text_step",
              "next-token text model (Graves sec. 3, char-rnn, WildML)"),
    ModelKind("handwriting_prediction", "seqgen.handwriting.models:build_handwriting_model",
              "seqgen.handwriting.task:HandwritingTask", None, "seqgen.export:prediction_step",
              "handwriting prediction network (sec. 4)"),
    ModelKind("handwriting_synthesis", "seqgen.handwriting.models:build_handwriting_model",
              "seqgen.handwriting.task:HandwritingTask", "seqgen.serve.handlers:HandwritingHandler",
              "seqgen.export:synthesis_step", "handwriting synthesis network with the soft window (sec. 5)"),
    ModelKind("handwriting_recognition", "seqgen.handwriting.recognizer:build_recognizer",
              "seqgen.handwriting.recognizer:RecognitionTask", None, None,
              "online handwriting recognizer: bidirectional LSTM + CTC (Graves et al. 2009), the legibility meter"),
)}


def get(name: str) -> ModelKind:
    """The kind called ``name``; ValueError naming the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r} (known: {', '.join(KINDS)})") from None


def resolve(ref: str):
    """``"package.module:attribute"`` -> the attribute (imports the module)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)
