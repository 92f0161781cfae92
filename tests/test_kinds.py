"""The table of model kinds: every entry resolves, and unknown names are a clear error."""

import pytest
from torch import nn

from seqgen import kinds


@pytest.mark.parametrize("name", sorted(kinds.KINDS))
def test_every_kind_resolves(name):
    kind = kinds.get(name)
    assert callable(kinds.resolve(kind.network)) and isinstance(kinds.resolve(kind.task), type)
    if kind.exporter is not None:  # None: no one-step function (a bidirectional reader)
        assert callable(kinds.resolve(kind.exporter))
    if kind.handler is not None:
        assert hasattr(kinds.resolve(kind.handler), "capabilities")


def test_build_model_consults_the_table():
    from seqgen import config
    from seqgen.handwriting.iam import full_alphabet
    from seqgen.models import build_model

    text = config.load(None, ["model.hidden_size=8"])
    assert isinstance(build_model(text, {"vocab": {"symbols": list("abc")}}), nn.Module)
    hw = config.load(None, ["model.kind=handwriting_synthesis", "model.hidden_size=8", "model.num_layers=1"])
    net = build_model(hw, {"alphabet": full_alphabet(["ab"]).to_json(), "offset_mean": [0, 0], "offset_std": [1, 1]})
    assert net.synthesis
    with pytest.raises(ValueError, match=r"unknown model kind 'music' \(known: text, handwriting_prediction"):
        kinds.get("music")
