"""The request bodies' JSON schemas state their limits in JSON Schema's own words (what clients and
schemathesis read), and validation agrees with them at the edges."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from seqgen.serve.schemas import MAX_SEED, GenerateBody, ScoreBody, WriteBody


@pytest.mark.parametrize("body", [GenerateBody, ScoreBody, WriteBody])
def test_limits_are_json_schema_keywords(body):
    text = json.dumps(body.model_json_schema())
    for pydantic_only in ('"ge"', '"le"', '"gt"', '"lt"'):  # JSON Schema says minimum / maximum
        assert pydantic_only not in text, (body.__name__, text)


@pytest.mark.parametrize("body", [GenerateBody, ScoreBody, WriteBody])
def test_every_default_is_a_value_of_its_field(body):
    """A stray comma once made a default the tuple ``(Field(...),)``: truthy, so every /write
    rasterised a PNG nobody asked for. Pydantic warns when a default cannot be put in the schema."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        body.model_json_schema()
    assert WriteBody(text="a").png is False


def test_seed_edges():
    seed = GenerateBody.model_json_schema()["properties"]["seed"]["anyOf"][0]
    assert seed == {"type": "integer", "minimum": 0, "maximum": MAX_SEED}
    assert GenerateBody.model_validate({"seed": MAX_SEED}).seed == MAX_SEED
    assert GenerateBody.model_validate({"seed": 3.0}).seed == 3  # JSON Schema: 3.0 is an integer
    for bad in (-1, MAX_SEED + 1, 2.5, True, "3"):
        with pytest.raises(ValidationError):
            GenerateBody.model_validate({"seed": bad})
