"""``seqgen serve``: a checkpoint behind Ray Serve on HOST:PORT, until Ctrl-C."""

from __future__ import annotations

import os
from typing import Optional

import typer

from seqgen.cli.options import AddressOpt, StorageOpt
from seqgen.storage import Storage


def serve(
    checkpoint: Optional[str] = typer.Argument(None, help="Checkpoint directory URL, run directory, or run name "
                                                          "on storage (default: the bundled handwriting model)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="HTTP port."),
    replicas: int = typer.Option(1, help="Serve replicas (ignored with --autoscale)."),
    autoscale: Optional[str] = typer.Option(None, help="MIN:MAX replicas, scaled by Serve on ongoing requests."),
    max_streams: int = typer.Option(64, help="Rows one replica generates at once (its running batch)."),
    max_queued: int = typer.Option(64, help="Requests one replica lets wait; beyond them: 503 at once."),
    timeout: float = typer.Option(60.0, help="Default deadline of a request in seconds (504 past it)."),
    cpus: float = typer.Option(1.0, help="CPUs per replica."),
    gpus: float = typer.Option(0.0, help="GPUs per replica (the model goes on the GPU when it has one)."),
    ingress: str = typer.Option("proxy", help="What answers on HOST:PORT: 'proxy' (Serve's Python proxy) or "
                                              "'haproxy' (HAProxy in front of replicas that serve HTTP "
                                              "themselves: Serve's throughput-optimized mode, docs/serving.md). "
                                              "With --address, the cluster's nodes must have been started with it."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Serve /generate, /score (text) or /write (handwriting), and a page at /, with Ray Serve
    (blocks until Ctrl-C)."""
    from seqgen.catalog import bundled_handwriting, find_checkpoint
    from seqgen.runtime import ensure_ray
    from seqgen.serve import ingress as ingresses

    if ingress == "direct" or ingress not in ingresses.INGRESS:
        raise typer.BadParameter(f"{ingress!r}: use proxy or haproxy", param_hint="--ingress")
    if not (address or os.environ.get("RAY_ADDRESS")):
        ingresses.select(ingress)  # before the local Ray starts: every Ray process reads it at import
    from seqgen.serve.app import parse_autoscale, run

    st = Storage.from_url(storage)
    url = find_checkpoint(st, checkpoint) if checkpoint else bundled_handwriting()
    scaling = parse_autoscale(autoscale)
    ensure_ray(address)
    run(url, host=host, port=port, num_replicas=replicas, autoscale=scaling, max_streams=max_streams,
        max_queued=max_queued, timeout_s=timeout, num_cpus=cpus, num_gpus=gpus, storage=st.url)
