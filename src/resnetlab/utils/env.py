"""The facts that go with every figure: machine, library versions, date."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch

__all__ = ["cpu_name", "environment"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(**extra) -> dict:
    """Date, CPU, cores, torch threads, GPU, Python / torch / torchvision / resnetlab versions, git."""
    import torchvision

    from .. import __version__

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "resnetlab": __version__, "git": _git_rev(), **extra,
    }
