"""What every benchmark states: machine, versions, date, repeats, medians and spread."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from resnetlab.utils.env import environment  # noqa: F401  (the benchmarks' header facts)

RESULTS = Path(__file__).resolve().parent / "results"


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
