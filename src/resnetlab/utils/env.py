"""The facts that go with every figure: what produced it (commit, dirty tree, command), machine, versions, date.

A result names the commit it was made at only if that commit is the code that ran: the commit is
read when the result is made (``git rev-parse HEAD``), never written by hand, and ``dirty`` says
whether the working tree differed from it (``git status --porcelain``, untracked files included;
paths under :data:`OUTPUT_PATHS` are ignored, since benchmarks write there while they run).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_name", "environment", "git_state", "command_line", "OUTPUT_PATHS"]

# What the benchmarks and experiments write into the checkout while they run: a change there does not
# make the code that produced a result different, so it does not make the tree "dirty".
OUTPUT_PATHS = ("runs/", "benchmarks/results/", "docs/analysis/")

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that is running, as one would type it again: ``python benchmarks/x.py --a 1``,
    ``python -m resnetlab train ...`` or ``resnetlab bench ...`` (a console script by its name)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    first = Path(argv[0])
    if first.name == "__main__.py":  # python -m PACKAGE
        head = ["python", "-m", first.parent.name]
    elif first.suffix == ".py":
        head = ["python", argv[0]]
    elif argv[0] in ("-c", ""):  # python -c / the interactive interpreter
        head = ["python", "-c", "..."]
    else:  # a console script (resnetlab, pytest)
        head = [first.name]
    return " ".join(shlex.quote(a) for a in head + argv[1:])


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _porcelain_path(line: str) -> str:
    path = line[3:]
    if " -> " in path:  # a rename: the new name
        path = path.split(" -> ", 1)[1]
    return path.strip().strip('"')


def git_state(repo: str | os.PathLike | None = None, ignore: Sequence[str] = OUTPUT_PATHS) -> dict[str, Any]:
    """``{"git": short HEAD, "commit": full HEAD, "dirty": bool, "dirty_files": [...]}`` of the checkout
    holding ``repo`` (default: resnetlab's own source); values are None outside a git checkout.

    ``dirty`` is True when ``git status --porcelain`` (modified, staged, deleted and untracked files,
    .gitignore respected) lists any path outside ``ignore``; ``dirty_files`` names them (30 at most).
    """
    cwd = Path(repo) if repo is not None else _PACKAGE_DIR
    head = _git(["rev-parse", "HEAD"], cwd)
    if not head:  # a copy without .git (a remote machine, an sdist): the caller may name the commit
        commit, dirty = os.environ.get("RESNETLAB_GIT_COMMIT"), os.environ.get("RESNETLAB_GIT_DIRTY")
        return {"git": commit[:7] if commit else None, "commit": commit,
                "dirty": None if dirty is None else dirty == "1", "dirty_files": [],
                **({"commit_from": "RESNETLAB_GIT_COMMIT"} if commit else {})}
    top = (_git(["rev-parse", "--show-toplevel"], cwd) or "").strip()
    status = _git(["status", "--porcelain"], Path(top) if top else cwd)
    if status is None:
        return {"git": head.strip()[:7], "commit": head.strip(), "dirty": None, "dirty_files": []}
    changed = [_porcelain_path(ln) for ln in status.splitlines() if ln.strip()]
    changed = [p for p in changed if not any(p == d.rstrip("/") or p.startswith(d) for d in ignore)]
    return {"git": head.strip()[:7], "commit": head.strip(), "dirty": bool(changed), "dirty_files": changed[:30]}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def environment(**extra: Any) -> dict[str, Any]:
    """Date; the code (git commit, ``dirty``, the changed files, the exact ``command``); the machine
    (CPU model, cores, cores this process may use, torch threads, CPU instruction set torch uses, GPU,
    load average); Python / torch / torchvision / numpy / Pillow / resnetlab versions. ``extra`` is
    added as given (e.g. ``libraries={"onnxruntime": ...}``)."""
    import torchvision

    from .. import __version__
    from .hardware import cpu_features

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        isa = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **git_state(), "command": command_line(), "cwd": os.getcwd(),
        "cpu": cpu_name(), "cores": os.cpu_count(), "cores_usable": usable, "torch_threads": torch.get_num_threads(),
        "cpu_isa": isa, "cpu_features": cpu_features(), "load_avg": load,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": _version("numpy"), "pillow": _version("pillow"), "resnetlab": __version__, **extra,
    }
