"""Dynamic batching: requests arriving together share one forward pass.

Images are queued one by one; a single worker takes the first, waits up to ``max_wait_ms`` for more (up to
``max_batch``), runs the batch off the event loop on one inference thread, and answers each image's future.
It waits only while more images are on their way (requests admitted and still decoding, counted by
:meth:`Batcher.incoming`): a lone client pays no batching delay.
The queue is bounded: past ``max_queue`` waiting images a request is refused at once (503) rather than
left to time out — the backpressure TorchServe's ``job_queue_size`` and Ray Serve's ``@serve.batch`` give.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ServeError

__all__ = ["Batcher", "BatchInfo"]


@dataclass(frozen=True)
class BatchInfo:
    """How one image was served: its wait in the queue, the forward pass it shared, and that pass's size."""

    queue_ms: float
    inference_ms: float
    batch_size: int


class Batcher:
    """``await batcher.submit([x1, x2])`` -> per image (logits row, :class:`BatchInfo`)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Callable[[int], None] | None = None) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.max_queue, self.on_batch = max_queue, on_batch
        self._queue: asyncio.Queue | None = None
        self._coming = 0  # images of requests being decoded: they will be submitted shortly
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="resnetlab-infer")

    @property
    def depth(self) -> int:
        """Images waiting (not yet in a running batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    def incoming(self, n: int) -> None:
        """``n`` images are being decoded and will be submitted (negative: they were, or their request failed)."""
        self._coming += n

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop(), name="resnetlab-batcher")

    async def stop(self) -> None:
        """Finish every image already queued, then stop (graceful shutdown)."""
        if self._worker is None:
            return
        await self._queue.put(None)
        await self._worker
        self._worker = None
        self._pool.shutdown(wait=True)

    async def submit(self, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, BatchInfo]]:
        if self._worker is None:
            raise ServeError(503, "not_ready", "the model is not loaded yet", {"Retry-After": "1"})
        if self.depth + len(inputs) > self.max_queue:
            raise ServeError(503, "busy", f"{self.depth} images are waiting (at most {self.max_queue}); "
                                          "try again shortly", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in inputs]
        now = time.perf_counter()
        for x, fut in zip(inputs, futures):
            self._queue.put_nowait((x, fut, now))
        return list(await asyncio.gather(*futures))

    async def _collect(self, first) -> list:
        batch, loop = [first], asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0 or self._coming <= 0:  # the wait is over, or nobody is about to submit
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop, stopping = asyncio.get_running_loop(), False
        while not (stopping and self._queue.empty()):
            first = await self._queue.get()
            if first is None:
                stopping = True
                continue
            batch = await self._collect(first)
            if None in batch:  # the stop sentinel arrived while collecting: finish this batch, then the rest
                stopping = True
                batch = [b for b in batch if b is not None]
            live = [b for b in batch if not b[1].done()]  # a client that went away cancels its future
            if not live:
                continue
            start = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self._pool, self.run, np.stack([b[0] for b in live]))
            except Exception as e:  # noqa: BLE001 - a runtime failure is answered, not swallowed
                for _, fut, _ in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            ms = 1000 * (time.perf_counter() - start)
            if self.on_batch is not None:
                self.on_batch(len(live))
            for i, (_, fut, queued) in enumerate(live):
                if not fut.done():
                    fut.set_result((logits[i], BatchInfo(1000 * (start - queued), ms, len(live))))
