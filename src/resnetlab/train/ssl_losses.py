"""Losses, heads and the momentum update of the self-supervised methods (SimCLR, MoCo v2, BYOL, SimSiam).

Written here rather than taken from lightly: lightly's losses are ~20 lines each but its install pulls
PyTorch Lightning, Hydra and aiohttp into every user's environment; tests/test_ssl_losses.py checks these
against the papers' definitions written out term by term.

Multi-process: contrastive losses compare each image with the negatives of *every* process (SimCLR's
large-batch negatives, Chen et al. 2020 §2; MoCo's queue takes every process's keys), through
``torch.distributed.nn.all_gather``, which carries the gradient back to the process that made each row.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["in_fp32", "nt_xent", "info_nce", "negative_cosine", "gather", "mlp_head", "momentum_update", "KeyQueue"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(x: torch.Tensor, *, grad: bool) -> torch.Tensor:
    """Every process's rows of ``x`` concatenated in rank order (this process's own rows keep their gradient
    either way; ``grad=True`` also sends gradients to the other processes' rows)."""
    _, world = _world()
    if world == 1:
        return x
    if grad:
        import torch.distributed.nn.functional as dnn

        return torch.cat(dnn.all_gather(x))
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


def in_fp32(loss):
    """Run ``loss`` in FP32 with autocast off: under bf16 autocast its similarity matmul would round each cosine
    to 8 mantissa bits, and at temperature 0.1-0.5 a logit would be off by up to ~0.04 (lightly and the papers'
    code compute these losses in FP32 too)."""

    @functools.wraps(loss)
    def wrapped(*tensors: torch.Tensor, **kw) -> torch.Tensor:
        with torch.autocast(tensors[0].device.type, enabled=False):
            return loss(*(t.float() if isinstance(t, torch.Tensor) else t for t in tensors), **kw)

    return wrapped


@in_fp32
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020, eq. 1), averaged over the 2N
    anchors of this process: each view's positive is the other view of its image, its negatives the other
    2(M - 1) views of the M images of all processes."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    rank, _ = _world()
    a1, a2 = gather(z1, grad=True), gather(z2, grad=True)
    n, m = z1.shape[0], a1.shape[0]
    logits = torch.cat([z1, z2]) @ torch.cat([a1, a2]).T / temperature  # (2N, 2M)
    own = torch.arange(n, device=z1.device) + rank * n
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, torch.cat([own, own + m])] = float("-inf")  # an anchor is not its own negative
    return F.cross_entropy(logits, torch.cat([own + m, own]))


@in_fp32
def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, eq. 1; temperature 0.2 from MoCo v2): query q's positive is its key k
    (from the momentum encoder, no gradient), its negatives the queue's keys."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue.detach().T
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@in_fp32
def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, stopgrad(z)), the mean over the batch (SimSiam, Chen & He 2021, eq. 1; BYOL's 2 - 2cos up to
    an affine map, Grill et al. 2020 eq. 2)."""
    return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(1).mean()


def mlp_head(dims: tuple[int, ...], *, bn: bool = True, last_bn: bool = False) -> nn.Sequential:
    """Linear layers of widths ``dims`` with BatchNorm (optional) and ReLU between them; ``last_bn``: a
    BatchNorm after the last (SimSiam's projector)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=not ((bn and not last) or (last and last_bn))))
        if not last:
            layers += [nn.BatchNorm1d(b)] if bn else []
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(b))
    return nn.Sequential(*layers)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """target <- m target + (1 - m) online over the parameters (MoCo's key encoder, BYOL's target); the target's
    BatchNorm statistics stay its own, as in MoCo's and lightly's code."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(m).add_(o.detach(), alpha=1 - m)


class KeyQueue(nn.Module):
    """MoCo's queue of past keys (size x dim, L2-normalised), kept as buffers so checkpoints carry it and a
    resumed run sees the same negatives; every process enqueues all processes' keys."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be at least 1, got {size!r}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=torch.Generator().manual_seed(0)),
                                                 dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, k: torch.Tensor) -> None:
        # keys from a bf16 autocast step are bf16; the queue stays FP32. More keys than room: the newest
        k = F.normalize(gather(k.to(self.keys.dtype), grad=False), dim=1)[-self.keys.shape[0]:]
        size, n = self.keys.shape[0], k.shape[0]
        idx = (self.ptr + torch.arange(n, device=k.device)) % size
        self.keys[idx] = k
        self.ptr.copy_((self.ptr + n) % size)
