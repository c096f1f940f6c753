"""``resnetlab bench``: the article's comparison table (its §4.2: FPS and memory of ResNet-18, VGG-16,
Inception-v3, Xception), measured on the user's own machine for every inference backend.

Each (model, backend) runs in a fresh subprocess, so its memory figures are its own: the RSS of the
bare runtime (torch + the backend library imported), and the peak while running the model, counted from
the moment the runtime is built and everything it does not need is freed (the unfolded original of a
BN-folded copy, the checkpoint's file contents, the MAC-counting pass): Linux's peak-RSS counter is reset
there. Repeats are interleaved (round r runs every pair once) because machines drift; the table
gives medians with the spread.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .baselines import BARE_BACKENDS, bare_runtime, nncf_default_int8
from .timing import call_times

__all__ = ["BENCH_BACKENDS", "BenchSpec", "run_bench", "ARTICLE"]

# backend -> what it runs (the names of the issue; "int8" is the best int8 runtime installed)
BENCH_BACKENDS = {
    "eager": "PyTorch eager FP32, NCHW, unfused (what a plain script runs)",
    "channels_last": "PyTorch FP32, BN folded, channels_last",
    "compile": "torch.compile FP32, BN folded, channels_last",
    "bf16": "PyTorch bf16 weights and activations, BN folded, channels_last",
    "compile-bf16": "torch.compile of the bf16, BN-folded, channels_last model",
    "onnxruntime": "ONNX Runtime FP32 (CPU EP, all graph optimisations)",
    "openvino": "OpenVINO FP32 (f32 precision hint)",
    "openvino-bf16": "OpenVINO with the bf16 precision hint",
    "int8": "int8 static PTQ on the best installed runtime (OpenVINO+NNCF, else ONNX Runtime)",
    "int8-openvino": "OpenVINO int8 (NNCF PTQ)",
    "int8-onnxruntime": "ONNX Runtime int8 (QDQ, per-channel)",
    "auto": "resnetlab.Predictor(backend='auto') FP32: the runtime its probe chose, timed through Predictor.logits",
    "auto-precision": "resnetlab.Predictor(backend='auto', precision='auto'), timed through Predictor.logits",
    "bare-onnxruntime": "hand-built baseline: InferenceSession(path) with ONNX Runtime's defaults",
    "bare-openvino": "hand-built baseline: OpenVINO compiled per batch size (static shape), f32 and latency hints",
    "bare-int8-openvino": "hand-built baseline: nncf.quantize(ov.convert_model(model)) with NNCF's defaults, "
                          "compiled per batch size",
}
_NEEDS = {"onnxruntime": ["onnxruntime", "onnx", "onnxscript"], "openvino": ["openvino"],
          "openvino-bf16": ["openvino"], "int8-openvino": ["openvino", "nncf"],
          "int8-onnxruntime": ["onnxruntime", "onnx", "onnxscript"],
          "bare-onnxruntime": ["onnxruntime", "onnx", "onnxscript"], "bare-openvino": ["openvino"],
          "bare-int8-openvino": ["openvino", "nncf"]}

# The article's table (§4.2): FPS and memory (MB) as it reports them.
ARTICLE = {"resnet18": (115, 100), "vgg16": (70, 150), "inception_v3": (50, 200), "xception": (40, 250)}


@dataclass(frozen=True)
class BenchSpec:
    model: str
    backend: str
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int | None = None
    seconds: float = 2.0  # measuring time per batch size (after warm-up)
    checkpoint: str | None = None  # trained weights (else random weights, seeded)
    data: str | None = None  # with a checkpoint: accuracy on this data's test split, and real calibration
    acc_images: int = 2000  # images for top-1/top-5
    calib_images: int = 300
    model_kwargs: dict = field(default_factory=dict)
    artefact: str | None = None  # the prepared file an artefact backend loads (set by run_bench)


def missing_packages(backend: str) -> list[str]:
    import importlib.util

    if backend == "int8":
        backend = "int8-openvino" if not missing_packages("int8-openvino") else "int8-onnxruntime"
    return [m for m in _NEEDS.get(backend, []) if importlib.util.find_spec(m) is None]


def library_versions() -> dict[str, str]:
    """Versions of the optional inference libraries that are installed (importlib.metadata, no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("onnxruntime", "onnx", "onnxscript", "openvino", "nncf", "torchao"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# --- the worker (one model x backend in its own process) -----------------------------------------
def _rss_mib(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _release_and_reset_peak() -> bool:
    """Free what is garbage, hand freed heap pages back to the OS, and reset the peak RSS (VmHWM) to the
    current RSS, so the peak measured afterwards is what the runtime needs. False where the kernel does not
    allow the reset (then the peak includes building the runtime)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed small blocks otherwise
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _artefact_kind(backend: str) -> tuple[str, str] | None:
    """(how, suffix) of the file an artefact backend runs, prepared in its own process; None: in-process
    (the PyTorch backends, and the Predictor's auto rows: it builds and probes its runtimes itself)."""
    if backend == "int8":
        backend = "int8-openvino" if not missing_packages("int8-openvino") else "int8-onnxruntime"
    return {"onnxruntime": ("onnx", ".onnx"), "openvino": ("openvino", ".xml"), "openvino-bf16": ("openvino", ".xml"),
            "int8-openvino": ("int8-openvino", ".xml"), "int8-onnxruntime": ("int8-onnxruntime", ".onnx"),
            "bare-onnxruntime": ("onnx", ".onnx"), "bare-openvino": ("openvino", ".xml"),
            "bare-int8-openvino": ("nncf-default", ".xml")}.get(backend)


def _load_model(spec: BenchSpec):
    """(model, meta, TrainedModel or None): the checkpoint's model, else the named model with random weights."""
    import torch

    from .meta import ModelMeta
    from ..models import create_model

    torch.manual_seed(0)
    if spec.checkpoint:
        from ..eval import load_trained

        trained = load_trained(spec.checkpoint)
        return trained.model, ModelMeta.from_trained(trained), trained
    model = create_model(spec.model, **spec.model_kwargs).eval()
    return model, ModelMeta.for_module(model), None


def _model_facts(model, meta) -> dict[str, Any]:
    from ..models.stats import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, (meta.in_chans, meta.image_size, meta.image_size)),
            "input": [meta.in_chans, meta.image_size, meta.image_size]}


def prepare(spec: BenchSpec, workdir: str) -> dict[str, Any]:
    """Write the artefact an artefact backend runs (its own process, so conversion memory is not counted),
    and measure its accuracy when a checkpoint and data are given."""
    from .export import export_model
    from .quantize import quantize_model

    how, suffix = _artefact_kind(spec.backend)
    model, meta, trained = _load_model(spec)
    int8 = how.startswith("int8") or how == "nncf-default"
    calib, val, calib_source = _calibration(spec, meta, trained, int8=int8)
    path = Path(workdir) / f"{spec.model}-{spec.backend}{suffix}"
    t0 = time.perf_counter()
    if how == "nncf-default":
        nncf_default_int8(model, meta, path, calib)
    elif int8:
        quantize_model(model, meta, path, how.partition("-")[2], calib)
    else:
        export_model(model, meta, path, how, dynamic_batch=True)  # checked against eager before it is kept
    out = {"artefact": str(path), "prepare_s": time.perf_counter() - t0, **_model_facts(model, meta),
           "artefact_bytes": sum(f.stat().st_size for f in path.parent.glob(path.stem + ".*")
                                 if f.suffix in (".xml", ".bin", ".onnx")),
           "calibration": calib_source if int8 else None}
    if val is not None:
        runtime, _ = _load_prepared(spec, str(path))
        out.update(_accuracy(runtime, val))
    return out


def _load_prepared(spec: BenchSpec, path: str):
    """(runtime, meta) of a prepared artefact: resnetlab's runtime for it, or the hand-built baseline."""
    from .export import load_artefact

    if spec.backend in BARE_BACKENDS:
        run = bare_runtime(spec.backend, path, spec.threads)
        return run, run.meta
    return load_artefact(path, threads=spec.threads, precision=_precision(spec.backend))


def _precision(backend: str) -> str:
    return "bf16" if backend == "openvino-bf16" else "fp32"


def _accuracy(run, val) -> dict[str, Any]:
    from ..eval import topk_accuracy
    from .quantize import logits_of

    z, y = logits_of(run, val())
    return {"top1": topk_accuracy(z, y, 1), "top5": topk_accuracy(z, y, 5), "acc_images": len(y)}


def _torch_runtime(spec: BenchSpec, model, meta, out: dict[str, Any]):
    """(callable, weights bytes) for the in-process PyTorch backends.

    Every backend but eager runs a BN-folded copy: the callable holds that copy only, so once the caller
    drops ``model`` the unfolded original is freed (``worker`` does, before it measures memory)."""
    import torch

    from .predictor import Predictor
    from .runtimes import TorchRuntime

    b = spec.backend
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if b == "eager":
        net = model.eval()

        @torch.inference_mode()
        def eager(x):
            return net(torch.from_numpy(x)).numpy()
        return eager, state_bytes
    if b in ("channels_last", "compile", "bf16", "compile-bf16"):
        bf16 = b.endswith("bf16")
        rt = TorchRuntime(model, precision="bf16" if bf16 else "fp32", compile=b.startswith("compile"),
                          threads=spec.threads)
        return rt, state_bytes // (2 if bf16 else 1)
    if b in ("auto", "auto-precision"):  # the whole Predictor, as a user calls it: its choice and its per-call path
        src, kw = (spec.checkpoint, {}) if spec.checkpoint else (model, {"classes": meta.classes,
                                                                          "image_size": meta.image_size})
        p = Predictor(src, "auto", precision="auto" if b == "auto-precision" else "fp32", threads=spec.threads, **kw)
        out["chosen"] = {k: p.info[k] for k in ("backend", "precision", "how")}
        return lambda x: p.logits(torch.from_numpy(x)), state_bytes
    raise ValueError(f"unknown bench backend {b!r}; known: {', '.join(BENCH_BACKENDS)}")


def _time_calls(run, x, seconds: float, min_calls: int = 3) -> list[float]:
    return call_times(run, x, seconds, min_calls, warm_s=seconds / 4)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def worker(spec: BenchSpec) -> dict[str, Any]:
    """Measure one model x backend in this process (called by ``run_bench`` in a subprocess).

    An artefact backend only loads its prepared file here, so the peak RSS is that of running the model.
    """
    import importlib

    import torch

    for mod in _NEEDS.get(spec.backend, []):
        importlib.import_module(mod)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    rss_bare = _rss_mib()
    out: dict[str, Any] = {"model": spec.model, "backend": spec.backend}
    if spec.artefact:
        run, meta = _load_prepared(spec, spec.artefact)
        trained = None
    else:
        run, meta, trained = _in_process(spec, out)
    # from here on only the runtime is alive: the peak counts what running needs, not what building it did
    out["peak_reset"] = _release_and_reset_peak()
    out["threads"] = torch.get_num_threads()
    c, s = meta.in_chans, meta.image_size
    g = torch.Generator().manual_seed(1)
    for bs in sorted(spec.batch_sizes):
        x = torch.randn(bs, c, s, s, generator=g).numpy()
        times = _time_calls(run, x, spec.seconds)
        out[f"bs{bs}"] = {"img_per_s": bs / statistics.median(times), "calls": len(times),
                          "p50_ms": 1e3 * _pct(times, 50), "p90_ms": 1e3 * _pct(times, 90),
                          "p99_ms": 1e3 * _pct(times, 99),
                          "rss_model_mib": _rss_mib("VmHWM") - rss_bare}  # peak so far: batch sizes run ascending
    out["rss_bare_mib"], out["rss_peak_mib"] = rss_bare, _rss_mib("VmHWM")  # before any accuracy pass
    out["rss_model_mib"] = out["rss_peak_mib"] - rss_bare
    val = _calibration(spec, meta, trained, int8=False)[1]  # the test data is read after the memory figures
    if val is not None:
        out.update(_accuracy(run, val))
    return out


def _in_process(spec: BenchSpec, out: dict[str, Any]):
    """(runtime, meta, the checkpoint's TrainedModel without its model, or None) of a PyTorch backend.

    The model loaded here is dropped on return: a folded backend's runtime keeps its folded copy only, eager
    keeps the model it runs. (What the validation batches need later is the checkpoint's data settings.)"""
    import dataclasses

    model, meta, trained = _load_model(spec)
    out.update(_model_facts(model, meta))
    run, out["artefact_bytes"] = _torch_runtime(spec, model, meta, out)
    return run, meta, dataclasses.replace(trained, model=None) if trained is not None else None


def _calibration(spec: BenchSpec, meta, trained, *, int8: bool):
    """(calibration batches, validation batch factory or None, description)."""
    import torch

    if trained is not None and spec.data:
        from .quantize import calibration_images, test_batches

        calib = calibration_images(trained, spec.data, spec.calib_images) if int8 else []
        val = test_batches(trained, spec.data, images=spec.acc_images)
        return calib, val, f"{sum(len(b) for b in calib)} real images from {spec.data} (train split)"
    n = spec.calib_images if int8 else 0
    g = torch.Generator().manual_seed(2)
    c, s = meta.in_chans, meta.image_size
    calib = [torch.randn(min(50, n - i), c, s, s, generator=g).numpy() for i in range(0, n, 50)]
    return calib, None, f"{n} random normal inputs (speed only: no accuracy claim)"


# --- the driver ------------------------------------------------------------------------------
def _run_worker(spec: BenchSpec, timeout_s: float, prepare_dir: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "resnetlab.deploy.bench", "--worker", json.dumps(asdict(spec))]
    cmd += ["--prepare", prepare_dir] if prepare_dir else []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {p.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def _summarise(runs: list[dict[str, Any]], batch_sizes: Sequence[int], prep: dict[str, Any]) -> dict[str, Any]:
    if "error" in prep:
        return {"error": "preparing the artefact: " + prep["error"], "repeats": 0}
    ok = [{**prep, **r} for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error", "failed") if runs else "not run", "repeats": len(runs)}
    med = lambda xs: statistics.median(xs)  # noqa: E731
    out = {k: ok[0].get(k) for k in ("model", "backend", "input", "threads", "params", "macs", "artefact_bytes",
                                     "calibration")}
    out["repeats"] = len(ok)
    for bs in batch_sizes:
        vals = [r[f"bs{bs}"]["img_per_s"] for r in ok]
        out[f"bs{bs}"] = {"img_per_s": med(vals), "min": min(vals), "max": max(vals),
                          **{k: med([r[f"bs{bs}"][k] for r in ok])
                             for k in ("p50_ms", "p90_ms", "p99_ms", "rss_model_mib")}}
    for k in ("rss_bare_mib", "rss_peak_mib", "rss_model_mib"):
        out[k] = med([r[k] for r in ok])
    out["peak_reset"] = all(r.get("peak_reset", False) for r in ok)
    if "chosen" in ok[0]:
        out["chosen"] = ok[0]["chosen"]
    out["prepare_s"] = prep.get("prepare_s")
    for k in ("top1", "top5", "acc_images"):
        if k in ok[0]:
            out[k] = ok[0][k]
    return out


def run_bench(models: Sequence[str], backends: Sequence[str], *, batch_sizes: Sequence[int] = (1, 32),
              threads: int | None = None, repeats: int = 3, seconds: float = 2.0, checkpoint: str | None = None,
              data: str | None = None, out: str | os.PathLike = "bench", timeout_s: float = 1800,
              log=print, command: str | None = None) -> dict[str, Any]:
    """Measure every model x backend (``repeats`` interleaved rounds) and write md/csv/json/png to ``out``."""
    from ..models import list_models
    from ..utils.env import environment

    unknown = [b for b in backends if b not in BENCH_BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {', '.join(BENCH_BACKENDS)}")
    bad = [m for m in models if m not in list_models()]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; see `resnetlab models`")
    if checkpoint and len(models) != 1:
        raise ValueError("--checkpoint measures one trained model: give exactly one --models name")
    if repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"need repeats >= 1 and batch sizes >= 1, got repeats={repeats}, batch_sizes={batch_sizes}")
    env = environment(threads=threads, libraries=library_versions())
    pairs = [(m, b) for m in models for b in backends]
    missing = {b: missing_packages(b) for b in backends if missing_packages(b)}
    runs: dict[tuple[str, str], list[dict]] = {p: [] for p in pairs}
    preps: dict[tuple[str, str], dict] = {p: {} for p in pairs}
    t0 = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="resnetlab-bench-")
    try:
        for m, b in pairs:  # artefacts first, each in its own process (conversion memory is not the model's)
            if b not in missing and _artefact_kind(b):
                preps[(m, b)] = _run_worker(BenchSpec(m, b, tuple(batch_sizes), threads, seconds, checkpoint, data),
                                            timeout_s, prepare_dir=workdir)
                log(f"[prepare | {time.perf_counter() - t0:.0f} s] {m} {b}: "
                    + (preps[(m, b)].get("error") or f"{preps[(m, b)]['prepare_s']:.0f} s"))
        _measure(pairs, missing, preps, runs, repeats, batch_sizes, threads, seconds, checkpoint, data, timeout_s,
                 log, t0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for m, b in pairs:
        if b in missing:
            rows.append({"model": m, "backend": b, "status": f"not installed ({', '.join(missing[b])})"})
        else:
            s = _summarise(runs[(m, b)], batch_sizes, preps[(m, b)])
            rows.append({"status": "error: " + s["error"] if "error" in s else "ok", **s,
                         "model": m, "backend": b})
    result = {"env": env, "command": command, "batch_sizes": list(batch_sizes), "repeats": repeats,
              "seconds": seconds, "checkpoint": checkpoint, "data": data, "rows": rows,
              "backends": {b: BENCH_BACKENDS[b] for b in backends}}
    write_outputs(result, Path(out))
    return result


def _measure(pairs, missing, preps, runs, repeats, batch_sizes, threads, seconds, checkpoint, data, timeout_s,
             log, t0) -> None:
    """``repeats`` interleaved rounds: round r measures every (model, backend) once, each in a fresh process."""
    for r in range(repeats):
        for i, (m, b) in enumerate(pairs):
            if b in missing or "error" in preps[(m, b)]:
                continue
            spec = BenchSpec(m, b, tuple(batch_sizes), threads, seconds, checkpoint, data,
                             artefact=preps[(m, b)].get("artefact"))
            res = _run_worker(spec, timeout_s)
            runs[(m, b)].append(res)
            done = r * len(pairs) + i + 1
            what = res.get("error") or ", ".join(f"bs{bs} {res[f'bs{bs}']['img_per_s']:.1f} img/s"
                                                 for bs in batch_sizes)
            log(f"[{done}/{repeats * len(pairs)} | {time.perf_counter() - t0:.0f} s] repeat {r + 1}: {m} {b}: {what}")


# --- reports ---------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def write_outputs(result: dict[str, Any], out: Path) -> None:
    from ..utils.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "bench.csv", _csv(result))
    atomic_write_text(out / "bench.md", markdown(result))
    _plot(result, out / "bench.png")


def _flat(row: dict[str, Any], batch_sizes: Sequence[int]) -> dict[str, Any]:
    flat = {k: row.get(k) for k in ("model", "backend", "status", "params", "macs", "artefact_bytes",
                                    "rss_bare_mib", "rss_peak_mib", "rss_model_mib", "peak_reset", "top1", "top5",
                                    "repeats")}
    for bs in batch_sizes:
        d = row.get(f"bs{bs}") or {}
        for k in ("img_per_s", "min", "max", "p50_ms", "p90_ms", "p99_ms", "rss_model_mib"):
            flat[f"bs{bs}_{k}"] = d.get(k)
    return flat


def _csv(result: dict[str, Any]) -> str:
    flats = [_flat(r, result["batch_sizes"]) for r in result["rows"]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(flats[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(flats)
    return buf.getvalue()


def _features(env: dict[str, Any]) -> str:
    """The CPU extensions that decide inference speed (AVX-512, VNNI, bf16, AMX), as the results header names them."""
    have = [k for k, v in (env.get("cpu_features") or {}).items() if v]
    return ", ".join(have) if have else "none of AVX2 / AVX-512 / VNNI / AMX"


def markdown(result: dict[str, Any]) -> str:
    env, bss = result["env"], result["batch_sizes"]
    lines = ["# Inference benchmark: models x backends on this machine", "",
             f"- command: `{result.get('command') or 'resnetlab bench'}`",
             f"- date: {env['date']}; resnetlab {env['resnetlab']} ({env.get('git', '')}"
             f"{' + uncommitted changes' if env.get('dirty') else ''})",
             f"- machine: {env['cpu']} ({_features(env)}), {env['cores']} cores, {env['torch_threads']} threads",
             f"- versions: Python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}"
             + "".join(f", {k} {v}" for k, v in env.get("libraries", {}).items()),
             f"- method: each model x backend in its own process; {result['repeats']} interleaved repeat(s) of "
             f"{result['seconds']:g} s per batch size after warm-up; throughput = batch / median call time; "
             "medians over repeats with [min–max]; latency percentiles at batch 1; memory = RSS of the bare "
             "runtime (torch + backend imported) and its increase to the peak after the smallest batch size and "
             "after all of them, the peak counted from when the runtime is built and all it does not need is "
             "freed (a folded backend holds its folded copy only, not the original model)"
             + ("" if all(r.get("peak_reset", True) for r in result["rows"]) else
                " where the kernel allows resetting the peak (not here: building the runtime is included)")
             + "; ONNX / OpenVINO / int8 artefacts are written (and int8 calibrated) beforehand in a separate "
             "process, so their memory is that of the loaded artefact running, not of converting the model",
             f"- weights: {'checkpoint ' + result['checkpoint'] if result.get('checkpoint') else 'random (seeded)'}",
             ""]
    head = ["model", "backend"] + [f"bs{b} img/s" for b in bss]
    head += ["p50 / p90 / p99 ms (bs1)"] if 1 in bss else []
    head += ["params", "GMACs", "artefact MB", "RSS bare MiB", f"+MiB (bs{min(bss)} / peak)"]
    head += ["top-1 / top-5"] if result.get("checkpoint") else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {r['backend']} | " + " | ".join([r.get("status", "?")]
                                                                             + [""] * (len(head) - 3)) + " |")
            continue
        cells = [r["model"], r["backend"]]
        cells += [f"{r[f'bs{b}']['img_per_s']:.1f} [{r[f'bs{b}']['min']:.1f}–{r[f'bs{b}']['max']:.1f}]" for b in bss]
        if 1 in bss:
            d = r["bs1"]
            cells.append(f"{d['p50_ms']:.2f} / {d['p90_ms']:.2f} / {d['p99_ms']:.2f}")
        cells += [f"{r['params'] / 1e6:.2f}M", f"{r['macs'] / 1e9:.2f}", f"{r['artefact_bytes'] / 2**20:.1f}",
                  f"{r['rss_bare_mib']:.0f}", f"{r[f'bs{min(bss)}']['rss_model_mib']:.0f} / {r['rss_model_mib']:.0f}"]
        if result.get("checkpoint"):
            cells.append(f"{100 * r['top1']:.2f} % / {100 * r['top5']:.2f} %" if "top1" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Backends: " + "; ".join(f"**{k}** {v}" for k, v in result["backends"].items()), ""]
    lines += [f"- {r['backend']} chose **{r['chosen']['backend']} {r['chosen']['precision']}** ({r['chosen']['how']})"
              for r in result["rows"] if r.get("chosen")] + [""]
    lines += article_check(result)
    lines += ["", "![throughput of every model and backend](bench.png)", ""]
    return "\n".join(lines)


def article_check(result: dict[str, Any]) -> list[str]:
    """The article's §4.2 speed and memory claims against this run's eager FP32 numbers."""
    rows = {r["model"]: r for r in result["rows"] if r.get("backend") == "eager" and r.get("status") == "ok"}
    ours = [m for m in ARTICLE if m in rows]
    if len(ours) < 2 or 1 not in result["batch_sizes"]:
        return ["The article's table needs eager results at batch 1 for at least two of its models "
                f"({', '.join(ARTICLE)}); not in this run."]
    fps = {m: rows[m]["bs1"]["img_per_s"] for m in ours}
    mem = {m: rows[m]["bs1"].get("rss_model_mib", rows[m]["rss_model_mib"]) for m in ours}  # at batch 1
    lines = ["## The article's table (§4.2) against this machine (eager FP32, batch 1)", "",
             "| model | article FPS | measured img/s | article MB | measured +MiB |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {ARTICLE[m][0]} | {fps[m]:.1f} | {ARTICLE[m][1]} | {mem[m]:.0f} |" for m in ours]
    art_speed = sorted(ours, key=lambda m: -ARTICLE[m][0])
    our_speed = sorted(ours, key=lambda m: -fps[m])
    art_mem = sorted(ours, key=lambda m: ARTICLE[m][1])
    our_mem = sorted(ours, key=lambda m: mem[m])
    base = "resnet18" if "resnet18" in ours else ours[0]
    ratios = ", ".join(f"{m} {fps[base] / fps[m]:.1f}x (article {ARTICLE[base][0] / ARTICLE[m][0]:.2f}x)"
                       for m in ours if m != base)
    verdict = lambda same: "holds" if same else "does not hold"  # noqa: E731
    lines += ["", f"- speed ranking: article {' > '.join(art_speed)}; measured {' > '.join(our_speed)} — the "
              f"article's ranking {verdict(art_speed == our_speed)} here.",
              f"- {base}'s speed-up over each: {ratios}.",
              f"- memory ranking (least first): article {' < '.join(art_mem)}; measured {' < '.join(our_mem)} — "
              f"{verdict(art_mem == our_mem)}.",
              f"- fastest and smallest: {our_speed[0]} is the fastest, {our_mem[0]} uses the least memory."]
    return lines


def _plot(result: dict[str, Any], path: Path) -> None:
    """One panel per batch size: a group of bars per model (ordered by GMACs), one bar per backend (the same
    colour in every group and panel), throughput in images/s on a log axis (models differ 50x)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedFormatter, FixedLocator, LogLocator, NullFormatter

    from ..utils.plot import grouped_bars, save_figure

    ok = sorted((r for r in result["rows"] if r.get("status") == "ok"), key=lambda r: r.get("macs") or 0)
    if not ok:
        return
    bss = result["batch_sizes"]
    models = list(dict.fromkeys(r["model"] for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in result["rows"] if r.get("status") == "ok"))
    macs = {r["model"]: r.get("macs") for r in ok}
    labels = {m: f"{m}\n{macs[m] / 1e9:.2f} GMACs" if macs.get(m) else m for m in models}
    width = min(24.0, max(7.0, 3.0 + 0.4 * len(models) * len(backends)))
    fig, axes = plt.subplots(len(bss), 1, figsize=(width, 0.8 + 3.6 * len(bss)), layout="constrained",
                             squeeze=False)
    cmap = plt.get_cmap("tab10" if len(backends) <= 10 else "tab20")
    every = [r[f"bs{bs}"]["img_per_s"] for r in ok for bs in bss]
    # a log axis only where the values span more than 10x (models differ 50x); then every bar rises from the
    # same power of ten, else from 0 on a linear axis: a bar's height is never cut by an arbitrary floor
    log_y = max(every) > 10 * min(every)
    for ax, bs in zip(axes[:, 0], bss):
        values = {labels[m]: {b: None for b in backends} for m in models}
        for r in ok:
            values[labels[r["model"]]][r["backend"]] = r[f"bs{bs}"]["img_per_s"]
        grouped_bars(values, ax=ax, title=f"batch {bs}", ylabel="images/s", log_y=log_y)
        for j, bars in enumerate(ax.containers):  # one colour per backend, also past tab10's ten
            for bar in bars:
                bar.set_color(cmap(j))
        # grouped_bars' number formatter also lands on the category axis: name the groups again
        ax.xaxis.set_major_locator(FixedLocator(range(len(models))))
        ax.xaxis.set_major_formatter(FixedFormatter([labels[m] for m in models]))
        if log_y:
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))  # 10, 20, 50, 100...: readable
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(10 ** math.floor(math.log10(min(every))), max(every) * 1.6)
        else:
            ax.set_ylim(0, max(every) * 1.1)
        ax.get_legend().remove()
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", frameon=False, fontsize=8, title="backend")
    env = result.get("env", {})
    fig.suptitle(f"Inference throughput per model and backend\n({env.get('cpu', '?')}, "
                 f"{env.get('torch_threads', '?')} threads; "
                 + ("one run)" if result.get("repeats") == 1 else f"median of {result.get('repeats', '?')} repeats)"),
                 fontsize=11)
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnetlab.deploy.bench")
    p.add_argument("--worker", required=True, help="JSON BenchSpec (internal: one measurement process)")
    p.add_argument("--prepare", metavar="DIR", help="write the backend's artefact into DIR instead of measuring")
    args = p.parse_args(argv)
    spec = BenchSpec(**{**json.loads(args.worker)})
    spec = BenchSpec(**{**asdict(spec), "batch_sizes": tuple(spec.batch_sizes)})
    print(json.dumps(prepare(spec, args.prepare) if args.prepare else worker(spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
