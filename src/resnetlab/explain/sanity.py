"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A map that explains the *model* must change when the model's weights are destroyed. Model-parameter
randomisation re-initialises the net cascading from the head down, one stage at a time, and measures
how much each image's map still agrees with the trained model's (Spearman rank correlation of the maps
at the layer's resolution; a map that goes flat counts as 0, so collapsing maps cannot hide behind the
few that survive). Data-label randomisation compares with a model trained on shuffled labels
(``resnetlab train --shuffle-labels``).

Flag rule (fixed here, before any measurement): a method is flagged when, with the head and every stage
down to the one holding the explained layer randomised, the mean rank correlation over images is still
>= :data:`SURVIVES` -- its maps then depend on the input's structure more than on what the model learnt.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .cam import cam_maps

__all__ = ["SURVIVES", "cascade_steps", "rank_correlation", "cascading_randomization", "label_randomization"]

SURVIVES = 0.5


def _agreement(trained: Tensor, other: Tensor) -> Tensor:
    """Rank correlation per image; where only ``other`` is flat, 0 (nothing of the trained map is left),
    where the trained map is flat, NaN (nothing to compare)."""
    rho = rank_correlation(trained, other)
    flat = trained.flatten(1).amax(1) == trained.flatten(1).amin(1)
    return torch.where(rho.isnan() & ~flat, torch.zeros_like(rho), rho)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho per row of two (N, ...) tensors (average ranks for ties); NaN where a map is flat."""
    def ranks(t: Tensor) -> Tensor:
        flat = t.flatten(1).double().numpy()
        out = np.empty_like(flat)
        for i, row in enumerate(flat):
            order = np.argsort(row, kind="mergesort")
            r = np.empty(len(row))
            r[order] = np.arange(len(row), dtype=np.float64)
            _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
            sums = np.bincount(inverse, weights=r)
            out[i] = (sums / counts)[inverse]  # ties share their mean rank
        return torch.from_numpy(out)
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp(min=1e-300), torch.full_like(den, float("nan")))


def cascade_steps(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(step name, module names to re-initialise) from the head down: the classifier, then each feature
    stage of a resnetlab model's trunk, last first; for another module, its top-level children, last first."""
    if hasattr(model, "trunk") and getattr(model, "feature_info", None):
        trunk = [n for n, _ in model.trunk()]
        ends = [f.module for f in model.feature_info]
        stages, current = [], []
        for name in trunk:
            current.append(name)
            if name in ends:
                stages.append(current)
                current = []
        if current:
            stages[-1] += current if stages else []
            stages = stages or [current]
        # the head: every child with parameters outside the trunk (VGG's whole classifier, not its last layer)
        head = [n for n, m in model.named_children() if next(m.parameters(), None) is not None
                and not any(t == n or t.startswith(n + ".") for t in trunk)]
        named = [("stem" if i == 0 and len(s) > 1 else s[-1], s) for i, s in enumerate(stages)]
        return [(getattr(model, "classifier_name", "fc").split(".")[0], head)] + list(reversed(named))
    children = [n for n, _ in model.named_children()]
    return [(n, [n]) for n in reversed(children)]


def _reinit(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def cascading_randomization(model: nn.Module, layer_name: str, x: Tensor, targets: Tensor, method: str, *,
                            seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Per cascade step: the mean (and per-image) rank correlation between the trained model's maps and
    the maps after re-initialising everything from the head down to that step; and the flag."""
    model.eval()
    modules = dict(model.named_modules())
    base, _, targets = cam_maps(model, modules[layer_name], x, targets, method, batch_size=batch_size)
    broken = copy.deepcopy(model).eval()
    broken_modules = dict(broken.named_modules())
    steps, flagged_at = [], None
    with torch.random.fork_rng(devices=[]):  # seeded re-initialisation, the caller's RNG left as it was
        torch.manual_seed(seed)
        for _, names in cascade_steps(model):
            for name in names:
                _reinit(broken_modules[name])
            steps.append({k: v.clone() for k, v in broken.state_dict().items()})  # a copy per step
    snapshots, steps = steps, []
    for (step, names), state in zip(cascade_steps(model), snapshots):
        broken.load_state_dict(state)
        maps, _, _ = cam_maps(broken, broken_modules[layer_name], x, targets, method, batch_size=batch_size)
        rho = _agreement(base, maps)
        steps.append({"step": step, "mean_rho": float(np.nanmean(rho.numpy())) if (~rho.isnan()).any() else None,
                      "flat_maps": _flat(maps), "rho": [None if np.isnan(v) else float(v) for v in rho.tolist()]})
        if flagged_at is None and (layer_name == step or layer_name.startswith(step + ".") or
                                   any(layer_name == n or layer_name.startswith(n + ".") for n in names)):
            flagged_at = len(steps) - 1
    at = steps[flagged_at if flagged_at is not None else -1]
    survives = at["mean_rho"] is not None and at["mean_rho"] >= SURVIVES
    return {"method": method, "layer": layer_name, "steps": steps, "checked_at": at["step"],
            "survives_randomisation": survives, "rule": f"flagged when mean rho >= {SURVIVES} with the head and "
            f"every stage down to {at['step']} re-initialised"}


def label_randomization(model: nn.Module, shuffled: nn.Module, layer_name: str, x: Tensor,
                        targets: Tensor | None, method: str, *, batch_size: int = 64) -> dict[str, Any]:
    """Rank correlation between the maps of a model and of the same architecture trained on shuffled
    labels, for the same images and targets: a faithful method's maps should differ."""
    model.eval()
    shuffled.eval()
    a, _, targets = cam_maps(model, dict(model.named_modules())[layer_name], x, targets, method,
                             batch_size=batch_size)
    b, _, _ = cam_maps(shuffled, dict(shuffled.named_modules())[layer_name], x, targets, method,
                       batch_size=batch_size)
    rho = _agreement(a, b)
    ok = ~rho.isnan()
    return {"method": method, "mean_rho": float(rho[ok].mean()) if ok.any() else None, "flat_maps": _flat(b),
            "rho": [None if np.isnan(v) else float(v) for v in rho.tolist()]}


def _flat(maps: Tensor) -> int:
    """How many maps are constant (they single out nothing; their correlation counts as 0)."""
    return int((maps.flatten(1).amax(1) == maps.flatten(1).amin(1)).sum())

