"""The sampling endpoint under load: iteration-level (continuous) batching vs its limits and baselines.

Models: a 2 x 256 LSTM over the Tiny Shakespeare characters (random weights: speed does not depend
on them) and the bundled handwriting synthesis model (a soft-window LSTM). Served on 127.0.0.1
by ``seqgen.serve.app.build_app`` (one replica, 1 CPU); clients are asyncio + httpx in this
process. The baselines seqgen does not serve with (request-level batching, the engine in a replica
thread, direct ingress) are in ``serve_modes.py`` beside this file. Measured, in one run:

1. raw limit: the bare free-running loop (`seqgen.sampling.run`) stepping the model at batch 64,
   in this process with the replica's thread count, symbols/s (measured before and after the
   endpoint runs, averaged: the load on a shared machine drifts);
2. endpoint, ``--clients`` (64) concurrent streaming clients, closed loop for ``--duration`` s:
   symbols/s as a fraction of the raw limit; vs one request at a time; vs request-level batching
   (the same engine admitting a new batch only when the running one is done:
   ``serve_modes.request_level_engine``); vs the engine in a thread of the replica
   (``serve_modes.thread_engine``) instead of its own process; and
   with ``--long-length`` (2,000) symbols per request, where Serve's per-request cost is spread
   over ~7x the symbols; and, when ``wrk`` is installed (Debian: ``apt-get install wrk``), with
   ``wrk`` as the client (C, one thread: a client that costs almost no CPU);
3. mixed load, open loop (Poisson arrivals at ``--rate`` requests/s): 90% 50-symbol + 10%
   2,000-symbol requests; p50/p99 latency of the short ones vs a short-only run at the same rate,
   and time to first symbol p50/p99; continuous and request-level batching;
4. handwriting: 32 concurrent /write lines, lines/s vs one at a time and vs the raw batched loop.

With ``--ingress haproxy|direct`` (what answers HTTP: `seqgen.serve.ingress`; direct: each replica
on its own port with nothing in front, `serve_modes.select_direct_ingress`) or
``--closed-loops-only``: only the 64-client closed loops of 2 (httpx, ``wrk``, long requests), in
two rounds, every run bracketed by bare-loop runs and scored against their mean, into
``results/serve-<ingress>.json``. ``--openai`` adds, to each round, the same 64 streams through
OpenAI's ``/v1/completions`` with the ``openai`` package's async client (``max_tokens`` = length),
scored against the bare loop and against the ``/generate`` run of the same round, into
``results/serve-<ingress>-openai.json``.

    python benchmarks/bench_serve.py                   # ~9 minutes
    python benchmarks/bench_serve.py --ingress haproxy  # ~3 minutes: HAProxy instead of Serve's proxy
    python benchmarks/bench_serve.py --ingress direct   # ~3 minutes: nothing in front of the replica
    python benchmarks/bench_serve.py --closed-loops-only  # ~3 minutes: the proxy, as the two above
    python benchmarks/bench_serve.py --ingress haproxy --openai  # ~4 minutes: also /v1/completions
    python benchmarks/bench_serve.py --duration 10 --rate 8

Prints JSON and writes ``benchmarks/results/serve.json``. Absolute numbers are noisy on shared
machines: the ratios measured in one run are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402
from serve_modes import ENGINES, select_direct_ingress  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text_checkpoint(directory: str, hidden: int) -> str:
    import torch

    from seqgen import checkpoint as ckpt
    from seqgen import config
    from seqgen.data.tokenizers import Vocabulary, split_symbols
    from seqgen.models import build_model

    corpus = (Path(__file__).resolve().parents[1] / "seqgen" / "assets" / "tinyshakespeare.txt").read_bytes()
    vocab = Vocabulary.build("char", Counter(split_symbols("char", corpus)))
    cfg = config.load(None, ["run_name=bench-serve", f"model.hidden_size={hidden}", "model.num_layers=2"])
    meta = {"vocab": vocab.to_json(), "dataset": "shakespeare"}
    torch.manual_seed(0)
    url = f"{directory}/checkpoint_00000000"
    ckpt.save(url, cfg, meta, build_model(cfg, meta).state_dict(), {}, {"step": 0, "evals": []})
    return url


def raw_limit(checkpoint: str, rows: int, length: int, threads: int, kind: str, repeats: int = 5) -> tuple[float, float]:
    """(symbols or pen points per second, jobs per second) of the bare loop at ``rows`` rows: the
    median of ``repeats`` runs."""
    import torch

    from seqgen.catalog import load_model
    from seqgen.sampling import run

    torch.set_num_threads(threads)
    model, loaded = load_model(checkpoint)
    if kind == "text":
        from seqgen.data.tokenizers import Vocabulary
        from seqgen.text_sampling import TextGenerator

        gen = TextGenerator(model, Vocabulary.from_json(loaded.meta["vocab"]))
        make_jobs = lambda: [gen.job("", length, seed=i) for i in range(rows)]  # noqa: E731
    else:
        from seqgen.handwriting.sampling import HandwritingGenerator

        gen = HandwritingGenerator(model, loaded.meta)
        make_jobs = lambda: [gen.job(TEXT[: 20 + i % 10], 0.75, seed=i) for i in range(rows)]  # noqa: E731
    run(gen, make_jobs()[:1])  # warm-up
    rates = []
    for _ in range(repeats):  # the median of a few runs: one takes about a second, and the machine is shared
        jobs = make_jobs()
        t0 = time.perf_counter()
        run(gen, jobs)
        seconds = time.perf_counter() - t0
        rates.append((sum(r.drawn for j in jobs for r in j.rows) / seconds, len(jobs) / seconds))
    return sorted(rates)[len(rates) // 2]


class Client:
    """Streaming requests over one shared httpx.AsyncClient; records latency and time to first symbol."""

    def __init__(self, base: str):
        import httpx

        self.base = base
        self.arrivals: list[tuple[float, int]] = []  # (time.monotonic(), symbols) of every chunk received
        self.http = httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=512,
                                                                        max_keepalive_connections=512))

    async def generate(self, length: int, seed: int) -> dict:
        t0 = time.monotonic()
        first, symbols = None, 0
        body = {"length": length, "seed": seed, "stream": True, "temperature": 1.0, "timeout_s": 600}
        async with self.http.stream("POST", f"{self.base}/generate", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return {"status": r.status_code, "latency": time.monotonic() - t0}
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "chunk":
                    if first is None:
                        first = time.monotonic() - t0
                    n = len(json.loads(line[6:])["text"])
                    symbols += n
                    self.arrivals.append((time.monotonic(), n))
        return {"status": 200, "latency": time.monotonic() - t0, "ttft": first, "symbols": symbols,
                "length": length, "done": time.monotonic()}

    async def write(self, text: str, seed: int) -> dict:
        t0 = time.monotonic()
        r = await self.http.post(f"{self.base}/write", json={"text": text, "bias": 0.75, "seed": seed, "timeout_s": 600})
        return {"status": r.status_code, "latency": time.monotonic() - t0,
                "points": r.json().get("points", 0) if r.status_code == 200 else 0}

    async def close(self):
        await self.http.aclose()


class OpenAIClient(Client):
    """The same streaming requests through OpenAI's completions API and the ``openai`` package's
    async client (on this client's httpx connection pool)."""

    def __init__(self, base: str):
        import openai

        super().__init__(base)
        self.openai = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=600,
                                         http_client=self.http)
        self.model: str | None = None

    async def generate(self, length: int, seed: int) -> dict:
        import openai

        if self.model is None:
            self.model = (await self.openai.models.list()).data[0].id
        t0 = time.monotonic()
        first, symbols = None, 0
        try:
            stream = await self.openai.completions.create(model=self.model, prompt="", max_tokens=length, seed=seed,
                                                          temperature=1.0, stream=True)
            async for chunk in stream:
                n = sum(len(c.text) for c in chunk.choices)
                if n:
                    if first is None:
                        first = time.monotonic() - t0
                    symbols += n
                    self.arrivals.append((time.monotonic(), n))
        except openai.APIStatusError as e:
            return {"status": e.status_code, "latency": time.monotonic() - t0}
        return {"status": 200, "latency": time.monotonic() - t0, "ttft": first, "symbols": symbols,
                "length": length, "done": time.monotonic()}


async def closed_loop(client: Client, clients: int, length: int, duration: float) -> dict:
    """``clients`` workers each send their next request when the last is answered, for ``duration``
    s. Throughput counts the symbols that arrived within that window: after it the clients stop
    sending and the batch drains, which would otherwise weigh on long requests most."""
    t_start = time.monotonic()
    t_end = t_start + duration
    client.arrivals = []
    results: list[dict] = []

    async def worker(w: int):
        i = 0
        while time.monotonic() < t_end:
            results.append(await client.generate(length, seed=w * 100_000 + i))
            i += 1

    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = max(r.get("done", t_start) for r in results) - t_start
    ok = [r for r in results if r["status"] == 200]
    in_window = sum(n for t, n in client.arrivals if t <= t_end)
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok),
            "symbols_per_s": in_window / duration, "wall_s": round(wall, 2),
            "ttft_p50_s": percentile([r["ttft"] for r in ok], 50), "latency_p50_s": percentile([r["latency"] for r in ok], 50)}


async def open_loop(client: Client, rate: float, duration: float, long_share: float, seed: int = 0) -> dict:
    """Poisson arrivals at ``rate``/s; a share ``long_share`` of 2,000-symbol requests, the rest 50."""
    rng = random.Random(seed)
    tasks, t = [], 0.0
    t0 = time.monotonic()
    i = 0
    while t < duration:
        t += rng.expovariate(rate)
        length = 2000 if rng.random() < long_share else 50
        await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
        tasks.append(asyncio.create_task(client.generate(length, seed=i)))
        i += 1
    results = await asyncio.gather(*tasks)
    short = [r for r in results if r["status"] == 200 and r["length"] == 50]
    long = [r for r in results if r["status"] == 200 and r["length"] == 2000]
    return {"rate": rate, "requests": len(results), "errors": sum(r["status"] != 200 for r in results),
            "short_p50_s": percentile([r["latency"] for r in short], 50),
            "short_p99_s": percentile([r["latency"] for r in short], 99),
            "ttft_p50_s": percentile([r["ttft"] for r in short + long], 50),
            "ttft_p99_s": percentile([r["ttft"] for r in short + long], 99),
            "long_p50_s": percentile([r["latency"] for r in long], 50)}


WRK_SCRIPT = """
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{"length": %d, "seed": %d, "stream": true, "timeout_s": 600}', LENGTH, n)
  return wrk.format("POST", wrk.path, wrk.headers, body)
end
"""


def wrk_closed_loop(base: str, clients: int, length: int, duration: float) -> dict | None:
    """The closed loop again with ``wrk`` (C, one thread) as the client, when it is installed: a
    client that costs almost no CPU. Every request streams ``length`` symbols (a non-2xx is counted)."""
    import re
    import shutil
    import subprocess

    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(WRK_SCRIPT.replace("LENGTH", str(length)))
        f.flush()
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{duration:.0f}s", "--timeout", "60s", "-s", f.name,
                              f"{base}/generate"], capture_output=True, text=True, check=True).stdout
    requests_, seconds = re.search(r"(\d+) requests in ([\d.]+)s", out).groups()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    ok = int(requests_) - (int(errors.group(1)) if errors else 0)
    return {"clients": clients, "requests": int(requests_), "errors": int(requests_) - ok,
            "symbols_per_s": ok * length / float(seconds)}


def deploy(checkpoint: str, name: str, engine: str = "process", **settings) -> str:
    """Run one app (``engine``: a key of `serve_modes.ENGINES`; ``settings``: ServeConfig's); its
    base URL: on Serve's proxy, or with direct ingress on the port its replica took from Serve's
    range (it serves HTTP itself)."""
    import requests
    from ray import serve

    from seqgen.serve.app import build_app

    serve.run(build_app(checkpoint, num_cpus=1, make_engine=ENGINES[engine], **settings), name=name,
              route_prefix=f"/{name}")
    if INGRESS == "direct":
        from ray.serve._private.constants import RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT as first
        candidates = [f"http://127.0.0.1:{port}/{name}" for port in range(first, first + 16)]
    else:
        candidates = [f"http://127.0.0.1:{PORT}/{name}"]
    for _ in range(300):
        for base in candidates:
            try:
                if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                    return base
            except requests.RequestException:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"{candidates[0]} did not come up")


PORT = 0
INGRESS = "proxy"  # what answers HTTP (seqgen.serve.ingress)


async def ingress_runs(ckpt: str, args, rounds: int = 2) -> dict:
    """The 64-client closed loops with ``--ingress``: ``--length`` symbols per request (httpx
    clients, and ``wrk``) and ``--long-length``. Each run is bracketed by bare-loop runs and scored
    against their mean, since on a shared machine the raw speed drifts by 10-30% within minutes;
    ``rounds`` rounds of the three, the median ratio of each kind reported."""
    from ray import serve

    base = deploy(ckpt, f"text-{INGRESS}", max_streams=64, max_queued=256)
    client = Client(base)
    await closed_loop(client, 8, 50, 3)  # warm-up
    kinds = {"concurrent": lambda: closed_loop(client, args.clients, args.length, args.duration),
             "concurrent_long": lambda: closed_loop(client, args.clients, args.long_length, args.duration),
             "concurrent_wrk": lambda: _async(wrk_closed_loop, base, args.clients, args.length, args.duration)}
    if args.openai:
        oai = OpenAIClient(base)
        await closed_loop(oai, 8, 50, 3)  # warm-up
        kinds["concurrent_openai"] = lambda: closed_loop(oai, args.clients, args.length, args.duration)
    raws = [raw_limit(ckpt, 64, args.length, 1, "text")[0]]
    runs: dict[str, list] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind, measure in kinds.items():
            result = await measure()
            raws.append(raw_limit(ckpt, 64, args.length, 1, "text")[0])
            if result:  # None: no wrk here
                result["vs_raw"] = round(result["symbols_per_s"] / ((raws[-2] + raws[-1]) / 2), 3)
                runs[kind].append(result)
    await client.close()
    serve.delete(f"text-{INGRESS}")
    out = {"base_url": base, "raw_limit_runs": [round(r) for r in raws]}
    for kind, results in runs.items():
        out[kind] = results
        out[f"{kind}_vs_raw"] = statistics.median(r["vs_raw"] for r in results) if results else None
    if args.openai:  # each round's /v1/completions run against its /generate run
        out["openai_vs_generate"] = [round(o["symbols_per_s"] / g["symbols_per_s"], 3)
                                     for o, g in zip(runs["concurrent_openai"], runs["concurrent"])]
    return out


async def _async(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def main() -> None:
    global PORT
    from seqgen.serve import ingress  # imports no Ray: the mode is chosen before Ray starts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--length", type=int, default=300, help="symbols per request in the closed-loop runs")
    p.add_argument("--long-length", type=int, default=2000, help="symbols per request in the long closed-loop run")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per closed / open loop run")
    p.add_argument("--rate", type=float, default=8.0, help="requests/s of the mixed-load runs")
    p.add_argument("--ingress", choices=(*ingress.INGRESS, "direct"), default="proxy",
                   help="what answers HTTP (seqgen.serve.ingress). haproxy / direct: Serve's throughput-optimized "
                        "mode, each replica serving HTTP itself, behind HAProxy / with nothing in front; only the "
                        "64-client runs, into results/serve-<ingress>.json")
    p.add_argument("--openai", action="store_true",
                   help="also the 64 streams through /v1/completions with the openai package's async client")
    p.add_argument("--closed-loops-only", action="store_true",
                   help="only the 64-client runs (as with --ingress haproxy), also for the proxy: "
                        "into results/serve-proxy.json")
    args = p.parse_args()
    global INGRESS
    INGRESS = args.ingress
    # before Ray and Serve are imported, here and in every Ray process
    select_direct_ingress() if INGRESS == "direct" else ingress.select(INGRESS)

    import requests
    from ray import serve

    from seqgen.catalog import BUNDLED_HANDWRITING
    from seqgen.runtime import apply_local_env, ensure_ray

    apply_local_env()
    ensure_ray()
    PORT = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    out: dict = {"model": f"2 x {args.hidden_size} LSTM, char vocabulary", "replica_cpus": 1}
    if INGRESS != "proxy" or args.closed_loops_only:
        out["ingress"] = INGRESS
        with tempfile.TemporaryDirectory() as tmp:
            out["text"] = asyncio.run(ingress_runs(text_checkpoint(tmp, args.hidden_size), args))
        serve.shutdown()
        save(f"serve-{INGRESS}" + ("-openai" if args.openai else ""), out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = text_checkpoint(tmp, args.hidden_size)

        async def text_runs() -> dict:
            res = {}
            # (batching, where the replica runs its engine): seqgen's way, the engine in a thread of the
            # replica (sharing its GIL with the event loop), and request-level batching
            for mode, engine in (("continuous", "process"), ("continuous", "thread"), ("request", "process")):
                name = f"text-{mode}-{engine}"
                base = deploy(ckpt, name, engine="request-level" if mode == "request" else engine, max_streams=64,
                              max_queued=256)
                threads = requests.get(f"{base}/info", timeout=30).json()["torch_threads"]
                client = Client(base)
                await closed_loop(client, 8, 50, 3)  # warm-up
                r = {"concurrent": await closed_loop(client, args.clients, args.length, args.duration)}
                if engine == "process":
                    if mode == "continuous":
                        r["one_at_a_time"] = await closed_loop(client, 1, args.length, args.duration)
                        # the same clients with requests ~7x longer: HTTP costs per request, the model per symbol
                        r["concurrent_long"] = await closed_loop(client, args.clients, args.long_length, args.duration)
                        r["concurrent_wrk"] = wrk_closed_loop(base, args.clients, args.length, args.duration)
                    r["mixed"] = await open_loop(client, args.rate, args.duration, long_share=0.1)
                    r["short_only"] = await open_loop(client, args.rate, args.duration, long_share=0.0)
                await client.close()
                serve.delete(name)
                res[name] = r
            res["threads"] = threads
            return res

        raw_before, _ = raw_limit(ckpt, 64, args.length, 1, "text")  # bracket the endpoint runs: load drifts
        text = asyncio.run(text_runs())
        raw_after, _ = raw_limit(ckpt, 64, args.length, text["threads"], "text")
        raw = (raw_before + raw_after) / 2
        c, t, r = text["text-continuous-process"], text["text-continuous-thread"], text["text-request-process"]
        out["text"] = {
            "raw_limit_batch64_symbols_per_s": round(raw),
            "raw_limit_before_after": [round(raw_before), round(raw_after)],
            "endpoint": c["concurrent"], "one_at_a_time": c["one_at_a_time"], "request_level": r["concurrent"],
            "engine_in_replica_thread": t["concurrent"], "endpoint_long_requests": c["concurrent_long"],
            "endpoint_vs_raw": round(c["concurrent"]["symbols_per_s"] / raw, 3),
            "engine_in_replica_thread_vs_raw": round(t["concurrent"]["symbols_per_s"] / raw, 3),
            "endpoint_long_requests_vs_raw": round(c["concurrent_long"]["symbols_per_s"] / raw, 3),
            "endpoint_wrk_client": c["concurrent_wrk"],
            "endpoint_wrk_client_vs_raw": (round(c["concurrent_wrk"]["symbols_per_s"] / raw, 3)
                                           if c["concurrent_wrk"] else None),
            "endpoint_vs_one_at_a_time": round(c["concurrent"]["symbols_per_s"] / c["one_at_a_time"]["symbols_per_s"], 2),
            "request_level_vs_raw": round(r["concurrent"]["symbols_per_s"] / raw, 3),
            "mixed_continuous": c["mixed"], "short_only_continuous": c["short_only"],
            "mixed_request_level": r["mixed"], "short_only_request_level": r["short_only"],
            "short_p50_mixed_vs_short_only": round(c["mixed"]["short_p50_s"] / c["short_only"]["short_p50_s"], 2),
            "short_p99_mixed_vs_short_only": round(c["mixed"]["short_p99_s"] / c["short_only"]["short_p99_s"], 2),
            "request_level_short_p99_mixed_vs_short_only":
                round(r["mixed"]["short_p99_s"] / r["short_only"]["short_p99_s"], 2),
        }

    async def handwriting() -> dict:
        base = deploy(str(BUNDLED_HANDWRITING), "hw", max_streams=64)
        client = Client(base)
        texts = [TEXT[: 20 + i % 10] for i in range(32)]
        await client.write(texts[0], 0)  # warm-up
        t0 = time.monotonic()
        together = await asyncio.gather(*(client.write(t, i) for i, t in enumerate(texts)))
        concurrent_s = time.monotonic() - t0
        t0 = time.monotonic()
        for i, t in enumerate(texts[:8]):
            await client.write(t, i)
        one_s = (time.monotonic() - t0) / 8
        threads = requests.get(f"{base}/info", timeout=30).json()["torch_threads"]
        await client.close()
        serve.delete("hw")
        assert all(r["status"] == 200 for r in together)
        return {"lines_per_s_32_concurrent": 32 / concurrent_s, "lines_per_s_one_at_a_time": 1 / one_s,
                "points_per_s_32_concurrent": sum(r["points"] for r in together) / concurrent_s, "threads": threads}

    hw = asyncio.run(handwriting())
    raw_points, raw_lines = raw_limit(str(BUNDLED_HANDWRITING), 32, 0, hw["threads"], "handwriting")
    out["handwriting"] = {**hw, "raw_batched_lines_per_s": raw_lines, "raw_batched_points_per_s": raw_points,
                          "concurrent_vs_one_at_a_time": round(hw["lines_per_s_32_concurrent"] / hw["lines_per_s_one_at_a_time"], 2),
                          "concurrent_vs_raw": round(hw["lines_per_s_32_concurrent"] / raw_lines, 3)}
    serve.shutdown()
    save("serve", out)


if __name__ == "__main__":
    main()
