"""Self-supervised views: each method's recipe, batched, seeded (a resumed run draws the same views)."""

from dataclasses import replace

import pytest
import torch

from resnetlab.data.views import METHOD_VIEWS, ViewRecipe, make_views, method_views, view_seed

NONE = ViewRecipe(crop_scale=(1.0, 1.0), flip=0.0, jitter=(0, 0, 0, 0), jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def _batch(n=8, c=3, s=32):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(0))


def test_views_are_seeded_and_differ_per_seed():
    x = _batch()
    a = make_views(x, METHOD_VIEWS["simclr"][0], 32, seed=view_seed(0, 1, 5, 0))
    b = make_views(x, METHOD_VIEWS["simclr"][0], 32, seed=view_seed(0, 1, 5, 0))
    c = make_views(x, METHOD_VIEWS["simclr"][0], 32, seed=view_seed(0, 1, 5, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    # per-image parameters: the same image twice in a batch gets two different views
    twin = make_views(torch.cat([x[:1], x[:1]]), METHOD_VIEWS["simclr"][0], 32, seed=1)
    assert not torch.allclose(twin[0], twin[1])
    seeds = {view_seed(s, e, t, v, r) for s in (0, 1) for e in range(3) for t in range(50) for v in (0, 1)
             for r in (0, 1)}
    assert len(seeds) == 2 * 3 * 50 * 2 * 2


def test_each_op_does_what_it_says():
    x = _batch()
    assert torch.allclose(make_views(x, NONE, 32, 0), x, atol=1e-5)  # nothing asked: the image itself
    flipped = make_views(x, replace(NONE, flip=1.0), 32, 0)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    gray = make_views(x, replace(NONE, gray_p=1.0), 32, 0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    sol = make_views(x, replace(NONE, solarize_p=1.0), 32, 0)
    assert torch.allclose(sol, torch.where(x >= 0.5, 1 - x, x), atol=1e-5)
    crop = make_views(_batch(s=64), replace(NONE, crop_scale=(0.1, 0.1)), 24, 0)
    assert crop.shape == (8, 3, 24, 24)


def test_method_recipes_follow_their_papers():
    v1, v2 = METHOD_VIEWS["byol"]  # Grill et al. 2020, table 6: asymmetric blur and solarization
    assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (1.0, 0.1, 0.0, 0.2)
    assert METHOD_VIEWS["simsiam"][0].crop_scale == (0.2, 1.0)
    assert all(v.blur_p == 0 for v in method_views("byol", 32))  # no blur on 32 px images (lightly's CIFAR-10)
    assert method_views("byol", 96)[0].blur_p == 1.0
    with pytest.raises(ValueError, match="method must be one of simclr, mocov2, byol, simsiam, got 'swav'"):
        method_views("swav", 32)


def test_grayscale_images_and_bad_input():
    g = _batch(c=1)
    v = make_views(g, METHOD_VIEWS["simclr"][0], 32, 3)
    assert v.shape == g.shape and not torch.allclose(v, g)
    with pytest.raises(ValueError, match="images of 16x16 px are smaller than the 32 px crop"):
        make_views(_batch(s=16), METHOD_VIEWS["simclr"][0], 32, 0)
    with pytest.raises(ValueError, match=r"got shape \(8, 2, 32, 32\)"):
        make_views(_batch(c=2), METHOD_VIEWS["simclr"][0], 32, 0)
