"""The run directory's files: claiming the folder, per-epoch metrics, the step log and the summary.

A run writes ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, rewritten whole and atomically
from the run's history, so a resumed run holds exactly the checkpoint's rows), TensorBoard event files
(``torch.utils.tensorboard.SummaryWriter``; a resumed run purges the steps it redoes), ``steps.jsonl``
(the training loss every N steps) and ``summary.json``. Only the main process writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from ..utils.fileio import atomic_write_text

__all__ = ["RUN_FILES", "CSV_KEYS", "run_files", "claim_run_dir", "RunLog"]

# Everything a training run writes into its folder (besides config.yaml, which every run rewrites).
RUN_FILES = ("metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "summary.json", "train.log", "steps.jsonl")
EVENTS = "events.out.tfevents.*"
CSV_KEYS = ["epoch", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "val_balanced_accuracy", "val_auc",
            "ema_top1", "lr", "img_per_s", "wall_time_s"]


def run_files(run_dir: str | os.PathLike) -> list[Path]:
    """The files a training run left in ``run_dir`` (checkpoint temp files of a killed run included)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    found += sorted(run_dir.glob(EVENTS))
    found += sorted(p for name in ("last.pt", "best.pt") for p in run_dir.glob(f".{name}.*.tmp"))
    return found


def claim_run_dir(run_dir: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> list[Path]:
    """Make ``run_dir`` ready for a run; returns the files ``overwrite`` removed.

    A folder holding another run's results (metrics, events, checkpoints, summary, step log) is refused
    (ValueError) unless the run resumes it or ``overwrite`` is given; overwrite removes only the files a run
    writes (:data:`RUN_FILES`, event files, checkpoint temp files), never others. A folder that does not
    exist, or holds none of them (or only the train.log of an attempt that got no further), is fine.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError(f"resume and overwrite contradict each other: resuming {run_dir} continues its run")
    found = [] if resume else run_files(run_dir)
    results = [p for p in found if p.name != "train.log" and not p.name.endswith(".tmp")]
    if results and not overwrite:
        names = ", ".join(p.name for p in results[:4]) + (", ..." if len(results) > 4 else "")
        raise ValueError(f"the run folder {run_dir} already holds a training run ({names}); pass --resume {run_dir} "
                         f"to continue it, or --overwrite to replace it (Python: fit(..., resume=...) or "
                         f"overwrite=True), or choose another --out")
    removed = found if overwrite else []
    for path in removed:
        path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return removed


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


class RunLog:
    """The writers of one run's folder (main process only). ``purge_step``: the first step a resumed run
    logs anew; TensorBoard hides what earlier event files logged from that step on."""

    def __init__(self, run_dir: str | os.PathLike, *, purge_step: int | None = None) -> None:
        self.run_dir, self.purge_step = Path(run_dir), purge_step
        self.tb: SummaryWriter | None = None  # opened with the first scalars: a run stopped before has no events

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """metrics.jsonl and metrics.csv: exactly ``history``, one row per epoch (each file replaced whole)."""
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        atomic_write_text(self.run_dir / "metrics.csv", _csv_text(history))

    def add_scalars(self, values: dict[str, Any], step: int) -> None:
        if self.tb is None:
            self.tb = SummaryWriter(str(self.run_dir), purge_step=self.purge_step)
        for key, value in values.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.tb.add_scalar(key, float(value), step)
        self.tb.flush()

    def log_step(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / "steps.jsonl", "a") as f:  # appended: one short line per logged step
            f.write(json.dumps(row) + "\n")

    def drop_steps_after(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint: forget what steps.jsonl logged of them."""
        path = self.run_dir / "steps.jsonl"
        if not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        keep = [ln for ln in lines if ln.endswith("\n") and json.loads(ln)["step"] <= step]
        if keep != lines:
            atomic_write_text(path, "".join(keep))

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
