"""Run the server: uvicorn on the app of :func:`create_app`, graceful on SIGINT/SIGTERM."""

from __future__ import annotations

from typing import Any

from .config import ServeConfig

__all__ = ["create_app", "serve"]


def _require() -> None:
    missing = []
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("multipart", "python-multipart"),
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


def serve(cfg: ServeConfig, *, log_level: str = "info") -> None:
    """Serve until interrupted; on SIGINT/SIGTERM uvicorn stops accepting, finishes the requests in flight
    (the batcher drains its queue), then exits."""
    app = create_app(cfg)
    import uvicorn

    print(f"resnetlab serve: {cfg.checkpoint} on http://{cfg.host}:{cfg.port}/ (page), /docs (API), /metrics; "
          f"batches up to {cfg.max_batch} within {cfg.max_wait_ms:g} ms", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=max(30.0, cfg.timeout_s), lifespan="on")
