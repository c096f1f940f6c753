"""What every benchmark states: the code that ran (commit, dirty tree, command), machine, versions, date,
repeats, medians and spread; and one way to write a result (JSON + Markdown, atomically)."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from resnetlab.utils.env import command_line, environment, git_state  # noqa: F401  (the benchmarks' header facts)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def spread(values: list[float]) -> dict:
    """Median, min, max, mean, sample standard deviation (None for one value), n and the values."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "mean": None, "sd": None, "n": 0, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def code_line(env: dict) -> str:
    """``commit 1a2b3c4 (clean)`` or ``commit 1a2b3c4 + uncommitted changes: a.py, b.py``."""
    commit = env.get("git") or "unknown (not a git checkout)"
    dirty = env.get("dirty")
    if dirty is None:
        state = "" if env.get("git") is None else " (dirty state not recorded)"
    elif dirty:
        files = env.get("dirty_files") or []
        shown = ", ".join(f"`{f}`" for f in files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        state = f" + uncommitted changes ({shown})" if shown else " + uncommitted changes"
    else:
        state = " (clean tree)"
    return f"commit {commit}{state}"


def header_md(env: dict, command: str | None = None) -> str:
    """The provenance lines every results Markdown file starts with."""
    cmd = command or env.get("command") or "?"
    isa = f", {env['cpu_isa']}" if env.get("cpu_isa") else ""
    if env.get("cpu_features"):  # the extensions inference speed turns on: AVX-512, VNNI, bf16, AMX
        isa += " (" + (", ".join(k for k, v in env["cpu_features"].items() if v) or "none of AVX2/512, VNNI, AMX") + ")"
    usable = env.get("cores_usable")
    cores = f"{env['cores']} cores" + (f" ({usable} usable)" if usable and usable != env["cores"] else "")
    load = f", load average {env['load_avg'][0]:.2f} at the start" if env.get("load_avg") else ""
    versions = (f"Python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}"
                + (f", numpy {env['numpy']}" if env.get("numpy") else "")
                + (f", Pillow {env['pillow']}" if env.get("pillow") else "")
                + f", resnetlab {env['resnetlab']}"
                + "".join(f", {k} {v}" for k, v in (env.get("libraries") or {}).items()))
    lines = [f"- command: `{cmd}`",
             f"- code: {code_line(env)}",
             f"- date: {env['date']}",
             f"- machine: {env['cpu']}{isa}, {cores}, torch threads {env['torch_threads']}{load}"
             + (f", GPU {env['gpu']}" if env.get("gpu") else ""),
             f"- versions: {versions}"]
    return "\n".join(lines)


def fmt_spread(s: dict, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """``12.3 [11.0, 13.1]`` (median [min, max]); one value alone without brackets."""
    if not s or s.get("median") is None:
        return "–"
    f = lambda v: f"{scale * v:.{digits}f}"  # noqa: E731
    return f"{f(s['median'])}{unit}" if s["n"] == 1 else f"{f(s['median'])}{unit} [{f(s['min'])}, {f(s['max'])}]"


def fmt_mean_sd(s: dict, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """``43.70 ± 1.20 % (n=3)``; one value alone as ``43.70 % (n=1)``."""
    if not s or s.get("mean") is None:
        return "–"
    sd = "" if s.get("sd") is None or math.isnan(s["sd"]) else f" ± {scale * s['sd']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}{sd}{unit} (n={s['n']})"


def write(name: str, payload: dict, markdown: str, results: Path = RESULTS) -> None:
    """``results/NAME.json`` and ``NAME.md``, each written atomically; the JSON always carries ``env``."""
    from resnetlab.utils.fileio import atomic_write_text

    if "env" not in payload:
        payload = {"env": environment(), **payload}
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / f"{name}.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(results / f"{name}.md", markdown)
    print(markdown)
    print(f"wrote {results / name}.json and .md", file=sys.stderr)


def jsonable(obj: Any) -> Any:
    """Paths and other objects as strings, recursively (for argparse namespaces and configs)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
