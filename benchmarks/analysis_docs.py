"""Regenerate docs/analysis/: the gradient-flow and degradation reports from real runs here.

    python benchmarks/analysis_docs.py [--data PATH] [--budget-minutes 28] [--steps 50]

Runs `resnetlab gradflow` (resnet18, plain18, resnet56, plain56 on CIFAR-10) and `resnetlab
degradation` (depths 20, 32, 56, default budget), then copies each run's report.md and plots into
docs/analysis/<experiment>/, so the documentation shows what this machine measured.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--budget-minutes", type=float, default=28.0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--only", default="gradflow,degradation")
    args = p.parse_args()
    data = ["--data", args.data] if args.data else []
    jobs = {"gradflow": ["gradflow", "--models", "resnet18,plain18,resnet56,plain56", "--steps", str(args.steps)],
            "degradation": ["degradation", "--depths", "20,32,56", "--budget-minutes", str(args.budget_minutes)]}
    for name in args.only.split(","):
        run_dir = ROOT / "runs" / f"docs-{name}"
        subprocess.run([sys.executable, "-m", "resnetlab", *jobs[name], *data, "--out", str(run_dir)], check=True,
                       cwd=ROOT)
        dest = ROOT / "docs" / "analysis" / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in run_dir.iterdir():
            if f.suffix in (".md", ".png", ".csv", ".json"):
                shutil.copy2(f, dest / f.name)
        print(f"docs/analysis/{name}/report.md updated", file=sys.stderr)


if __name__ == "__main__":
    main()
