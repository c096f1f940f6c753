"""Self-supervised losses against their papers' definitions written out term by term, and across processes."""

import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from resnetlab.train.ssl_losses import KeyQueue, info_nce, mlp_head, momentum_update, negative_cosine, nt_xent


def _naive_nt_xent(z1, z2, t):
    """Chen et al. 2020, eq. 1: l(i, j) = -log exp(sim(i, j)/t) / sum_{k != i} exp(sim(i, k)/t), averaged over 2N."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / den)
    return total / (2 * n)


def test_nt_xent_is_simclrs_loss():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    for t in (0.5, 0.1):
        assert float(nt_xent(z1, z2, t)) == pytest.approx(_naive_nt_xent(z1, z2, t), rel=1e-5)
    # two identical views of well-separated images: close to the minimum, log(1) = 0 as t -> 0
    e = torch.eye(6, 8)
    assert float(nt_xent(e, e, 0.05)) < 1e-6 < float(nt_xent(z1, z2, 0.05))


def test_info_nce_and_negative_cosine():
    g = torch.Generator().manual_seed(1)
    q, k, queue = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(7, 5, generator=g)
    queue = F.normalize(queue, dim=1)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    want = 0.0
    for i in range(4):  # He et al. 2020, eq. 1
        pos = math.exp(float(qn[i] @ kn[i]) / 0.2)
        want += -math.log(pos / (pos + sum(math.exp(float(qn[i] @ c) / 0.2) for c in queue)))
    assert float(info_nce(q, k, queue, 0.2)) == pytest.approx(want / 4, rel=1e-5)
    p = torch.randn(4, 5, generator=g, requires_grad=True)
    loss = negative_cosine(p, k)
    assert float(loss.detach()) == pytest.approx(-float(F.cosine_similarity(p, k).mean().detach()), rel=1e-6)
    kk = k.clone().requires_grad_(True)
    negative_cosine(p, kk).backward()
    assert kk.grad is None and p.grad is not None  # stop-gradient on the target branch


def test_losses_run_in_fp32_under_bf16_autocast():
    """Projections come out of a bf16 autocast step as bf16; the losses must still be computed in FP32 (a bf16
    similarity matmul rounds each cosine to 8 mantissa bits: at t = 0.1 the loss moves by ~1e-2)."""
    g = torch.Generator().manual_seed(2)
    z1, z2 = (torch.randn(16, 32, generator=g).bfloat16() for _ in range(2))
    queue = F.normalize(torch.randn(64, 32, generator=g), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [nt_xent(z1, z2, 0.1), info_nce(z1, z2, queue, 0.2), negative_cosine(z1, z2)]
    want = [nt_xent(z1.float(), z2.float(), 0.1), info_nce(z1.float(), z2.float(), queue, 0.2),
            negative_cosine(z1.float(), z2.float())]
    assert all(a.dtype == torch.float32 for a in got)
    assert [float(a) for a in got] == pytest.approx([float(b) for b in want], rel=1e-6)


def test_queue_wraps_and_keeps_the_newest():
    qu = KeyQueue(5, 3)
    a = torch.randn(3, 3)
    qu.push(a)
    assert torch.allclose(qu.keys[:3], F.normalize(a, dim=1)) and int(qu.ptr) == 3
    b = torch.randn(4, 3)
    qu.push(b)  # 2 at the end, 2 wrapped to the front
    assert torch.allclose(qu.keys[3:], F.normalize(b[:2], dim=1))
    assert torch.allclose(qu.keys[:2], F.normalize(b[2:], dim=1)) and int(qu.ptr) == 2
    c = torch.randn(9, 3)
    qu.push(c)
    assert {tuple(r) for r in qu.keys.round(decimals=5).tolist()} == \
        {tuple(r) for r in F.normalize(c[-5:], dim=1).round(decimals=5).tolist()}
    assert set(dict(qu.named_buffers())) == {"keys", "ptr"}  # checkpointed with the model
    with pytest.raises(ValueError, match="queue size must be at least 1, got 0"):
        KeyQueue(0, 3)


def test_heads_and_momentum():
    h = mlp_head((512, 4096, 256))  # BYOL's projector (Grill et al. 2020, §3.3)
    assert [type(m).__name__ for m in h] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert h(torch.randn(4, 512)).shape == (4, 256)
    s = mlp_head((512, 512, 512, 128), last_bn=True)  # SimSiam's projector: BN on its output too
    assert type(s[-1]).__name__ == "BatchNorm1d" and s[-2].bias is None
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    momentum_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * wa + 0.1 * wb)


def _ddp_worker(rank, world, path, z1, z2, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    n = len(z1) // world
    a = z1[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    b = z2[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = nt_xent(a, b, 0.5)
    # each process backpropagates its own loss; the gather's backward sums every process's gradient into the
    # rows this process made, and DDP's averaging of parameter gradients then divides by the world size
    loss.backward()
    out[rank] = (float(loss.detach()), a.grad / world, b.grad / world)
    qu = KeyQueue(8, 4)
    qu.push(z1[rank * n:(rank + 1) * n, :4])
    out[f"queue{rank}"] = qu.keys.clone()
    dist.destroy_process_group()


def test_contrastive_negatives_come_from_every_process(tmp_path):
    """Two processes of 4 images each give the loss and gradients of one process with all 8: the negatives
    are gathered with their gradients; the MoCo queue holds both processes' keys, the same on each."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rdv"), z1, z2, out), nprocs=2, join=True)
        out = dict(out)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full = nt_xent(a, b, 0.5)
    full.backward()
    assert (out[0][0] + out[1][0]) / 2 == pytest.approx(float(full), rel=1e-5)
    assert torch.allclose(torch.cat([out[0][1], out[1][1]]), a.grad, atol=1e-6)
    assert torch.allclose(torch.cat([out[0][2], out[1][2]]), b.grad, atol=1e-6)
    assert torch.equal(out["queue0"], out["queue1"])
    assert torch.allclose(out["queue0"][:8], F.normalize(z1[:, :4], dim=1), atol=1e-6)
