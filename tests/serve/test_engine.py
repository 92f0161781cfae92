"""The continuous-batching engine on tiny random models, run both ways a replica can run it: in a
thread (`Engine`) and in a child process (`EngineProcess`): equal outputs alone / batched / joining
mid-batch, short requests not held back, cancellation, deadlines, back-pressure, a numerical
fault confined to its request, chunked priming and scoring; the one capacity check both make; and
what only the process has: a dead engine fails its requests and reports itself, a failed start
names why. Also the request-level baseline the benchmark compares with (benchmarks/serve_modes.py)."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from seqgen.config import ModelConfig
from seqgen.data.tokenizers import Vocabulary
from seqgen.handwriting.iam import END, Alphabet
from seqgen.handwriting.models import HandwritingModel
from seqgen.handwriting.sampling import HandwritingGenerator, synthesize
from seqgen.models.text import TextModel
from seqgen.serve.config import EngineConfig
from seqgen.serve.engine import DeadlineExceeded, Engine, EngineDown, Overloaded, StreamFailed, admit
from seqgen.serve.engine_process import EngineProcess
from seqgen.text_sampling import TextGenerator, generate, score_text
from tests.tiny_text import tiny_text_model, tiny_vocab


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return tiny_vocab()


@pytest.fixture(scope="module")
def model(vocab) -> TextModel:
    return tiny_text_model(vocab, seed=0)


@pytest.fixture
def gen(model, vocab):
    return TextGenerator(model, vocab)


@pytest.fixture(params=["thread", "process"])
def make_engine(request):
    """A factory of engines of one kind, in a thread or in a child process, from `EngineConfig`
    settings; every engine it made is stopped after the test."""
    made = []

    def make(gen, engine_class=Engine, **settings):
        config = EngineConfig(**settings)
        made.append(engine_class(gen, config) if request.param == "thread"
                    else EngineProcess(gen, config, engine_class=engine_class))
        return made[-1]

    yield make
    for engine in made:
        engine.stop()


class Poisoned(TextGenerator):
    """Rows with seed 666 get NaN logits (module level: the engine process unpickles it)."""

    def step(self, x, state, context):
        logits, aux, state = super().step(x, state, context)
        bad = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)  # padded rows (MIN_BATCH) too
        bad[: len(self._rows)] = torch.tensor([r.seed == 666 for r in self._rows])
        return torch.where(bad[:, None], torch.nan, logits), aux, state

    def options(self, rows):
        self._rows = rows
        return super().options(rows)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


async def collect(engine: Engine, ticket) -> dict:
    """All outputs per row, and the final event."""
    rows: dict[int, list] = {}
    async for kind, payload in engine.events(ticket):
        if kind == "chunk":
            for i, values in payload.items():
                rows.setdefault(i, []).extend(values)
        else:
            return {"rows": rows, "done": payload}


def texts(gen, result) -> list[str]:
    return [gen.vocab.decode(result["rows"][i]) for i in sorted(result["rows"])]


def test_outputs_equal_alone_batched_and_joining_mid_batch(gen, model, vocab, make_engine):
    specs = [("the ", 60, 0.9, 0, 11, 1), ("", 25, 1.3, 5, 12, 2), ("THE", 40, 0.0, 0, 13, 1), ("q", 90, 0.5, 3, 14, 1)]
    alone = [generate(model, vocab, *spec) for spec in specs]

    async def main():
        engine = make_engine(gen, max_streams=8, flush_interval_s=0)
        first = [engine.submit(gen.job(*s), 30) for s in specs[:2]]
        await asyncio.sleep(0.05)  # the first two are running when the others join
        later = [engine.submit(gen.job(*s), 30) for s in specs[2:]]
        results = [await collect(engine, t) for t in first + later]
        return results, engine.snapshot()

    results, stats = run(main())
    assert [texts(gen, r) for r in results] == alone
    assert stats["max_batch_size_seen"] >= 2 and stats["requests"]["completed"] == 4


# In the engine's own thread only: nothing of it crosses the process boundary that the tests
# around it do not send, and the same race through a deployment's engine process, over HTTP, is
# tests/serve/test_scaling.py's.
@pytest.mark.parametrize("make_engine", ["thread"], indirect=True)
def test_short_request_joining_a_long_one_finishes_first(gen, make_engine):
    async def main():
        engine = make_engine(gen, max_streams=4, flush_interval_s=0)
        order = []

        async def one(name, length):
            ticket = engine.submit(gen.job("", length, seed=1), 60)
            await collect(engine, ticket)
            order.append(name)

        long = asyncio.create_task(one("long", 3000))
        await asyncio.sleep(0.1)
        await one("short", 20)
        still_running = not long.done()
        await long
        return order, still_running

    order, still_running = run(main())
    assert order == ["short", "long"] and still_running


def test_cancel_frees_the_slot_at_the_next_step(gen, make_engine):
    async def main():
        engine = make_engine(gen, max_streams=2)
        ticket = engine.submit(gen.job("", 5000, seed=1), 60)
        events = engine.events(ticket)
        await events.__anext__()  # running
        await events.aclose()  # the client went away
        for _ in range(100):
            await asyncio.sleep(0.02)
            if engine.snapshot()["running_rows"] == 0:
                break
        stats = engine.snapshot()
        return stats

    stats = run(main())
    assert stats["running_rows"] == 0 and stats["requests"]["cancelled"] == 1
    assert stats["symbols_generated"] < 5000


def test_deadline_and_overload(gen, make_engine):
    async def main():
        engine = make_engine(gen, max_streams=1, max_queued=1)
        running = engine.submit(gen.job("", 100_000, seed=1), 0.3)
        while engine.snapshot()["running_rows"] == 0:  # admitted: the queue is empty again
            await asyncio.sleep(0.001)
        waiting = engine.submit(gen.job("", 10, seed=2), 0.2)
        with pytest.raises(Overloaded) as refused:
            engine.submit(gen.job("", 10, seed=3), 30)
        outcomes = []
        for ticket in (running, waiting):
            try:
                await collect(engine, ticket)
                outcomes.append("done")
            except DeadlineExceeded:
                outcomes.append("deadline")
        return refused.value, outcomes, engine.snapshot()

    refused, outcomes, stats = run(main())
    assert refused.retry_after >= 1
    assert outcomes == ["deadline", "deadline"]
    assert stats["requests"]["rejected"] == 1 and stats["requests"]["expired"] == 2


def test_a_numerical_fault_ends_its_own_request_only(gen, model, vocab, make_engine):
    """A row whose model outputs turn NaN fails alone; its batch-mates are exactly as without it."""

    poisoned = Poisoned(model, vocab)
    specs = [("the", 50, 1.0, 0, s, 1) for s in range(8)]

    async def main():
        engine = make_engine(poisoned, max_streams=16)
        tickets = [engine.submit(poisoned.job(*s), 30) for s in specs]
        bad = engine.submit(poisoned.job("x", 50, 1.0, 0, 666, 1), 30)
        results = [await collect(engine, t) for t in tickets]
        with pytest.raises(StreamFailed, match="not finite"):
            await collect(engine, bad)
        return results

    results = run(main())
    assert [texts(poisoned, r) for r in results] == [generate(model, vocab, *s) for s in specs]


def test_chunked_priming_and_scoring_equal_one_pass(gen, model, vocab, make_engine):
    prompt = ("the quick brown fox jumps over the lazy dog. " * 6)[:250]

    async def main():
        engine = make_engine(gen, max_streams=4, prefill_chunk=16)
        a = engine.submit(gen.job(prompt, 30, 0.7, 0, 5, 1), 30)
        b = engine.submit(gen.score_job(prompt), 30)
        c = engine.submit(gen.job(prompt[:37], 30, 0.7, 0, 6, 1), 30)  # a remainder chunk of another length
        results = [await collect(engine, t) for t in (a, b, c)]
        return results

    gen_a, scored, gen_c = run(main())
    assert texts(gen, gen_a) == generate(model, vocab, prompt, 30, 0.7, 0, 5)
    assert texts(gen, gen_c) == generate(model, vocab, prompt[:37], 30, 0.7, 0, 6)
    expected = score_text(model, vocab, prompt)
    assert scored["done"]["tokens"] == expected["tokens"]
    assert scored["done"]["log_prob"] == pytest.approx(expected["log_prob"], rel=1e-5)


def test_handwriting_rows_equal_synthesize_alone(make_engine):
    alphabet = Alphabet([END, *"abcdef "])
    meta = {"alphabet": alphabet.to_json(), "offset_mean": [0.5, -0.2], "offset_std": [2.0, 3.0]}
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, num_layers=2, mixture_components=3, window_components=2)
    m = HandwritingModel(cfg, len(alphabet)).eval()
    with torch.no_grad():
        m.window.weight.zero_()
        m.window.bias.zero_()
        m.window.bias[2 * m.K :] = math.log(0.4)
    hw = HandwritingGenerator(m, meta)
    texts_ = ["abc", "fed cba", "a"]

    async def main():
        engine = make_engine(hw, max_streams=4, flush_interval_s=0)
        first = engine.submit(hw.job(texts_[0], 0.3, 10), 30)
        await asyncio.sleep(0.02)
        rest = [engine.submit(hw.job(t, 0.3, 10 + i), 30) for i, t in enumerate(texts_[1:], 1)]
        out = [await collect(engine, t) for t in [first, *rest]]
        return out

    for i, (text, result) in enumerate(zip(texts_, run(main()))):
        (alone,) = synthesize(m, meta, [text], bias=0.3, seed=10 + i)
        got = torch.stack(result["rows"][0])
        from seqgen.handwriting.sampling import denormalise

        torch.testing.assert_close(torch.as_tensor(denormalise(got, meta)), torch.as_tensor(alone.offsets))


def test_request_level_batching_holds_a_short_request_back(gen, make_engine):
    """The benchmark's baseline: a request that arrives while a batch runs waits for all of it."""
    from benchmarks.serve_modes import RequestLevelEngine

    async def main():
        engine = make_engine(gen, RequestLevelEngine, max_streams=4)
        order = []

        async def one(name, length):
            await collect(engine, engine.submit(gen.job("", length, seed=1), 60))
            order.append(name)

        long = asyncio.create_task(one("long", 1500))
        while engine.snapshot()["running_rows"] == 0:  # the long one runs (not a guess at how soon)
            await asyncio.sleep(0.001)
        await one("short", 20)
        await long
        return order

    assert run(main()) == ["long", "short"]


def test_a_dead_engine_process_fails_its_requests_and_reports_itself(gen):
    engine = EngineProcess(gen, EngineConfig(max_streams=2))

    async def main():
        ticket = engine.submit(gen.job("", 100_000, seed=1), 60)
        events = engine.events(ticket)
        await events.__anext__()  # running
        engine._proc.kill()  # the child dies mid-request (OOM killer, a crash in a kernel)
        with pytest.raises(StreamFailed, match="engine process exited"):
            async for _ in events:
                pass
        with pytest.raises(EngineDown, match="engine is down"):
            engine.submit(gen.job("", 5, seed=2), 60)

    run(main())
    assert not engine.alive()


def test_the_engine_process_exits_when_its_replica_is_gone():
    """A replica killed with SIGKILL cannot stop its engine: the engine reads EOF and exits."""
    import subprocess
    import sys

    import psutil

    replica = subprocess.Popen([sys.executable, "-c", """
import torch
from collections import Counter
from seqgen.config import ModelConfig
from seqgen.data.tokenizers import Vocabulary, split_symbols
from seqgen.models.text import TextModel
from seqgen.serve.engine_process import EngineProcess
from seqgen.text_sampling import TextGenerator
vocab = Vocabulary.build("char", Counter(split_symbols("char", b"abc ")))
engine = EngineProcess(TextGenerator(TextModel(ModelConfig(hidden_size=8), len(vocab)).eval(), vocab))
print(engine._proc.pid, flush=True)
input()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(replica.stdout.readline()))
        assert child.is_running()
        replica.kill()
        replica.wait(timeout=30)
        child.wait(timeout=30)  # raises psutil.TimeoutExpired if the engine outlives its replica
    finally:
        replica.kill()


class Unstartable(Engine):
    """An engine that fails in its process (module level: the engine process imports it)."""

    def __init__(self, gen, config):
        raise OSError("no engine can start here")


def test_an_engine_process_that_cannot_start_says_why(gen):
    with pytest.raises(RuntimeError, match="failed to start(.|\n)*OSError: no engine can start here"):
        EngineProcess(gen, engine_class=Unstartable)


def test_the_capacity_check():
    """`admit`, made by the engine's queue and by the replica in front of an engine process: too
    many samples are the client's error; a full queue is refused with a wait that follows the
    completion rate (1-60 s)."""
    config = EngineConfig(max_streams=4, max_queued=2)
    admit(config, samples=4, waiting=1, completed=0, elapsed_s=1.0)
    with pytest.raises(ValueError, match="5 samples in one request exceed this server's 4 streams"):
        admit(config, samples=5, waiting=0, completed=0, elapsed_s=1.0)
    waits = []
    for completed in (0, 1, 10, 1000):  # requests done in 10 s
        with pytest.raises(Overloaded, match=r"at capacity \(4 streams running, 2 requests waiting\)") as e:
            admit(config, samples=1, waiting=2, completed=completed, elapsed_s=10.0)
        waits.append(e.value.retry_after)
    assert waits == [1.0, 20.0, 2.0, 1.0]
