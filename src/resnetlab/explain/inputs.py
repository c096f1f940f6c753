"""The images of a data split, as the run's own evaluation reads them, for the gallery and faithfulness."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch

from ..eval import TrainedModel
from ..eval.batches import eval_batches, open_split

__all__ = ["SplitInputs", "load_split_inputs"]


class SplitInputs:
    """Up to ``limit`` preprocessed images of a split in batches (a fixed seeded subset, the run's own
    preprocessing); unreadable files are skipped and counted in :attr:`skipped`."""

    def __init__(self, trained: TrainedModel, data: str | os.PathLike | None, split: str, limit: int | None, *,
                 batch_size: int = 64, progress: bool = False) -> None:
        if trained.task == "multilabel":
            raise ValueError(f"{trained.path} is a multi-label model: the gallery and the faithfulness scores need "
                             "one true class per image; explain its images with `resnetlab explain IMAGE...` or "
                             "resnetlab.explain(...) instead")
        self.ds = open_split(trained, data, split, progress=progress)
        self.n = len(self.ds) if limit is None else min(limit, len(self.ds))
        self.batches = eval_batches(self.ds, trained.preprocess, batch_size=batch_size,
                                    limit_batches=math.ceil(self.n / batch_size),
                                    seed=trained.config.get("seed", 0))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seen = 0
        for x, y, *_ in self.batches.epoch(0):
            x, y = x[: self.n - seen], y[: self.n - seen]
            if len(x) == 0:
                break
            seen += len(x)
            yield x, y

    @property
    def skipped(self) -> int:
        return len(getattr(self.ds, "skipped", [])) + self.batches.epoch_bad


def load_split_inputs(trained: TrainedModel, data: str | os.PathLike | None, split: str, limit: int, *,
                      batch_size: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All of :class:`SplitInputs` at once: inputs (N, C, H, W), labels (N,), and the skipped count."""
    inputs = SplitInputs(trained, data, split, limit, batch_size=batch_size, progress=progress)
    xs, ys = zip(*inputs) if inputs.n else ((), ())
    if not xs:
        raise ValueError(f"no readable images in the {split} split of {data or trained.path}")
    return torch.cat(xs), torch.cat(ys), inputs.skipped
