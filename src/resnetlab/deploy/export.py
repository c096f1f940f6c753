"""``resnetlab export``: ONNX, OpenVINO IR, pt2 (torch.export) and TorchScript artefacts.

Each artefact embeds :class:`ModelMeta` (class names, preprocessing) and is checked against the
eager model on real images *before* it takes its final name: it is written under a temporary name,
loaded back with its own runtime, compared, and only then renamed; a mismatch deletes it.

Loading is safe by default: a pt2 file is read with weights-only unpickling (never code), and a
TorchScript file -- a program, whose code runs when it is loaded -- only with ``allow_torchscript=True``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..utils.fileio import atomic_write_text, fsync_dir
from .fuse import inference_model
from .meta import EXTRA_FILE, META_KEY, ModelMeta
from .runtimes import OnnxRuntime, OpenVINORuntime, TorchRuntime, require

__all__ = ["FORMATS", "ExportReport", "export_model", "to_onnx_bytes", "to_openvino", "load_artefact",
           "artefact_format", "artefact_files", "staged_artefact", "UntrustedArtefactError", "require_onnx_export"]

FORMATS = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2", "torchscript": ".ts"}


@dataclass
class ExportReport:
    path: str
    format: str
    max_abs_diff: float  # largest |artefact - eager| over the check inputs' logits
    scaled_diff: float  # max_abs_diff / max(1, max |eager logit|): what the tolerance bounds
    tolerance: float
    check_inputs: str  # what was compared: "N real images from PATH" or "N random inputs"
    num_inputs: int
    size_bytes: int
    dynamic_batch: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UntrustedArtefactError(ValueError):
    """An artefact whose loading would run code from the file, refused without an explicit opt-in."""


def artefact_files(path: str | os.PathLike) -> list[Path]:
    """Every file an artefact is made of: the file itself, and an OpenVINO .xml's .bin weights."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if artefact_format(path) == "openvino" else [path]


def artefact_format(path: str | os.PathLike) -> str:
    """The format a file's suffix names (.onnx, .xml, .pt2, .ts/.torchscript)."""
    suffixes = {ext: fmt for fmt, ext in FORMATS.items()} | {".torchscript": "torchscript"}
    fmt = suffixes.get(Path(path).suffix.lower())
    if fmt:
        return fmt
    raise ValueError(f"{path}: not an exported artefact (expected one of .onnx, .xml, .pt2, .ts)")


def _example(meta: ModelMeta, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, meta.in_chans, meta.image_size, meta.image_size, generator=g)


def to_onnx_bytes(model: nn.Module, meta: ModelMeta, *, dynamic_batch: bool = True, batch_size: int = 1) -> bytes:
    """The folded model as an ONNX graph (opset 18, dynamo exporter) with the metadata embedded."""
    require_onnx_export()
    net = inference_model(model, channels_last=False)
    x = _example(meta, 2 if dynamic_batch else batch_size)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    program = torch.onnx.export(net, (x,), dynamo=True, dynamic_shapes=shapes, input_names=["input"],
                                output_names=["logits"], opset_version=18, verbose=False, optimize=True)
    proto = program.model_proto
    embed_onnx_meta(proto, meta)
    return proto.SerializeToString()


def embed_onnx_meta(proto: Any, meta: ModelMeta) -> None:
    """Set the model's resnetlab metadata (replacing any earlier value) in an ONNX ModelProto."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    for key, value in [*keep, (META_KEY, meta.to_json())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def require_onnx_export() -> None:
    for name in ("onnx", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"ONNX export needs the {name!r} package: pip install 'resnetlab[onnx]'")


def to_openvino(model: nn.Module, meta: ModelMeta, *, dynamic_batch: bool = True, batch_size: int = 1) -> Any:
    """The folded model as an ``openvino.Model`` (traced from PyTorch) with the metadata in rt_info; its input
    shape is (N or ?, C, S, S)."""
    ov = require("openvino")
    net = inference_model(model, channels_last=False)
    program = _export_program(net, meta, dynamic_batch, batch_size)  # torch.export: no TorchScript tracing
    ov_model = ov.convert_model(program)
    # convert_model leaves every dimension but the channels dynamic ([?,3,?,?]) even for a static program: pin
    # them, so the CPU plugin plans for the one image size, and a fixed-batch export is fixed
    c, s = meta.in_chans, meta.image_size
    ov_model.reshape({ov_model.input(0): ov.PartialShape([-1 if dynamic_batch else batch_size, c, s, s])})
    ov_model.set_rt_info(meta.to_json(), [META_KEY])
    return ov_model


def _export_program(net: nn.Module, meta: ModelMeta, dynamic_batch: bool, batch_size: int):
    x = _example(meta, 2 if dynamic_batch else batch_size)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    return torch.export.export(net, (x,), dynamic_shapes=shapes)


_WEIGHTS_ONLY_LOCK = threading.Lock()


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """torch.export.load retries a failed weights_only load with full unpickling; forbid that fallback.

    torch.export.load has no ``weights_only`` argument, and an explicit ``torch.load(weights_only=False)``
    inside it is overridden only by the process-wide TORCH_FORCE_WEIGHTS_ONLY_LOAD. So the variable is set
    under a module-level lock, held for the whole load: concurrent loads (a server loading models from
    several threads) run one at a time, each sees the variable set, and the previous value (or its absence)
    is restored once the last one is done -- never left set, never removed under another load. (A
    ``torch.load`` in another thread during that window is forced to weights_only too: only safer.)
    """
    with _WEIGHTS_ONLY_LOCK:
        old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def load_artefact(path: str | os.PathLike, *, threads: int | None = None, precision: str = "fp32",
                  allow_torchscript: bool = False):
    """(runtime, meta) for an exported file: ONNX -> onnxruntime, .xml -> openvino, .pt2/.ts -> torch.

    A TorchScript file (.ts) is a program: ``torch.jit.load`` compiles and runs code stored in the file
    (its ``__setstate__`` methods run at load, its ``forward`` at every call), so a file from elsewhere can
    do anything the process can. It is refused unless ``allow_torchscript=True`` says you trust it; the
    other formats are data (ONNX, OpenVINO IR) or are read with weights-only unpickling (pt2).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such artefact: {path}")
    fmt = artefact_format(path)
    if fmt == "torchscript" and not allow_torchscript:
        raise UntrustedArtefactError(
            f"{path}: refused: a TorchScript file is code, and loading it runs that code (it can do anything "
            "this process can). Load it only if you trust its source: pass allow_torchscript=True "
            "(resnetlab predict --allow-torchscript), or use an .onnx, .xml or .pt2 export instead")
    if fmt == "onnx":
        runtime = OnnxRuntime(path, threads=threads)
        props = runtime.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ValueError(f"{path}: an ONNX file without resnetlab metadata (export it with resnetlab export)")
        return runtime, ModelMeta.from_json(props[META_KEY], str(path))
    if fmt == "openvino":
        ov = require("openvino")
        model = ov.Core().read_model(str(path))
        if not model.has_rt_info([META_KEY]):
            raise ValueError(f"{path}: an OpenVINO model without resnetlab metadata")
        meta = ModelMeta.from_json(model.get_rt_info([META_KEY]).astype(str), str(path))
        precision = "fp32" if meta.extra.get("precision") == "int8" else precision
        return OpenVINORuntime(model, threads=threads, precision=precision), meta
    extra = {EXTRA_FILE: ""}
    if fmt == "pt2":
        with _weights_only_loads():
            module = torch.export.load(str(path), extra_files=extra).module()
    else:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[EXTRA_FILE]:
        raise ValueError(f"{path}: a {fmt} file without resnetlab metadata")
    meta = ModelMeta.from_json(extra[EXTRA_FILE], str(path))
    return TorchRuntime(module, threads=threads, as_is=True), meta


def _write(net: nn.Module, meta: ModelMeta, fmt: str, tmp: Path, dynamic_batch: bool, batch_size: int) -> None:
    if fmt == "onnx":
        tmp.write_bytes(to_onnx_bytes(net, meta, dynamic_batch=dynamic_batch, batch_size=batch_size))
    elif fmt == "openvino":
        require("openvino").save_model(to_openvino(net, meta, dynamic_batch=dynamic_batch, batch_size=batch_size),
                                       str(tmp), compress_to_fp16=False)
    elif fmt == "pt2":
        program = _export_program(inference_model(net, channels_last=False), meta, dynamic_batch, batch_size)
        torch.export.save(program, str(tmp), extra_files={EXTRA_FILE: meta.to_json()})
    else:
        folded = inference_model(net, channels_last=False)
        traced = torch.jit.trace(folded, _example(meta, batch_size), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: meta.to_json()})
        tmp.write_bytes(buf.getvalue())


def export_model(model: nn.Module, meta: ModelMeta, path: str | os.PathLike, fmt: str | None = None, *,
                 dynamic_batch: bool = False, batch_size: int = 1, check_inputs: torch.Tensor | None = None,
                 check_source: str = "", tolerance: float = 1e-3) -> ExportReport:
    """Export ``model`` to ``path``; compare the artefact with eager on ``check_inputs`` before renaming.

    Without ``check_inputs`` the check uses 8 random inputs, and the report says so. The tolerance is on
    the logits: max |artefact - eager| / max(1, max |eager|), i.e. absolute for logits of ordinary size and
    relative for the huge ones of untrained nets (a random-weight Inception-v3 gives ~1e12); folding BN and
    another runtime's kernels give about 1e-6.
    """
    path = Path(path)
    fmt = fmt or artefact_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if path.suffix.lower() != FORMATS[fmt]:
        raise ValueError(f"a {fmt} artefact's file name must end in {FORMATS[fmt]}, got {path.name!r}")
    model = model.eval()
    if check_inputs is None:
        check_inputs, check_source = _example(meta, 8), "8 random inputs (no check data given)"
    if not dynamic_batch:
        check_inputs = check_inputs[: max(batch_size, 1) * (len(check_inputs) // max(batch_size, 1))]
    with staged_artefact(path) as tmp:
        _write(model, meta, fmt, tmp, dynamic_batch, batch_size)
        runtime, got_meta = load_artefact(tmp, allow_torchscript=True)  # we have just written it
        with torch.no_grad():
            ref = model(check_inputs).float().numpy()
        step = len(check_inputs) if dynamic_batch else batch_size
        out = np.concatenate([runtime(check_inputs[i:i + step].numpy()) for i in range(0, len(check_inputs), step)])
        del runtime
        diff = float(np.abs(out - ref).max())
        scale = max(1.0, float(np.abs(ref).max()))
        if got_meta != meta:
            raise RuntimeError(f"{fmt} export lost its metadata: wrote {meta}, read {got_meta}")
        if not diff / scale <= tolerance:
            raise RuntimeError(f"{fmt} export differs from the eager model by {diff:.3g} (logits up to {scale:.3g}) "
                               f"on {check_source} (tolerance {tolerance:g}); nothing was written to {path}")
    size = sum(f.stat().st_size for f in artefact_files(path))
    report = ExportReport(str(path), fmt, diff, diff / scale, tolerance, check_source, len(check_inputs), size,
                          dynamic_batch)
    atomic_write_text(path.with_name(path.name + ".export.json"), json.dumps(report.to_dict(), indent=2) + "\n")
    return report


@contextlib.contextmanager
def staged_artefact(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` with its suffix (runtimes pick the format by it); once the block
    succeeds, its files (an OpenVINO .xml's .bin too) are fsync'ed and renamed to their final names -- the
    .bin before the .xml, so a final .xml never names weights not yet in place. On an error nothing is kept.

    (:func:`resnetlab.utils.fileio.atomic_path` names its temp file ``*.tmp``, which no runtime would load,
    and writes one file; this is the same protocol for artefacts.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    staged = artefact_files(tmp)
    try:
        yield tmp
        for f in staged:
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                os.chmod(f, mode)  # mkstemp makes it private; artefacts are shared like any output
        for f in reversed(staged):  # companions (.bin) first, the file that names them last
            if f.is_file():
                os.replace(f, path.with_suffix(f.suffix))
        fsync_dir(path.parent)
    finally:
        for f in staged:
            f.unlink(missing_ok=True)
