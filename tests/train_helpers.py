"""Tiny image folders and configs for the training tests: seconds, not minutes."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from resnetlab.train.config import TrainConfig

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 50, 40)}
ROOT = Path(__file__).resolve().parents[1]


def write_tree(root: Path, train: int = 16, test: int = 4, size: int = 8, seed: int = 0, val: int = 0,
               colours: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """root/{train,test}/<colour>/NN.png (and val/ with ``val`` > 0): noisy images whose mean colour gives the
    class (``colours``: name -> RGB; default red, green, blue). Without val/, training holds out a seeded 10 %
    of train/ as its validation split."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val), ("test", test)):
        if not n:
            continue
        for cls, rgb in (colours or COLOURS).items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


@contextmanager
def interrupted_at(n: int, loss: str = "cross_entropy", error: BaseException | None = None) -> Iterator[None]:
    """Within the block, the ``n``-th training call of ``torch.nn.functional.<loss>`` (one whose input needs a
    gradient: evaluation calls do not count) raises ``error`` (TrainingDiverged("interrupted")): a run killed
    after ``n - 1`` optimizer steps, to test that resuming it gives the uninterrupted run."""
    import pytest
    import torch.nn.functional as F

    from resnetlab.train.engine import TrainingDiverged

    real, calls = getattr(F, loss), []

    def wrapped(*args, **kwargs):
        calls.extend([1] if args[0].requires_grad else [])
        if len(calls) == n:
            raise error if error is not None else TrainingDiverged("interrupted")
        return real(*args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(F, loss, wrapped)
    try:
        yield
    finally:
        patch.undo()


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """ResNet-8 (one block per stage) on 8x8 images; FP32 NCHW (amp off) and threads=1, so runs are
    bit-reproducible."""
    values = dict(model="resnet20", model_kwargs={"layers": (1, 1, 1)}, data=str(data), out=str(out),
                  cache_dir=str(out.parent / "cache"), epochs=2, batch_size=12, eval_batch_size=12, lr=0.05,
                  weight_decay=5e-4, schedule="cosine", amp="off", threads=1, workers=0, log_every_s=0.0)
    values.update(overrides)
    return TrainConfig(**values)


def cli_args(cfg: TrainConfig) -> list[str]:
    """The same config as `resnetlab train` flags."""
    args = []
    for key, value in cfg.__dict__.items():
        if key == "model_kwargs":
            args += ["--model-kwargs", *[f"{k}={v!r}".replace(" ", "") for k, v in value.items()]]
        elif value is not None and value != getattr(TrainConfig(), key):
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            args += [f"--{key.replace('_', '-')}", text]
    return args


def run_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m resnetlab ARGS``; with ``check``, fail with its stderr on a non-zero exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "resnetlab", *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=timeout)
    if check:
        assert out.returncode == 0, f"resnetlab {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}"
    return out


def write_prevalence_shift(path: Path, *, sizes=(1000, 500, 800), positives=(0.10, 0.26, 0.375), size: int = 8,
                           amplitude: float = 20.0, seed: int = 0) -> Path:
    """A binary MedMNIST-style .npz whose minority share grows from train to test (10 %, 26 %, 37.5 %), as in
    medical data: positives carry a faint bright square in the middle (separable but noisy, Bayes AUC ~0.92)."""
    rng = np.random.default_rng(seed)
    arrays = {"classes": np.array(["normal", "lesion"])}
    for split, n, share in zip(("train", "val", "test"), sizes, positives):
        y = np.zeros(n, dtype=np.int64)
        y[: round(n * share)] = 1
        y = y[rng.permutation(n)]
        x = rng.normal(120, 40, (n, size, size))
        c = size // 2
        x[y == 1, c - 2:c + 2, c - 2:c + 2] += amplitude
        arrays[f"{split}_images"] = np.clip(x, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = y[:, None]
    np.savez(path, **arrays)
    return path
