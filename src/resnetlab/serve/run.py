"""Run the server: uvicorn on the app of :func:`create_app`, graceful on SIGINT/SIGTERM."""

from __future__ import annotations

from typing import Any

from .config import ServeConfig, field_parser

__all__ = ["create_app", "serve", "from_env", "config_from_env"]

ENV_PREFIX = "RESNETLAB_SERVE_"


def _require() -> None:
    missing = []
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"),
                            ("prometheus_client", "prometheus-client")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ImportError(f"resnetlab serve needs {', '.join(missing)}: pip install 'resnetlab[serve]'")


def create_app(cfg: ServeConfig, served: Any = None) -> Any:
    """The ASGI app for ``cfg`` (see :mod:`resnetlab.serve.app`)."""
    _require()
    from .app import create_app as build

    return build(cfg, served)


def config_from_env(environ: dict[str, str] | None = None) -> ServeConfig:
    """A :class:`ServeConfig` from ``RESNETLAB_SERVE_<FIELD>`` variables (``RESNETLAB_SERVE_CHECKPOINT`` is
    required), for process managers that import an app rather than run a command."""
    import dataclasses
    import os

    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ServeConfig):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        try:
            values[f.name] = field_parser(f)(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {f.type}") from None
    if "checkpoint" not in values:
        raise ValueError(f"set {ENV_PREFIX}CHECKPOINT to the checkpoint or artefact to serve")
    return ServeConfig(**values)


def from_env() -> Any:
    """The app configured by the environment: ``RESNETLAB_SERVE_CHECKPOINT=run uvicorn --factory
    resnetlab.serve:from_env --workers 4`` runs four worker processes, each with its own model and batcher."""
    return create_app(config_from_env())


def serve(cfg: ServeConfig, *, log_level: str = "info") -> None:
    """Serve until interrupted; on SIGINT/SIGTERM uvicorn stops accepting, finishes the requests in flight
    (the batcher drains its queue), then exits."""
    app = create_app(cfg)
    import uvicorn

    print(f"resnetlab serve: {cfg.checkpoint} on http://{cfg.host}:{cfg.port}/ (page), /docs (API), /metrics; "
          f"batches up to {cfg.max_batch} within {cfg.max_wait_ms:g} ms", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=max(30.0, cfg.timeout_s), lifespan="on")
