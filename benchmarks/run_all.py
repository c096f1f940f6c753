"""Regenerate every results file with one command (`make results`), or list which are stale.

Each job runs one benchmark script (or `resnetlab bench`) in its own process, in this order, and
every file it writes names the commit and dirty state it was made at (resnetlab.utils.env):

| job                      | writes                                                        | minutes (2 cores) |
|--------------------------|---------------------------------------------------------------|-------------------|
| train_throughput         | benchmarks/results/train_throughput.{json,md}                 | ~80 (8 seeds)     |
| cifar10_time_to_accuracy | benchmarks/results/cifar10_time_to_accuracy.{json,md,png}     | ~75 (54 + 18)     |
|                          | and runs/bench/resnet18-fast, the checkpoint inference_cpu reads |                |
| inference_cpu            | benchmarks/results/inference_cpu.{json,md}                    | ~25               |
| bench_models             | benchmarks/results/bench_models.{json,md,csv,png}             | ~30               |
| analysis_docs            | docs/analysis/ (README.md, gradflow/, degradation/)           | ~35 (28 budget;   |
|                          |                                                               | --plan-only says) |
| medical_synthetic        | benchmarks/results/medical_synthetic.{json,md,png}            | ~12               |
| transfer_cifar           | benchmarks/results/transfer_cifar.{json,md,png}               | ~20               |
| medmnist_fast            | benchmarks/results/medmnist_fast.{json,md}                    | ~22               |
| explain                  | benchmarks/results/explain.{json,md} and explain/ (curves, gallery) | ~30         |
| explain_residual         | docs/analysis/explain/ (ResNet-20 vs Plain-20, shuffled labels)| ~25 (3 trainings)  |
| compress                 | benchmarks/results/compress.{json,md,png} (3 ratios, QAT)     | ~45               |
| compress_resnet56        | benchmarks/results/compress_resnet56.{json,md}                | ~60 (2 arms)      |

About 7 hours in all on the 2-core machine the published results come from.

    python benchmarks/run_all.py                       # everything, in order
    python benchmarks/run_all.py --only bench_models   # one job (comma-separated for several)
    python benchmarks/run_all.py --list                # every results file, its commit, and whether src/ moved
    python benchmarks/run_all.py --dry-run             # the commands, not run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "analysis"
SHARED_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
BENCH_TABLE = "runs/bench-table"
CHECKPOINT = "runs/bench/resnet18-fast"


@dataclass
class Job:
    name: str
    command: Callable[[str], list[str]]  # data path -> argv (run in the repository root)
    writes: list[str]  # paths relative to the root (files, or folders for docs)
    minutes: float
    after: Callable[[], None] | None = None  # post-processing (bench_models: copy into results/)
    needs: list[str] = field(default_factory=list)  # paths that must exist first (made by an earlier job)


def _py(script: str, *args: str) -> list[str]:
    return [sys.executable, f"benchmarks/{script}", *args]


def copy_bench_table(src: Path = ROOT / BENCH_TABLE, results: Path = RESULTS) -> None:
    """`resnetlab bench` writes bench.{json,csv,md,png} into its --out; the results keep them as bench_models.*."""
    env = json.loads((src / "bench.json").read_text()).get("env", {})
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import code_line

    for ext in ("json", "csv", "png"):
        shutil.copy2(src / f"bench.{ext}", results / f"bench_models.{ext}")
    md = (src / "bench.md").read_text().replace("](bench.png)", "](bench_models.png)")
    head, _, rest = md.partition("\n\n")
    note = (f"(Copied here from `{BENCH_TABLE}/` as `bench_models.*` by `benchmarks/run_all.py --only bench_models`; "
            f"measured at {code_line(env)}.)")
    tmp = results / ".bench_models.md.tmp"
    tmp.write_text(f"{head}\n\n{note}\n\n{rest}")
    os.replace(tmp, results / "bench_models.md")


JOBS = [
    # 8 seeds: with 3, the last iterate's seed noise read as a gap (see the results file's R2/R3)
    Job("train_throughput", lambda d: _py("train_throughput.py", "--data", d, "--steps", "200",
                                          "--seeds", "0,1,2,3,4,5,6,7"),
        ["benchmarks/results/train_throughput.json", "benchmarks/results/train_throughput.md"], 80),
    Job("cifar10_time_to_accuracy",
        lambda d: _py("cifar10_time_to_accuracy.py", "--data", d, "--fresh",
                      "--run", "resnet18-fast=cifar10-resnet18-fast",
                      "--run", "r20-short=benchmarks/recipes/cifar10-resnet20-short.yaml"),
        [f"benchmarks/results/cifar10_time_to_accuracy.{e}" for e in ("json", "md", "png")], 75),
    Job("inference_cpu", lambda d: _py("inference_cpu.py", "--checkpoint", CHECKPOINT, "--data", d,
                                       "--repeats", "5", "--seconds", "3"),
        ["benchmarks/results/inference_cpu.json", "benchmarks/results/inference_cpu.md"], 25, needs=[CHECKPOINT]),
    # the command bench_models.* were made with (their JSON's "command"), then copied into results/
    Job("bench_models", lambda d: [sys.executable, "-m", "resnetlab", "bench", "--models",
                                   "resnet18,vgg16,inception_v3,xception", "--backends",
                                   "eager,channels_last,compile,bf16,int8,onnxruntime,openvino",
                                   "--repeats", "2", "--seconds", "2", "--out", BENCH_TABLE],
        [f"benchmarks/results/bench_models.{e}" for e in ("json", "md", "csv", "png")], 30, after=copy_bench_table),
    Job("analysis_docs", lambda d: _py("analysis_docs.py", "--data", d),
        ["docs/analysis/"], 35),
    Job("medical_synthetic", lambda d: _py("medical_synthetic.py", "--seeds", "0,1,2"),
        [f"benchmarks/results/medical_synthetic.{e}" for e in ("json", "md", "png")], 12),
    Job("transfer_cifar", lambda d: _py("transfer_cifar.py", "--data", d, "--seeds", "0,1"),
        [f"benchmarks/results/transfer_cifar.{e}" for e in ("json", "md", "png")], 20),
    Job("medmnist_fast", lambda d: _py("medmnist_fast.py"),
        [f"benchmarks/results/medmnist_fast.{e}" for e in ("json", "md")], 22),
    Job("explain", lambda d: _py("explain_bench.py", "--checkpoint", CHECKPOINT, "--data", d),
        ["benchmarks/results/explain.json", "benchmarks/results/explain.md", "benchmarks/results/explain/"], 30,
        needs=[CHECKPOINT]),
    Job("explain_residual", lambda d: _py("explain_residual.py", "--data", d),
        ["docs/analysis/explain/"], 25),
    Job("compress", lambda d: _py("compress_cifar.py", "--data", d, "--checkpoint", CHECKPOINT),
        [f"benchmarks/results/compress.{e}" for e in ("json", "md", "png")], 45, needs=[CHECKPOINT]),
    Job("compress_resnet56", lambda d: _py("compress_resnet56.py", "--data", d, "--epochs", "8"),
        [f"benchmarks/results/compress_resnet56.{e}" for e in ("json", "md")], 60),
    Job("serve", lambda d: _py("serve_load.py", "--data", d),
        [f"benchmarks/results/serve.{e}" for e in ("json", "md", "png")], 10),
    Job("nuclei", lambda d: _py("nuclei.py", "--epochs", "40", "--det-epochs", "40"),
        [f"benchmarks/results/nuclei.{e}" for e in ("json", "md", "png")], 20),
    Job("backbones", lambda d: _py("backbones.py", "--repeats", "3", "--seconds", "6"),
        ["benchmarks/results/backbones.json", "benchmarks/results/backbones.md"], 6),
    Job("predictor_overhead", lambda d: _py("predictor_overhead.py", "--rounds", "5"),
        ["benchmarks/results/predictor_overhead.json", "benchmarks/results/predictor_overhead.md"], 4),
    Job("runtime_rss", lambda d: _py("runtime_rss.py", "--repeats", "3"),
        ["benchmarks/results/runtime_rss.json", "benchmarks/results/runtime_rss.md"], 3),
]


# --- --list: what each results file says it was made at ---------------------------------------------------
def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)


def _commits_in(obj, found: dict[str, dict]) -> None:
    """Every {"git": <hash>, ...} in a JSON document (top-level env, per-run envs, provenance blocks)."""
    if isinstance(obj, dict):
        g = obj.get("git")
        if isinstance(g, str) and re.fullmatch(r"[0-9a-f]{7,40}", g):
            prev = found.setdefault(g, {"dirty": obj.get("dirty"), "date": obj.get("date")})
            if prev.get("dirty") is None and obj.get("dirty") is not None:
                prev["dirty"] = obj["dirty"]
        for v in obj.values():
            _commits_in(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _commits_in(v, found)


_MD_PATTERNS = (r"commit ([0-9a-f]{7,40})\b", r"\bgit:? ([0-9a-f]{7,40})\b", r"resnetlab [0-9.]+ \(([0-9a-f]{7,40})\)",
                r"resnetlab [0-9.]+;? \(([0-9a-f]{7,40})\)")


def commits_named(path: Path) -> dict[str, dict]:
    """The commits a results file names: its own (JSON, Markdown), else its sibling JSON's (PNG, CSV)."""
    found: dict[str, dict] = {}
    if path.suffix == ".json":
        try:
            _commits_in(json.loads(path.read_text()), found)
        except (OSError, ValueError):
            pass
    elif path.suffix == ".md":
        text = path.read_text(errors="replace")
        for pat in _MD_PATTERNS:
            for c in re.findall(pat, text):
                found.setdefault(c, {"dirty": None, "date": None})
        for sibling in (path.with_suffix(".json"), path.parent / "provenance.json"):
            if sibling.is_file():  # the JSON knows the dirty flags
                for c, facts in commits_named(sibling).items():
                    if c in found and found[c].get("dirty") is None:
                        found[c] = facts
    if not found:  # a PNG / CSV, or a JSON without provenance: what its sibling JSON or its folder's report names
        for sibling in (path.with_suffix(".json"), path.parent / "provenance.json", path.parent / "report.md"):
            if sibling != path and sibling.is_file():
                found = commits_named(sibling)
                if found:
                    break
    return found


def src_changed_since(commit: str) -> str:
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        return "unknown commit"
    rc = _git("diff", "--quiet", commit, "HEAD", "--", "src/").returncode
    return {0: "no", 1: "**yes**"}.get(rc, "?")


def results_files() -> list[Path]:
    files = sorted(p for p in RESULTS.iterdir() if p.is_file() and not p.name.startswith("."))
    if DOCS.is_dir():
        files += sorted(p for p in DOCS.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".png", ".csv"))
    return files


def job_of(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    for job in JOBS:
        if any(rel == w or rel.startswith(w.rstrip("/") + "/") for w in job.writes):
            return job.name
    return "(no job)"


def list_results() -> int:
    head = _git("rev-parse", "--short", "HEAD").stdout.strip()
    print(f"HEAD {head}; 'src/ changed' = `git diff --quiet COMMIT HEAD -- src/` fails; dirty = the tree differed "
          "from the commit when the file was made (None: not recorded)\n")
    print("| file | job | commit(s) named | dirty | src/ changed since |\n|---|---|---|---|---|")
    stale = 0
    for path in results_files():
        commits = commits_named(path)
        rel = path.relative_to(ROOT).as_posix()
        if not commits:
            print(f"| {rel} | {job_of(path)} | none | | **unknown** |")
            stale += 1
            continue
        changed = [src_changed_since(c) for c in commits]
        stale += any(c != "no" for c in changed)
        print(f"| {rel} | {job_of(path)} | {', '.join(commits)} | "
              f"{', '.join(str(f.get('dirty')) for f in commits.values())} | {', '.join(changed)} |")
    print(f"\n{stale} file(s) name a commit whose src/ differs from HEAD's (or name none): rerun their job "
          "(`python benchmarks/run_all.py --only JOB`).")
    return 0


# --- running -----------------------------------------------------------------------------------------------
def resolve_data(data: str | None) -> str:
    """--data, else $RESNETLAB_DATA, else the shared CIFAR-10 archive beside the checkout, else the cache."""
    from resnetlab.data import resolve_data_root

    if data is None and not os.environ.get("RESNETLAB_DATA") and SHARED_DATA.is_file():
        data = str(SHARED_DATA)
    return str(resolve_data_root(data))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="CIFAR-10 folder or archive (default: $RESNETLAB_DATA, ../shared/data, the cache)")
    p.add_argument("--only", help=f"comma-separated jobs: {', '.join(j.name for j in JOBS)}")
    p.add_argument("--list", action="store_true", help="every results file with the commit it names; no runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--keep-going", action="store_true", help="run the remaining jobs after one fails")
    args = p.parse_args()
    if args.list:
        return list_results()
    names = [n.strip() for n in args.only.split(",")] if args.only else [j.name for j in JOBS]
    unknown = [n for n in names if n not in {j.name for j in JOBS}]
    if unknown:
        p.error(f"unknown job(s) {unknown}; choose from {', '.join(j.name for j in JOBS)}")
    jobs = [j for j in JOBS if j.name in names]
    data = "DATA" if args.dry_run else resolve_data(args.data)
    total = sum(j.minutes for j in jobs)
    print(f"{len(jobs)} job(s), about {total:.0f} min on 2 cores; data {data}", file=sys.stderr)
    failed, t_all = [], time.perf_counter()
    for job in jobs:
        argv = job.command(data)
        shown = " ".join(shlex.quote(a) for a in ["python" if a == sys.executable else a for a in argv])
        print(f"\n=== {job.name} (about {job.minutes:.0f} min): {shown}", file=sys.stderr, flush=True)
        if args.dry_run:
            continue
        missing = [n for n in job.needs if not (ROOT / n).exists()]
        if missing:
            print(f"=== {job.name}: skipped, {missing} missing (run the job that makes it first)", file=sys.stderr)
            failed.append(job.name)
            if not args.keep_going:
                break
            continue
        t = time.perf_counter()
        rc = subprocess.run(argv, cwd=ROOT).returncode
        if rc == 0 and job.after is not None:
            job.after()
        print(f"=== {job.name}: {'done' if rc == 0 else f'FAILED (exit {rc})'} in "
              f"{(time.perf_counter() - t) / 60:.1f} min", file=sys.stderr, flush=True)
        if rc != 0:
            failed.append(job.name)
            if not args.keep_going:
                break
    if not args.dry_run:
        print(f"\nall done in {(time.perf_counter() - t_all) / 60:.1f} min"
              + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
