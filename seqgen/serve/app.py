"""The Serve application of one or several checkpoints: `build_app` for Python callers (the CLI's runner,
tests, benchmarks), `app_builder` for Serve config files (``import_path:
seqgen.serve.app:app_builder``, kept at this path by deploy/serve.yaml and the RayService).

Both take the settings of `seqgen.serve.config.ServeConfig`; the deployment is
`seqgen.serve.server.SeqgenServer`, and `seqgen.serve.runner.run` starts Serve with it.
"""

from __future__ import annotations

import os
from typing import Any

from seqgen.serve.api_keys import ApiKeys
from seqgen.serve.config import ServeConfig
from seqgen.serve.server import EngineFactory, Loader, SeqgenServer


def build_app(checkpoint_urls: str | list[str], config: ServeConfig | None = None, *, storage: str | None = None,
              loader: Loader | None = None, make_engine: EngineFactory | None = None, api_keys: ApiKeys = ApiKeys(),
              **settings: Any):
    """The Serve application for one checkpoint or a list of them (served side by side; a request
    picks one with ``model``, the first of each kind being the default): ``config``, or the `ServeConfig` of ``settings``
    given by name (``max_streams=8, num_cpus=0``).

    ``loader`` (checkpoint URL -> (model, LoadedCheckpoint); default `catalog.load_model`) and
    ``make_engine`` (`server.EngineFactory`; default: the engine in a child process) run inside
    each replica, so they must be picklable. ``api_keys`` (digests only) are the keys requests
    must carry (none: no key needed).
    """
    if config is not None and settings:
        raise ValueError(f"give either a ServeConfig or settings by name, not both ({', '.join(settings)})")
    config = config if config is not None else ServeConfig.of(**settings)
    return SeqgenServer.options(**config.deployment_options()).bind(
        checkpoint_urls, config, storage=storage, loader=loader, make_engine=make_engine, api_keys=api_keys)


def app_builder(args: dict):
    """Serve application builder for config files that need only the installed package:
    ``args:`` {checkpoint or checkpoints, storage, api_key_file, and any `ServeConfig` setting, e.g. max_streams,
    num_cpus, autoscale ("MIN:MAX")}; values may be strings. API keys: those of ``api_key_file``
    and of ``$SEQGEN_API_KEYS`` (e.g. from a Kubernetes Secret) where the app is built.

    ``checkpoint`` (else ``$SEQGEN_CHECKPOINT``) is a checkpoint directory, a run directory (its
    best checkpoint), a run name under ``storage`` (else ``$SEQGEN_STORAGE``) or ``bundled:NAME``;
    ``checkpoints`` a list of them (or one string, comma-separated: an environment variable's),
    all served by the app (`build_app`)."""
    from seqgen.catalog import find_checkpoint
    from seqgen.storage import Storage

    args = dict(args)
    one, several = args.pop("checkpoint", None), args.pop("checkpoints", None)
    if one and several:
        raise ValueError("give args.checkpoint or args.checkpoints, not both")
    refs = checkpoint_list(one or several or os.environ.get("SEQGEN_CHECKPOINT"))
    storage = args.pop("storage", None) or os.environ.get("SEQGEN_STORAGE")
    key_file = args.pop("api_key_file", None) or None
    if not refs:
        raise ValueError("no checkpoint: pass args.checkpoint (or args.checkpoints) or set SEQGEN_CHECKPOINT")
    config = ServeConfig.of(**args)  # before the checkpoint is looked for: a typo is the first thing to hear of
    st = Storage.from_url(storage)
    return build_app([find_checkpoint(st, ref) for ref in refs], config, storage=st.url,
                     api_keys=ApiKeys.load(key_file))


def checkpoint_list(refs: str | list | None) -> list[str]:
    """Checkpoint references as a list: a list as is, a string split at commas (one reference, or
    several from an environment variable such as ``$SEQGEN_CHECKPOINT``)."""
    if not refs:
        return []
    items = refs if isinstance(refs, list) else str(refs).split(",")
    return [str(r).strip() for r in items if str(r).strip()]
