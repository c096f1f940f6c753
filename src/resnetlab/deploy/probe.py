"""``backend="auto"`` by measurement: on first use, each installed runtime is timed on the model at batch 1
and at a batch of 16, the fastest is kept, and the choice is cached per machine (CPU model, the ISA extensions
that matter, core and thread count, library versions) and model (its digest) under the resnetlab cache, so
later Predictors reuse it without timing again. ``RESNETLAB_NO_PROBE=1`` skips the timing and takes the first
installed runtime of a fixed order (:data:`resnetlab.deploy.predictor.AUTO_ORDER`).

Why measure: the order of the runtimes is not the same on every CPU (on an AMD EPYC OpenVINO led ONNX Runtime
and PyTorch; on an Intel Xeon with AMX the ranking of the bf16 and int8 paths changed) — a fixed preference
cannot be right everywhere. The score of a runtime is the geometric mean of its batch-1 speed and its batch-16
throughput, each relative to the best runtime's, so neither latency nor throughput alone decides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..utils.fileio import atomic_write_text
from ..utils.hardware import cpu_features
from .timing import call_times

__all__ = ["BackendChoice", "choose_backend", "machine_key", "NO_PROBE_ENV", "PROBE_BATCH", "choice_cache_path"]

log = logging.getLogger("resnetlab")

NO_PROBE_ENV = "RESNETLAB_NO_PROBE"
PROBE_BATCH = 16  # the throughput batch of the probe: large enough to rank throughput, quick on 2 cores
_LIBS = ("torch", "onnxruntime", "openvino")


@dataclass
class BackendChoice:
    """Which runtime ``auto`` chose, how, and the timings it chose by (``{backend: {"batch1_ms", "batch16_img_s",
    "score"}}``; empty when it did not measure)."""

    backend: str
    how: str  # "measured now", "measured earlier (cached)", "fixed order (RESNETLAB_NO_PROBE=1)", "only one"
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    probe_s: float = 0.0  # time the measurement took (conversion included)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """A few lines a person can read: the choice, why, and every runtime's numbers."""
        lines = [f"backend {self.backend}: {self.how}"]
        for b, t in sorted(self.timings.items(), key=lambda kv: -kv[1]["score"]):
            lines.append(f"  {b:12s} batch 1 {t['batch1_ms']:7.2f} ms   batch {PROBE_BATCH} "
                         f"{t[f'batch{PROBE_BATCH}_img_s']:7.1f} img/s   score {t['score']:.3f}")
        if self.machine:
            m = self.machine
            flags = ", ".join(k for k, v in m["features"].items() if v) or "none of them"
            lines.append(f"  on {m['cpu']} ({flags}), {m['cores']} cores, {m['threads']} threads")
        return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_key(threads: int) -> dict[str, Any]:
    """What a measured choice depends on besides the model."""
    from ..utils.env import cpu_name

    return {"cpu": cpu_name(), "features": cpu_features(), "cores": os.cpu_count(), "threads": int(threads),
            "machine": platform.machine(), "versions": {lib: _version(lib) for lib in _LIBS}}


def choice_cache_path() -> Path:
    from ..data.cache import default_cache_dir

    return default_cache_dir() / "backend_choice.json"


def _key(machine: dict[str, Any], digest: str, precision: str) -> str:
    text = json.dumps([machine, digest, precision], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # none yet, or damaged: measured again and rewritten
        return {}


def _time(runtime: Callable, x: np.ndarray, seconds: float, at_least: int) -> float:
    """Median seconds per call of ``runtime(x)`` over at least ``at_least`` calls and ``seconds``."""
    return float(np.median(call_times(runtime, x, seconds, at_least)))


def _measure(candidates: list[str], build: Callable[[str], Any], shape: tuple[int, ...], seconds: float
             ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *shape), dtype=np.float32)
    many = rng.standard_normal((PROBE_BATCH, *shape), dtype=np.float32)
    raw, built = {}, {}
    for b in candidates:
        print(f"resnetlab: timing the {b} runtime on this machine (once per machine and model; "
              f"{NO_PROBE_ENV}=1 skips it)", file=sys.stderr, flush=True)
        try:
            built[b] = build(b)
        except Exception as e:  # noqa: BLE001 - a runtime that cannot take the model is left out, said so
            log.warning("backend %s could not take the model (%s: %s); left out of the choice", b,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            continue
        raw[b] = (_time(built[b], one, seconds, 5), _time(built[b], many, seconds, 2))
    if not raw:
        raise RuntimeError(f"no runtime of {candidates} could run the model")
    best_ms, best_tp = 1e3 * min(r[0] for r in raw.values()), max(PROBE_BATCH / r[1] for r in raw.values())
    timings = {b: {"batch1_ms": 1e3 * t1, f"batch{PROBE_BATCH}_img_s": PROBE_BATCH / tn,
                   "score": math.sqrt((best_ms / (1e3 * t1)) * ((PROBE_BATCH / tn) / best_tp))}
               for b, (t1, tn) in raw.items()}
    return timings, built


def choose_backend(candidates: list[str], build: Callable[[str], Any], *, shape: tuple[int, ...], digest: str,
                   precision: str, threads: int, fallback: str, seconds: float = 0.5,
                   cache: Path | None = None) -> tuple[BackendChoice, Any]:
    """The runtime ``auto`` takes among ``candidates`` (installed, able to run ``precision``) and the built
    runtime. ``build(backend)`` makes one; ``fallback`` is the fixed order's pick."""
    if len(candidates) <= 1 or os.environ.get(NO_PROBE_ENV, "") not in ("", "0"):
        how = "the only runtime installed for this precision" if len(candidates) <= 1 else \
            f"fixed order ({NO_PROBE_ENV}=1: not measured)"
        return BackendChoice(fallback, how), build(fallback)
    machine = machine_key(threads)
    path = cache or choice_cache_path()
    key = _key(machine, digest, precision)
    stored = _read_cache(path).get(key)
    if isinstance(stored, dict) and stored.get("backend") in candidates:
        choice = BackendChoice(stored["backend"], "measured earlier on this machine (cached in "
                               f"{path})", stored.get("timings", {}), machine, stored.get("probe_s", 0.0))
        return choice, build(choice.backend)
    t0 = time.perf_counter()
    timings, built = _measure(candidates, build, shape, seconds)
    winner = max(timings, key=lambda b: timings[b]["score"])
    choice = BackendChoice(winner, "measured now", timings, machine, time.perf_counter() - t0)
    entries = _read_cache(path)
    entries[key] = {"backend": winner, "timings": timings, "probe_s": choice.probe_s, "machine": machine,
                    "precision": precision, "digest": digest, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                    time.gmtime())}
    try:
        atomic_write_text(path, json.dumps(entries, indent=1))
    except OSError as e:  # a read-only cache: the choice still holds for this process
        log.warning("could not cache the backend choice in %s (%s)", path, e)
    log.info("backend auto -> %s (measured in %.1f s)", winner, choice.probe_s)
    return choice, built[winner]
