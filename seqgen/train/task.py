"""What the training loop (`seqgen.train.loop`) asks of a model kind's task: the contract between
the one explicit loop and the kinds' data, loss and evaluation (`seqgen.kinds` names each kind's
task class; `TextTask` and `HandwritingTask` implement it).

One task object lives in each Ray Train worker and owns that worker's share of the data (rank of
world). Per step the loop calls ``next_batch`` and ``loss``; every ``train.eval_every`` steps
``evaluate``; when it checkpoints, ``state_dict`` (restored by ``load_state_dict`` on resume, so a
resumed run draws exactly the batches the uninterrupted one would have).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from torch import nn


class Stats(Protocol):
    """Summed statistics of some steps or an evaluation: merge with ``+``, report with ``metrics``."""

    def __add__(self, other: "Stats") -> "Stats": ...

    def metrics(self, prefix: str, *args) -> dict: ...


class TrainingTask(Protocol):
    meta: dict  # what the model's inputs / outputs mean, saved as the checkpoint's meta.json
    epoch: int  # passes over this worker's training data so far (reported with the metrics)
    num_train_examples: int  # |S| of the training set in the loss's unit (adaptive weight noise, sec. 3.2)
    # optional: ``score_metric``, the evaluation metric keep-best and early stopping minimise
    # (default "valid_loss"; a recognizer's is "valid_cer")

    def __init__(self, cfg, storage, rank: int, world: int, device) -> None:
        """Open this worker's share (``rank`` of ``world``) of ``cfg.dataset`` on ``storage``."""

    def build_model(self) -> nn.Module:
        """The network, sized from the dataset (vocabulary, alphabet, offset statistics)."""

    def next_batch(self) -> Any:
        """The next training batch of this worker; advances the data cursor."""

    def loss(self, forward: Callable, model: nn.Module, batch: Any) -> tuple[Any, Stats]:
        """(scalar loss to backpropagate, its summed statistics). ``forward`` runs the model as
        trained (DDP, weight noise); ``model`` is the bare network (initial states, shapes)."""

    def evaluate(self, model: nn.Module) -> dict:
        """Validation metrics, reduced over all workers (every worker calls it)."""

    def state_dict(self) -> dict:
        """This worker's data cursor and carried state, for exact resume."""

    def load_state_dict(self, state: dict) -> None: ...
