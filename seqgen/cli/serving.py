"""``seqgen serve``: checkpoints behind Ray Serve on HOST:PORT, until Ctrl-C.

The engine and deployment settings are those of `seqgen.serve.config.ServeConfig`, whose defaults
and descriptions the options show."""

from __future__ import annotations

import enum
import ipaddress
import os
from typing import List, Optional

import typer

from seqgen.cli.options import AddressOpt, StorageOpt
from seqgen.serve.config import ServeConfig
from seqgen.serve.ingress import AUTO, INGRESS
from seqgen.storage import Storage

DEFAULTS = ServeConfig()
#: what a fresh install serves: the page's handwriting, /generate's and /v1/completions' text
DEFAULT_MODELS = ["bundled:handwriting", "bundled:shakespeare"]
Ingress = enum.Enum("Ingress", {mode: mode for mode in (AUTO, *INGRESS)}, type=str)


def _setting(name: str, option: Optional[str] = None):
    """An option for ServeConfig's setting ``name``, with its default and description."""
    field = ServeConfig.model_fields[name]
    return typer.Option(getattr(DEFAULTS, name), *([option] if option else []),
                        help=field.description[0].upper() + field.description[1:] + ".")


def serve(
    checkpoints: Optional[List[str]] = typer.Argument(
        None, help="Checkpoints to serve side by side (a request picks one with 'model', default the first of its "
                   "kind): checkpoint directory URLs, run directories, run names on storage, or bundled models. "
                   "None: both bundled models, bundled:handwriting and bundled:shakespeare (text)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="HTTP port."),
    replicas: int = _setting("num_replicas", "--replicas"),
    autoscale: Optional[str] = typer.Option(None, help="MIN:MAX replicas, scaled by Serve on ongoing requests."),
    max_streams: int = _setting("max_streams"),
    max_queued: int = _setting("max_queued"),
    timeout: float = _setting("timeout_s", "--timeout"),
    max_length: int = _setting("max_length"),
    cpus: float = _setting("num_cpus", "--cpus"),
    gpus: float = _setting("num_gpus", "--gpus"),
    api_key_file: Optional[str] = typer.Option(None, help="File of API keys, one per line: every route but /healthz "
                                                          "and the page then needs 'Authorization: Bearer KEY'. "
                                                          "Keys in $SEQGEN_API_KEYS count too."),
    log_format: str = _setting("log_format"),
    ingress: Ingress = typer.Option(AUTO, help="What answers on HOST:PORT: 'haproxy' (HAProxy in front of replicas "
                                               "that serve HTTP themselves: Serve's throughput-optimized mode, "
                                               "docs/serving.md), 'proxy' (Serve's Python proxy), or 'auto': haproxy "
                                               "when it can run here, else proxy. With --address, the cluster's nodes "
                                               "decide (they must have been started with the mode)."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Serve /generate, /score, /v1/completions (text), /write (handwriting), and a page at /, with
    Ray Serve (blocks until Ctrl-C)."""
    from seqgen.catalog import find_checkpoint
    from seqgen.serve import ingress as ingresses
    from seqgen.serve.api_keys import ApiKeys

    config = ServeConfig.of(num_replicas=replicas, autoscale=autoscale, max_streams=max_streams,
                            max_queued=max_queued, timeout_s=timeout, max_length=max_length, num_cpus=cpus, num_gpus=gpus,
                            log_format=log_format)
    keys = ApiKeys.load(api_key_file)
    if not keys.required and not _loopback(host):
        typer.echo(f"warning: serving on {host} without API keys: anyone who can reach it can use it "
                   "(--api-key-file or $SEQGEN_API_KEYS)", err=True)
    st = Storage.from_url(storage)
    refs = checkpoints or DEFAULT_MODELS
    urls = [find_checkpoint(st, ref) for ref in refs]
    if not (address or os.environ.get("RAY_ADDRESS")):
        mode, why = ingresses.resolve(ingress.value)
        if why:
            typer.echo(why, err=True)
        ingresses.select(mode)  # before the local Ray starts: every Ray process reads it at import
    from seqgen.serve.runner import run

    run(urls, config, host=host, port=port, storage=st.url, api_keys=keys, address=address)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
