"""What every benchmark states: machine, versions, date, repeats, medians and spread."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict:
    import torchvision

    import resnetlab

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        rev = ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "resnetlab": resnetlab.__version__, "git": rev,
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def header_md(env: dict, command: str) -> str:
    lines = [f"- command: `{command}`", f"- date: {env['date']}, resnetlab {env['resnetlab']} ({env['git']})",
             f"- machine: {env['cpu']}, {env['cores']} cores, torch threads {env['torch_threads']}"
             + (f", GPU {env['gpu']}" if env.get("gpu") else ""),
             f"- versions: Python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}"]
    return "\n".join(lines)


def write(name: str, payload: dict, markdown: str, results: Path = RESULTS) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (results / f"{name}.md").write_text(markdown)
    print(markdown)
