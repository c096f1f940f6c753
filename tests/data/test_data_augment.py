"""BatchAugment, mix_batch and folder_transform: shapes, exact geometry, and seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import MEAN_STD, BatchAugment, folder_transform, mix_batch

MEAN, STD = MEAN_STD["cifar"]


def _batch(n=16, h=8, w=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, c), generator=g, dtype=torch.uint8)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _normalise(images, mean, std):
    x = images.permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_eval_is_exact_normalisation():
    images = _batch()
    out = BatchAugment(train=False, mean=MEAN, std=STD)(images)
    assert out.shape == (16, 3, 8, 8) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, _normalise(images, MEAN, STD))


def test_train_without_crop_or_flip_is_identity():
    images = _batch()
    out = BatchAugment(train=True, mean=MEAN, std=STD, crop_pad=0, flip=False)(images, _gen(0))
    torch.testing.assert_close(out, _normalise(images, MEAN, STD))


def test_flip_gives_the_image_or_its_mirror_per_sample():
    images = _batch(n=64)
    out = BatchAugment(train=True, mean=(0.0,), std=(1.0,), crop_pad=0)(images, _gen(1))
    ref = images.permute(0, 3, 1, 2).float() / 255
    same = (out == ref).flatten(1).all(1)
    mirrored = (out == ref.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_crop_is_a_window_of_the_zero_padded_image():
    n, h, w, p = 32, 6, 7, 2
    # every pixel value encodes its position (1..42), so a window is recognisable; padding is 0
    pos = (torch.arange(h * w).reshape(h, w) + 1).to(torch.uint8)
    images = pos[None, :, :, None].expand(n, h, w, 1).contiguous()
    out = BatchAugment(train=True, mean=(0.0,), std=(1.0,), crop_pad=p, flip=False)(images, _gen(2))
    assert out.shape == (n, 1, h, w)
    padded = torch.nn.functional.pad(pos.float() / 255, (p, p, p, p))
    offsets = set()
    for img in out[:, 0]:
        hits = [(y, x) for y in range(2 * p + 1) for x in range(2 * p + 1)
                if torch.equal(img, padded[y : y + h, x : x + w])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets differ per sample


def test_same_generator_state_same_batch_other_seed_other_batch():
    images = _batch(n=32)
    aug = BatchAugment(train=True, mean=MEAN, std=STD, crop_pad=4, cutout=4)
    a, b, c = aug(images, _gen(7)), aug(images, _gen(7)), aug(images, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    aug(images, _gen(7))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not touched


def test_cutout_zeroes_one_square_per_sample():
    images = torch.full((32, 12, 12, 3), 255, dtype=torch.uint8)
    out = BatchAugment(train=True, mean=(0.0,) * 3, std=(1.0,) * 3, crop_pad=0, flip=False, cutout=4)(images, _gen(3))
    zero = out[:, 0] == 0
    assert torch.equal(zero, (out == 0).all(1))  # all channels together
    for m in zero:
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert 0 < len(ys) <= 16
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a full rectangle
    assert (zero.flatten(1).sum(1) == 16).any()


@pytest.mark.parametrize("name", ["trivial", "randaugment"])
def test_auto_augment_is_seeded_by_the_generator(name):
    images = _batch(n=8, h=16, w=16)
    aug = BatchAugment(train=True, mean=MEAN, std=STD, crop_pad=0, flip=False, auto_augment=name)
    a, b = aug(images, _gen(5)), aug(images, _gen(5))
    assert torch.equal(a, b)
    assert any(not torch.equal(a, aug(images, _gen(s))) for s in range(6, 9))


def test_resize_gray_and_bad_inputs():
    out = BatchAugment(train=True, mean=MEAN, std=STD, image_size=24)(_batch(n=4, c=1), _gen(0))
    assert out.shape == (4, 1, 24, 24)  # RGB statistics are averaged for one channel
    with pytest.raises(ValueError, match=r"uint8 tensor \(N, H, W, C\), got torch.float32"):
        BatchAugment(train=False, mean=MEAN, std=STD)(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="auto_augment must be one of"):
        BatchAugment(train=True, mean=MEAN, std=STD, auto_augment="autoaugment")
    with pytest.raises(ValueError, match="mean and std need"):
        BatchAugment(train=True, mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))


def test_mix_batch_targets_and_determinism():
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 5
    before = x.clone()
    kw = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "label_smoothing": 0.1}
    xa, ta = mix_batch(x, y, 5, generator=_gen(4), **kw)
    xb, tb = mix_batch(x, y, 5, generator=_gen(4), **kw)
    assert torch.equal(xa, xb) and torch.equal(ta, tb) and ta.shape == (16, 5)
    torch.testing.assert_close(ta.sum(1), torch.ones(16))
    assert not torch.equal(xa, x) and torch.equal(x, before)  # the input is not changed in place

    x0, t0 = mix_batch(x, y, 5, mixup_alpha=0, cutmix_alpha=0, label_smoothing=0.1, generator=_gen(0))
    assert x0 is x and t0.max() == pytest.approx(0.92) and t0.min() == pytest.approx(0.02)


def test_mixup_is_a_convex_combination_and_cutmix_weights_by_area():
    x, y = torch.rand(8, 1, 10, 10), torch.arange(8)
    xm, tm = mix_batch(x, y, 8, mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0, generator=_gen(1))
    diag = tm.diagonal()  # the weight of each sample's own label
    partner = (tm - torch.diag(diag)).argmax(1)
    torch.testing.assert_close(xm, diag[:, None, None, None] * x + (1 - diag)[:, None, None, None] * x[partner])
    xc, tc = mix_batch(x, y, 8, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, generator=_gen(2))
    kept = (xc == x).flatten(1).float().mean(1)  # share of each image left in place
    torch.testing.assert_close(tc.diagonal(), kept)


def test_folder_transform_presets():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    for preset in ("imagenet", "cifar"):
        for train in (True, False):
            t = folder_transform(preset, train=train, image_size=32, mean=MEAN, std=STD, auto_augment="trivial")
            out = t(img)
            assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    gray = folder_transform("cifar", train=False, image_size=32, mean=MEAN, std=STD, in_chans=1)(img)
    assert gray.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="preset must be"):
        folder_transform("mnist", train=True, image_size=32, mean=MEAN, std=STD)


def _streamed(img, seeds, **kw):
    t = folder_transform("cifar", train=True, image_size=img.size[0], mean=(0.0,) * 3, std=(1.0,) * 3, **kw)
    out = []
    for s in seeds:
        torch.manual_seed(s)  # what the streamed batches do per image
        out.append(t(img))
    return out


def test_streamed_crop_pad_zero_keeps_the_image_modulo_flip():
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ref = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    outs = _streamed(Image.fromarray(pixels), range(16), crop_pad=0)
    same = [torch.allclose(o, ref) for o in outs]
    mirrored = [torch.allclose(o, ref.flip(-1)) for o in outs]
    assert all(a or b for a, b in zip(same, mirrored)) and any(same) and any(mirrored)
    shifted = _streamed(Image.fromarray(pixels), range(16), crop_pad=3)
    assert any(not (torch.allclose(o, ref) or torch.allclose(o, ref.flip(-1))) for o in shifted)
    assert any((o == 0).all(0).any() for o in shifted)  # zero padding shows at an edge


def test_streamed_cutout_zeroes_a_square_of_that_side():
    img = Image.new("RGB", (12, 12), (255, 255, 255))
    outs = _streamed(img, range(16), crop_pad=0, cutout=4)
    for out in outs:
        zero = (out == 0).all(0)
        assert torch.equal(zero, (out == 0).any(0))  # all channels together
        ys, xs = torch.nonzero(zero, as_tuple=True)
        assert 0 < len(ys) <= 16 and len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert any(int((o == 0).all(0).sum()) == 16 for o in outs)  # a whole 4x4 square away from the border
    assert all(not (o == 0).any() for o in _streamed(img, range(4), crop_pad=0))  # no cutout: none zeroed
    with pytest.raises(ValueError, match="crop_pad and cutout must be >= 0"):
        folder_transform("cifar", train=True, image_size=8, mean=MEAN, std=STD, crop_pad=-1)
