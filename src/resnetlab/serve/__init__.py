"""``resnetlab serve``: a small, safe HTTP server for one model, with dynamic batching, limits that answer in
4xx and never 500, Prometheus metrics, and a page to try the model (``GET /``).

    >>> from resnetlab.serve import ServeConfig, create_app, serve
    >>> serve(ServeConfig(checkpoint="runs/cifar10-resnet18-fast"))   # blocks; Ctrl-C stops gracefully

It imports no training code. Needs ``pip install resnetlab[serve]`` (FastAPI, uvicorn, python-multipart,
prometheus-client).
"""

from .config import ServeConfig
from .run import config_from_env, create_app, from_env, serve

__all__ = ["ServeConfig", "create_app", "serve", "from_env", "config_from_env"]
