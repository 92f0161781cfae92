"""What a deployment per model behind an ingress deployment would cost: the DeploymentHandle hop.

Serving several models "the Serve way" puts each model in a deployment of its own and routes to it
from an ingress deployment through a DeploymentHandle, streaming the model's chunks back with
``handle.options(stream=True)``. seqgen instead holds every model's engine in one deployment
(docs/serving.md, "Several models behind one URL"). This measures the difference in isolation:
the same ingress replica streams the same chunks over HTTP, either made in the replica itself
(``/direct``, seqgen's path) or made by a second deployment and streamed through a handle
(``/via``). No model runs, so the numbers are the hop's own cost per request and per chunk.

    python benchmarks/bench_model_hop.py [--requests 400] [--concurrency 16] [--chunks 10]

Prints requests/s and mean / p50 / p95 latency of each route, and their ratio (one run, one
machine: compare the routes with each other, not with other runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from ray import serve  # noqa: E402

api = FastAPI()


def chunks(n: int, size: int):
    for i in range(n):
        yield f"{i:04d}" + "x" * size + "\n"


@serve.deployment(ray_actor_options={"num_cpus": 0})
class ModelDeployment:
    """Stands for a model's deployment: streams its chunks to whoever holds its handle."""

    async def stream(self, n: int, size: int):
        for chunk in chunks(n, size):
            yield chunk
            await asyncio.sleep(0)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    def __init__(self, model):
        self.model = model

    @api.get("/direct")
    async def direct(self, n: int = 10, size: int = 40):
        async def gen():
            for chunk in chunks(n, size):
                yield chunk
                await asyncio.sleep(0)

        return StreamingResponse(gen(), media_type="text/plain")

    @api.get("/via")
    async def via(self, n: int = 10, size: int = 40):
        async def gen():
            async for chunk in self.model.options(stream=True).stream.remote(n, size):
                yield chunk

        return StreamingResponse(gen(), media_type="text/plain")


async def load(url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    import httpx

    latencies: list[float] = []
    queue = list(range(requests))
    async with httpx.AsyncClient(timeout=120) as client:
        async def worker():
            while queue:
                queue.pop()
                t0 = time.perf_counter()
                async with client.stream("GET", url) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    assert r.status_code == 200
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per route and round")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    parser.add_argument("--chunks", type=int, default=10, help="chunks streamed per request")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per route (noise on a busy box)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (127.0.0.1)")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Ingress.bind(ModelDeployment.bind()), name="hop", route_prefix="/")
    base = f"http://127.0.0.1:{args.port}"
    results: dict[str, list] = {"direct": [], "via": []}
    asyncio.run(load(f"{base}/via?n={args.chunks}", 32, 4))  # warm both paths
    asyncio.run(load(f"{base}/direct?n={args.chunks}", 32, 4))
    for _ in range(args.rounds):
        for route in results:
            results[route].append(asyncio.run(load(f"{base}/{route}?n={args.chunks}", args.requests,
                                                   args.concurrency)))
    rate = {}
    for route, runs in results.items():
        lat = sorted(x for _, lats in runs for x in lats)
        rate[route] = sum(len(lats) for _, lats in runs) / sum(wall for wall, _ in runs)
        print(f"{route:7s} {rate[route]:7.1f} req/s   latency mean {1e3 * statistics.mean(lat):6.1f} ms  "
              f"p50 {1e3 * lat[len(lat) // 2]:6.1f} ms  p95 {1e3 * lat[int(len(lat) * 0.95)]:6.1f} ms")
    print(f"via / direct throughput: {rate['via'] / rate['direct']:.2f}x "
          f"({args.chunks} chunks per request, {args.concurrency} in flight)")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
