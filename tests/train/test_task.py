"""Every kind's training task has the methods of the loop's contract (seqgen.train.task)."""

import inspect

import pytest

from seqgen import kinds
from seqgen.train.task import TrainingTask

METHODS = [name for name, _ in inspect.getmembers(TrainingTask, inspect.isfunction) if not name.startswith("_")]


@pytest.mark.parametrize("name", sorted(kinds.KINDS))
def test_task_implements_the_contract(name):
    task = kinds.resolve(kinds.get(name).task)
    assert METHODS == ["build_model", "evaluate", "load_state_dict", "loss", "next_batch", "state_dict"]
    for method in METHODS:
        ours = inspect.signature(getattr(TrainingTask, method)).parameters
        theirs = inspect.signature(getattr(task, method)).parameters
        assert list(theirs)[: len(ours)] == list(ours) or len(theirs) == len(ours), (task, method)
