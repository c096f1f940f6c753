"""What the hardware does natively, and the precision that follows from it (``amp="auto"``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["cpu_has_bf16", "cpu_features", "resolve_amp", "AMP_CHOICES", "CPU_FEATURES"]

# the instruction-set extensions inference speed turns on (Linux /proc/cpuinfo names)
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX): where bf16 pays off on a CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@lru_cache(maxsize=1)
def cpu_features() -> dict[str, bool]:
    """Which of :data:`CPU_FEATURES` this CPU has (all False where /proc/cpuinfo cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {f: False for f in CPU_FEATURES}
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    return {f: f in flags for f in CPU_FEATURES}


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """``"auto"`` -> "bf16" on CUDA and on CPUs with native bf16, else "off"; other values unchanged
    ("none" is read as "off")."""
    amp = "off" if amp == "none" else amp
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp != "auto":
        return amp
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if kind == "cpu" and cpu_has_bf16() else "off"
