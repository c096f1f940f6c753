"""What ``resnetlab serve`` runs and the limits it enforces: one frozen config, each field with its help."""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, Callable

__all__ = ["ServeConfig", "BACKENDS", "PRECISIONS", "field_parser"]

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8-artefact", "auto")


@dataclass(frozen=True)
class ServeConfig:
    """Defaults follow what the field's servers ship with, tightened where they leave a hole (Starlette has no
    body cap, TorchServe caps at 6.5 MB, Ray Serve batches 10 within 10 ms)."""

    checkpoint: str = field(metadata={"help": "a checkpoint, run directory or exported artefact (.onnx, .xml)"})
    backend: str = field(default="auto", metadata={"help": "auto, torch, onnxruntime or openvino"})
    precision: str = field(default="fp32", metadata={"help": "fp32, bf16, int8-artefact (the checkpoint is an int8 "
                                                              "artefact from `resnetlab quantize`) or auto (bf16 "
                                                              "where native and checked, an int8 artefact as is)"})
    host: str = field(default="127.0.0.1", metadata={"help": "bind address (loopback: only this machine)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    threads: int | None = field(default=None, metadata={"help": "inference threads (default: all cores)"})
    max_batch: int = field(default=32, metadata={"help": "most images run in one batch"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest wait for a batch to fill (0: take only "
                                                               "what is already waiting)"})
    max_queue: int = field(default=256, metadata={"help": "images waiting at most; more get 503 + Retry-After"})
    max_body_mb: float = field(default=8.0, metadata={"help": "largest request body, MB (413 above)"})
    max_files: int = field(default=32, metadata={"help": "most images in one request (413 above)"})
    max_pixels: int = field(default=40_000_000, metadata={"help": "most pixels of one image, read from its header "
                                                                  "before decoding (413 above)"})
    timeout_s: float = field(default=30.0, metadata={"help": "a request body must arrive within this (408)"})
    topk: int = field(default=5, metadata={"help": "classes returned per image unless ?topk= says otherwise"})
    decode_workers: int = field(default=4, metadata={"help": "threads decoding images"})
    explain: bool = field(default=True, metadata={"help": "offer /v1/explain (needs a PyTorch checkpoint)"})

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_queue", "max_body_mb", "max_files", "max_pixels", "timeout_s", "topk",
                    "decode_workers")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be auto, torch, onnxruntime or openvino, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32, bf16, int8-artefact or auto, got {self.precision!r}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def field_parser(f: Field) -> Callable[[str], Any]:
    """How a text value (a command-line flag, an environment variable) becomes the field's type."""
    kind = str(f.type)
    if kind == "bool":
        return lambda raw: raw.strip().lower() in ("1", "true", "yes", "on")
    return {"int": int, "int | None": int, "float": float}.get(kind, str)
