"""A handwritten page vs one line through the serving engine (the bundled synthesis model): the
latency of `POST /write`'s work for a 10-line paragraph (its lines the rows of one engine job)
against its first line alone, interleaved over repeats. The request goes through the endpoint's
own handler (`HandwritingHandler.page` / `.jobs`, `written_line`) and engine (`seqgen.serve.engine`)
in this process, without HTTP (which adds the same few ms to both).

    python benchmarks/bench_page.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from common import save
from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.serve.config import EngineConfig
from seqgen.serve.engine import Engine
from seqgen.serve.handlers import HandwritingHandler
from seqgen.serve.schemas import WriteBody

PARAGRAPH = ("The quick brown fox jumps over the lazy dog while a small bird sings on the old fence near the "
             "river. Nobody in the village could remember a summer as warm as this one, and the children spent "
             "every afternoon by the water, building boats out of bark and string and racing them downstream "
             "until the light was gone.")


async def write(handler: HandwritingHandler, engine: Engine, text: str, seed: int) -> tuple[float, int, int]:
    """(seconds, lines, points) for one /write of ``text`` (wrap 35), as the endpoint does it."""
    t0 = time.perf_counter()
    page = handler.page(WriteBody(text=text, wrap=35, seed=seed), seed, 32)
    points = 0
    for lines, job in handler.jobs(page, 32):
        ticket = engine.submit(job, 600)
        outputs = {i: [] for i in range(len(job.rows))}
        async for kind, payload in engine.events(ticket):
            if kind == "chunk":
                for i, p in payload.items():
                    outputs[i] += p
        for j, line in enumerate(lines):
            points += handler.written_line(page, line, [handler.points(outputs[j])])["points"]
    return time.perf_counter() - t0, len(page.written), points


async def main_async(a) -> dict:
    model, loaded = load_model(str(BUNDLED_HANDWRITING))
    handler = HandwritingHandler(model, loaded, str(BUNDLED_HANDWRITING))
    engine = Engine(handler.gen, EngineConfig(max_streams=32, max_queued=8))
    first_line = handler.page(WriteBody(text=PARAGRAPH, wrap=35), 0, 32).lines[0]
    page_s, line_s, shape = [], [], None
    try:
        await write(handler, engine, first_line, 99)  # warm-up
        for r in range(a.repeats):  # interleaved: drift on a shared box hits both alike
            s, n, pts = await write(handler, engine, PARAGRAPH, r)
            page_s.append(s)
            shape = (n, pts)
            s, _, one_pts = await write(handler, engine, first_line, r)
            line_s.append(s)
        stats = engine.snapshot()
    finally:
        engine.stop()
    return {"paragraph_chars": len(PARAGRAPH), "lines": shape[0], "page_points": shape[1], "line_points": one_pts,
            "page_s": statistics.median(page_s), "line_s": statistics.median(line_s),
            "page_vs_line": statistics.median(page_s) / statistics.median(line_s), "repeats": a.repeats,
            "page_runs_s": page_s, "line_runs_s": line_s, "max_batch_size_seen": stats["max_batch_size_seen"],
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    save("page", asyncio.run(main_async(a)))


if __name__ == "__main__":
    main()
