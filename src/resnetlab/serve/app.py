"""The HTTP app: ``create_app(ServeConfig(...))`` -> a FastAPI application.

Routes (versioned): ``POST /v1/predict``, ``POST /v1/explain`` (PyTorch checkpoints only), ``GET /v1/model``,
``GET /healthz`` (alive), ``GET /readyz`` (loaded and warmed up), ``GET /metrics`` (Prometheus), ``GET /``
(the page) and ``/docs`` (OpenAPI). The model loads in the background, so the process answers ``/healthz`` at
once and ``/readyz`` when it can serve. Nothing here imports training code.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .batching import Batcher
from .config import ServeConfig
from .errors import ServeError, error_body
from .limits import BodyLimits
from .metrics import CONTENT_TYPE, ServeMetrics
from .model import ServedModel
from .uploads import read_images

__all__ = ["create_app"]

STATIC = Path(__file__).with_name("static")
ROUTES = ("/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/docs",
          "/openapi.json")


def create_app(cfg: ServeConfig, served: ServedModel | None = None) -> Any:
    """The server for ``cfg`` as an ASGI app (its FastAPI application is ``.app``: add routes there);
    ``served`` (an already loaded model) skips loading it."""
    state: dict[str, Any] = {"served": served, "error": None}
    batcher = Batcher(lambda x: state["served"].logits(x), max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                      max_queue=cfg.max_queue)
    metrics = ServeMetrics(cfg.max_batch, lambda: batcher.depth)
    batcher.on_batch = metrics.on_batch
    decoders = ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="resnetlab-decode")

    async def load() -> None:
        try:
            if state["served"] is None:
                state["served"] = await asyncio.to_thread(ServedModel.load, cfg)
            await asyncio.to_thread(state["served"].warm_up, cfg.max_batch)
            await batcher.start()
        except Exception as e:  # noqa: BLE001 - reported by /readyz and the log, the process stays up
            state["error"] = f"{type(e).__name__}: {e}"
            print(f"resnetlab serve: cannot load {cfg.checkpoint}: {state['error']}", flush=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = asyncio.create_task(load())
        yield
        await task
        await batcher.stop()  # after uvicorn has finished the requests in flight
        decoders.shutdown(wait=True)

    app = FastAPI(title="resnetlab serve", version="1", lifespan=lifespan,
                  description="Image classification with a resnetlab model: dynamic batching, limits, metrics.")
    _add_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state["served"] is not None and batcher.running:
            return JSONResponse({"status": "ready", "model": state["served"].name})
        why = state["error"] or "loading"
        return JSONResponse(error_body(503, "not_ready", why), status_code=503, headers={"Retry-After": "2"})

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return _served(state, batcher).info(cfg)

    @app.post("/v1/predict")
    async def predict(request: Request, topk: int | None = Query(None, ge=1, description="classes per image")):
        served, t0 = _served(state, batcher), time.perf_counter()
        k = min(topk or cfg.topk, len(served.classes))
        files = await read_images(request, cfg)
        loop = asyncio.get_running_loop()
        batcher.incoming(len(files))  # the batcher may wait for these while they decode
        try:
            inputs = await asyncio.gather(*(loop.run_in_executor(decoders, served.decode, data, name,
                                                                 cfg.max_pixels) for name, data in files))
        finally:
            batcher.incoming(-len(files))
        t1 = time.perf_counter()
        answers = await batcher.submit(inputs)
        probs = served.probs(np.stack([a[0] for a in answers]))
        preds = [{"filename": name, **served.describe(row, k)} for (name, _), row in zip(files, probs)]
        infos = [a[1] for a in answers]
        timing = {"decode": 1000 * (t1 - t0), "queue": max(i.queue_ms for i in infos),
                  "inference": max(i.inference_ms for i in infos), "total": 1000 * (time.perf_counter() - t0)}
        return {"model": {"name": served.name, "digest": served.digest}, "backend": served.backend,
                "precision": served.precision, "predictions": preds,
                "timing_ms": {k: round(v, 3) for k, v in timing.items()}, "batch_size": max(i.batch_size
                                                                                             for i in infos)}

    @app.post("/v1/explain", responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request, format: str = Query("png", pattern="^(png|json)$"),
                      method: str = Query("gradcam"), target: str = Query("top"),
                      topk: int = Query(5, ge=1)):
        served, t0 = _served(state, batcher), time.perf_counter()
        if not served.explainable:
            raise ServeError(404, "not_found", "explanations need a PyTorch checkpoint; this server runs an "
                                               f"exported {served.backend} artefact")
        (name, data), *rest = await read_images(request, cfg)
        if rest:
            raise ServeError(413, "too_many_files", f"/v1/explain takes one image, got {len(rest) + 1}")
        x = await asyncio.get_running_loop().run_in_executor(decoders, served.decode, data, name, cfg.max_pixels)
        result = await asyncio.to_thread(served.explain, x, method, target, topk)
        png = result.pop("overlay_png")
        if format == "png":
            return Response(png, media_type="image/png", headers={"X-Target-Class": quote(result["target"]["class"])})
        result["timing_ms"] = {"total": round(1000 * (time.perf_counter() - t0), 3)}
        return result

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    limited = BodyLimits(app, max_bytes=cfg.max_body_bytes, timeout_s=cfg.timeout_s)
    return _Measured(limited, metrics, app)  # type: ignore[return-value]


def _served(state: dict[str, Any], batcher: Batcher) -> ServedModel:
    if state["served"] is None or not batcher.running:
        why = state["error"] or "the model is still loading"
        raise ServeError(503, "not_ready", why, {"Retry-After": "2"})
    return state["served"]


def _add_error_handlers(app: FastAPI) -> None:
    kinds = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "too_large"}

    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, e: ServeError) -> JSONResponse:
        return JSONResponse(error_body(e.status, e.type, e.message), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        detail = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404:
            detail = f"no route {request.url.path} (see /docs)"
        elif e.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(e.status_code, kinds.get(e.status_code, "error"), detail),
                            status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
                 for err in e.errors()]
        return JSONResponse(error_body(422, "invalid_parameter", "; ".join(parts)), status_code=422)


class _Measured:
    """Outermost ASGI layer: every response, refusals of the body limits included, counted by route and status
    and timed. ``.app`` is the FastAPI app (routes, state, OpenAPI)."""

    def __init__(self, inner: Any, metrics: ServeMetrics, app: FastAPI) -> None:
        self.inner, self.metrics, self.app = inner, metrics, app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path, status, t0 = scope.get("path", ""), [500], time.perf_counter()
        route = path if path in ROUTES else "/static" if path.startswith("/static/") else "other"

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.inner(scope, receive, capture)
        finally:
            self.metrics.observe(route, status[0], time.perf_counter() - t0)
