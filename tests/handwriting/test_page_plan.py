"""How the endpoint cuts a /write request into engine jobs (`HandwritingHandler.page` / `.jobs`),
in-process with a tiny untrained synthesis checkpoint: lines, rows per job, seeds, candidates."""

from __future__ import annotations

import pytest

from seqgen.catalog import load_model
from seqgen.serve.errors import UnknownSymbols
from seqgen.serve.handlers import HandwritingHandler
from seqgen.serve.schemas import WriteBody
from tests.handwriting.tiny_models import tiny  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def handler(tiny):  # noqa: F811 - the fixture above
    _, synth, _, _ = tiny
    model, loaded = load_model(synth)
    return HandwritingHandler(model, loaded, synth)


def test_lines_rows_and_seeds(handler):
    page = handler.page(WriteBody(text="one two three four\n\nfive", wrap=10, seed=3, bias=[0.5, 1.0]), 3, 32)
    assert page.lines == ["one two", "three four", "", "five"] and page.written == [0, 1, 3]
    assert page.biases == [0.5, 1.0, 1.0] and page.candidates == 1
    ((numbers, job),) = handler.jobs(page, 32)
    assert numbers == [0, 1, 2] and len(job.rows) == 3 and job.per_row_prime
    assert [r.seed for r in job.rows] == [3, 4, 5] and [r.options for r in job.rows] == [0.5, 1.0, 1.0]


def test_more_rows_than_a_batch_go_in_turns_and_candidates_give_way(handler):
    page = handler.page(WriteBody(text="a\nb\nc\nd\ne", seed=0), 0, 2)
    assert [numbers for numbers, _ in handler.jobs(page, 2)] == [[0, 1], [2, 3], [4]]
    assert [r.seed for _, job in handler.jobs(page, 2) for r in job.rows] == [0, 1, 2, 3, 4]
    page = handler.page(WriteBody(text="a\nb\nc\nd\ne", seed=0, best_of=4), 0, 8)  # 5 lines x 4 > 8 rows
    assert page.candidates == 1
    page = handler.page(WriteBody(text="a\nb", seed=0, best_of=4), 0, 8)
    assert page.candidates == 4 and [r.seed for _, job in handler.jobs(page, 8) for r in job.rows] == list(range(8))


def test_refusals_name_the_problem(handler):
    with pytest.raises(UnknownSymbols) as e:
        handler.page(WriteBody(text="Zoo"), 0, 32)
    assert e.value.symbols == ["Z"]
    with pytest.raises(ValueError, match="at most 60"):
        handler.page(WriteBody(text="zoo", wrap=61), 0, 32)
    drawn = [[i, i % 7, int(i % 30 == 29)] for i in range(120)]
    with pytest.raises(UnknownSymbols):
        handler.page(WriteBody(text="zoo", prime={"text": "Zorro", "strokes": drawn}), 0, 32)
    page = handler.page(WriteBody(text="Zoo @ noon", unknown="substitute", prime={"text": "zorro", "strokes": drawn}), 0, 32)
    assert page.lines == ["zoo at noon"] and page.prime[1] == "zorro" and len(page.prime[0]) >= 120
