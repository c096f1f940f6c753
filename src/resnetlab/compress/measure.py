"""Latency and throughput of exported artefacts: one fresh process per artefact per round, rounds interleaved.

A process per measurement keeps one runtime's threads, caches and allocator out of the next one's numbers;
interleaving the rounds (A B C, A B C, ...) spreads the machine's drift over every row alike, so the rows of a
report are measured side by side. ``python -m resnetlab.compress.measure ARTEFACT`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["time_artefact", "measure_rows"]


def _median_seconds(run: Callable[[], Any], seconds: float, min_calls: int = 5) -> float:
    run()  # warm-up: first-call compilation and allocation are not what a server sees
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_artefact(path: str, *, threads: int | None = None, seconds: float = 2.0,
                  batch_sizes: Sequence[int] = (1, 32)) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-32 throughput (img/s) of an artefact in this process."""
    from ..deploy.export import load_artefact

    runtime, meta = load_artefact(path, threads=threads)
    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        x = rng.standard_normal((b, meta.in_chans, meta.image_size, meta.image_size)).astype(np.float32)
        s = _median_seconds(lambda: runtime(x), seconds)
        out[f"b{b}_ms"] = 1000 * s
        out[f"b{b}_img_s"] = b / s
    return out


def measure_rows(paths: Sequence[str], *, threads: int | None, seconds: float, repeats: int,
                 progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """For each artefact: median over ``repeats`` interleaved rounds, with min and max as the spread."""
    runs: list[list[dict[str, float]]] = [[] for _ in paths]
    for r in range(repeats):
        for i, path in enumerate(paths):
            if progress:
                progress(f"timing round {r + 1}/{repeats}: {Path(path).parent.name}/{Path(path).name}")
            cmd = [sys.executable, "-m", "resnetlab.compress.measure", str(path), "--seconds", str(seconds)]
            if threads:
                cmd += ["--threads", str(threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"timing {path} failed: {done.stderr.strip().splitlines()[-1:]}")
            runs[i].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = []
    for got in runs:
        row: dict[str, Any] = {}
        for key in got[0]:
            values = [g[key] for g in got]
            row[key] = statistics.median(values)
            row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnetlab.compress.measure")
    p.add_argument("artefact")
    p.add_argument("--threads", type=int)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args(argv)
    print(json.dumps(time_artefact(a.artefact, threads=a.threads, seconds=a.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
