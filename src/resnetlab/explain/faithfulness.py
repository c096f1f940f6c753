"""Is a map faithful to the model? Perturb the input in the order the map ranks the pixels and watch the
target's probability.

- Deletion / insertion (Petsiuk et al. 2018, RISE): remove the most salient pixels first (replaced by the
  data mean, 0 after normalisation) and the probability should fall fast (low deletion AUC); insert them
  first into a blurred copy and it should rise fast (high insertion AUC).
- ROAD, remove and debias (Rong et al. 2022): remove a fraction of pixels, most relevant first (MoRF,
  lower is better) or least relevant first (LeRF, higher is better), and fill them by noisy linear
  imputation from their neighbours, so the model cannot read the shape of the hole. ``road`` is the
  mean of LeRF - MoRF over the fractions (higher is better; twice pytorch-grad-cam's ROADCombined,
  which halves it).
- Average Drop and Increase in Confidence (Chattopadhyay et al. 2018, Grad-CAM++ §5.1): show the model
  only what the map shows (the normalised input times the map) and measure the relative fall of the
  target's probability, max(0, p - p_masked) / p (lower is better), and whether it rose (higher is
  better); the numbers torch-cam publishes, so ours read against theirs.

Scores are per image, so methods can be compared image by image against a random map and a centre-bias
map: :func:`compare` gives seeded bootstrap intervals of the paired differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .cam import normalize_maps

__all__ = ["METRICS", "HIGHER_IS_BETTER", "baseline_maps", "deletion_insertion", "noisy_linear_impute", "road",
           "average_drop", "pixel_order", "score_maps", "compare", "bootstrap_mean"]

METRICS = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road", "average_drop", "confidence_increase")
HIGHER_IS_BETTER = {"deletion_auc": False, "insertion_auc": True, "road_morf": False, "road_lerf": True,
                    "road": True, "average_drop": False, "confidence_increase": True}
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def baseline_maps(kind: str, n: int, size: tuple[int, int], seed: int = 0,
                  grid: tuple[int, int] | None = None) -> Tensor:
    """``random``: uniform noise per image (seeded), drawn on ``grid`` (the explained layer's resolution)
    and upsampled as the maps are, so it is as smooth as they are: pixel-level noise would scatter its
    deletions over the whole image and wreck any prediction, flattering itself on deletion.
    ``centre``: a Gaussian bump in the middle (sigma a quarter of the side), the "objects sit in the
    middle" prior any map must beat."""
    h, w = size
    if kind == "random":
        noise = torch.rand(n, *(grid or size), generator=torch.Generator().manual_seed(seed))
        return noise if grid is None else F.interpolate(noise.unsqueeze(1), size=size, mode="bilinear",
                                                        align_corners=False).squeeze(1)
    if kind == "centre":
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        return torch.exp(-(xx ** 2 + yy ** 2) / (2 * 0.5 ** 2)).expand(n, h, w).clone()
    raise ValueError(f"baseline must be 'random' or 'centre', got {kind!r}")


def pixel_order(maps: Tensor, seed: int = 0) -> Tensor:
    """Pixel indices per image, most salient first; ties (a CAM is exactly 0 over large areas) in a seeded
    random order, not raster order, which would remove them as solid blocks from one corner and hand the
    model the shape of the hole."""
    flat = maps.flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(flat.shape[1], generator=g) for _ in range(len(flat))])
    return shuffle.gather(1, torch.argsort(-flat.gather(1, shuffle), dim=1, stable=True))


@torch.no_grad()
def _probs(model: nn.Module, x: Tensor, targets: Tensor, batch_size: int) -> Tensor:
    out = [model(x[s:s + batch_size]).float().softmax(1) for s in range(0, len(x), batch_size)]
    return torch.cat(out).gather(1, targets.view(-1, 1).to(x.device)).squeeze(1).cpu()


def _blur(x: Tensor) -> Tensor:
    """A strong Gaussian blur (sigma a tenth of the side: 22 px at 224, stronger than the sigma 5 of RISE's
    code, so a 32 px CIFAR image keeps no readable object), the start of the insertion curve."""
    side = x.shape[-1]
    sigma = max(side / 10, 1.0)
    k = int(2 * round(3 * sigma) + 1)
    t = torch.arange(k, dtype=x.dtype) - k // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).to(x.device)
    c = x.shape[1]
    pad = k // 2
    y = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(F.pad(y, (0, 0, pad, pad), mode="replicate"), g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def deletion_insertion(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, *, steps: int = 16,
                       batch_size: int = 64, seed: int = 0) -> dict[str, Tensor]:
    """Per image: the deletion and insertion curves ((N, steps + 1) target probabilities) and their AUCs
    (trapezoid over the fraction of pixels, in [0, 1])."""
    n, _, h, w = x.shape
    order = pixel_order(maps, seed)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w).expand(n, -1))
    blurred = _blur(x)
    curves = {"deletion": torch.empty(n, steps + 1), "insertion": torch.empty(n, steps + 1)}
    for i in range(n):
        k = torch.round(torch.linspace(0, h * w, steps + 1)).long()
        top = (ranks[i].view(1, h, w) < k.view(-1, 1, 1)).unsqueeze(1).to(x.device)  # (steps+1, 1, h, w)
        deleted = torch.where(top, torch.zeros_like(x[i]), x[i])
        inserted = torch.where(top, x[i], blurred[i])
        t = targets[i].expand(steps + 1)
        curves["deletion"][i] = _probs(model, deleted, t, batch_size)
        curves["insertion"][i] = _probs(model, inserted, t, batch_size)
    auc = {f"{k}_auc": torch.trapezoid(v, dx=1.0 / steps, dim=1) for k, v in curves.items()}
    return {**curves, **auc}


def noisy_linear_impute(image: Tensor, removed: Tensor, *, noise: float = 0.01,
                        generator: torch.Generator | None = None) -> Tensor:
    """Fill the ``removed`` (H, W) pixels of ``image`` (C, H, W) so each is the weighted mean of its 8
    neighbours (edge neighbours 1/6, corners 1/12, as in ROAD), solved jointly as one sparse linear
    system (scipy), plus Gaussian noise of std ``noise``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    rm = removed.cpu().numpy().astype(bool)
    idx = np.flatnonzero(rm.ravel())
    if len(idx) == 0:
        return image.clone()
    pos = np.full(h * w, -1)
    pos[idx] = np.arange(len(idx))
    ys, xs = np.divmod(idx, w)
    values = image.detach().cpu().double().numpy().reshape(c, -1)
    rows, cols, vals = [np.arange(len(idx))], [np.arange(len(idx))], [np.zeros(len(idx))]
    rhs = np.zeros((len(idx), c))
    total = np.zeros(len(idx))
    for dy, dx, wt in ((-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
                       (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)):
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        j = ny[ok] * w + nx[ok]
        total[ok] += wt
        unknown = pos[j] >= 0
        i_ok = np.flatnonzero(ok)
        rows.append(i_ok[unknown])
        cols.append(pos[j[unknown]])
        vals.append(np.full(int(unknown.sum()), -wt))
        np.add.at(rhs, i_ok[~unknown], wt * values[:, j[~unknown]].T)
    eps = 1e-6  # a hole with no known pixel around it falls back to the image mean, not a singular system
    vals[0] = total + eps
    rhs += eps * values.mean(1)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(len(idx), len(idx))).tocsc()
    solved = spsolve(a, rhs).reshape(len(idx), c)
    out = image.detach().clone()
    filled = torch.from_numpy(solved.T).to(out.dtype).to(out.device)
    if noise > 0:
        filled = filled + noise * torch.randn(filled.shape, generator=generator).to(out.device, out.dtype)
    flat = out.view(c, -1)
    flat[:, torch.from_numpy(idx).to(out.device)] = filled
    return out


def road(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, *, fractions: Sequence[float] = ROAD_FRACTIONS,
         noise: float = 0.01, seed: int = 0, batch_size: int = 64) -> dict[str, Tensor]:
    """Per image: the target probability after removing each fraction of pixels most-relevant-first
    (``morf_curve``) and least-relevant-first (``lerf_curve``), imputed; their means and ``road``."""
    n, _, h, w = x.shape
    order = pixel_order(maps, seed)
    g = torch.Generator().manual_seed(seed)
    curves = {"morf": torch.empty(n, len(fractions)), "lerf": torch.empty(n, len(fractions))}
    for i in range(n):
        for kind in ("morf", "lerf"):
            batch = []
            for f in fractions:
                k = int(round(f * h * w))
                chosen = order[i, :k] if kind == "morf" else order[i, h * w - k:]
                removed = torch.zeros(h * w, dtype=torch.bool)
                removed[chosen] = True
                batch.append(noisy_linear_impute(x[i], removed.view(h, w), noise=noise, generator=g))
            curves[kind][i] = _probs(model, torch.stack(batch), targets[i].expand(len(fractions)), batch_size)
    morf, lerf = curves["morf"].mean(1), curves["lerf"].mean(1)
    return {"morf_curve": curves["morf"], "lerf_curve": curves["lerf"], "road_morf": morf, "road_lerf": lerf,
            "road": lerf - morf}


def average_drop(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, *,
                 batch_size: int = 64) -> dict[str, Tensor]:
    """Per image: ``average_drop`` max(0, p - p') / p and ``confidence_increase`` (1.0 when p' > p), where
    p' is the target's probability on ``x`` times its map rescaled to [0, 1] (0 is the data mean after
    normalisation), as torch-cam's ClassificationMetric computes them."""
    m = normalize_maps(maps).unsqueeze(1).to(x.device, x.dtype)
    p, q = _probs(model, x, targets, batch_size), _probs(model, x * m, targets, batch_size)
    return {"average_drop": (p - q).clamp(min=0) / (p + 1e-7), "confidence_increase": (q > p).double()}


def score_maps(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, *, steps: int = 16, seed: int = 0,
               batch_size: int = 64) -> dict[str, Tensor]:
    """Every metric of :data:`METRICS` per image (and the curves), for maps at the input size."""
    model.eval()
    di = deletion_insertion(model, x, maps, targets, steps=steps, batch_size=batch_size, seed=seed)
    r = road(model, x, maps, targets, seed=seed, batch_size=batch_size)
    return {**di, **r, **average_drop(model, x, maps, targets, batch_size=batch_size)}


def bootstrap_mean(values: np.ndarray, *, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of the mean of ``values`` over ``n`` seeded resamples."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1) if n and len(v) > 1 else np.array([v.mean()] * 2)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(scores: Mapping[str, Mapping[str, Tensor]], baselines: Sequence[str] = ("random", "centre"), *,
            n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per method and metric: the mean with its bootstrap 95 % interval, and against each baseline the
    paired difference (better-is-positive) with its interval and the verdict "beats" when the interval
    lies above 0, "loses" when below, else "tie". ``scores``: name -> metric -> (N,) per-image values."""
    table: dict[str, Any] = {}
    for name, metrics in scores.items():
        row: dict[str, Any] = {}
        for metric in METRICS:
            values = metrics[metric].double().numpy()
            mean, lo, hi = bootstrap_mean(values, n=n, seed=seed)
            row[metric] = {"mean": mean, "ci": [lo, hi], "vs": {}}
            if name in baselines:
                continue
            sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
            for base in baselines:
                if base not in scores:
                    continue
                diff = sign * (values - scores[base][metric].double().numpy())
                d, dlo, dhi = bootstrap_mean(diff, n=n, seed=seed)
                verdict = "beats" if dlo > 0 else "loses" if dhi < 0 else "tie"
                row[metric]["vs"][base] = {"better_by": d, "ci": [dlo, dhi], "verdict": verdict}
        table[name] = row
    return table
