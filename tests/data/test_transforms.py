"""Device-side batched transforms (``lt_lightning.data.transforms``)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lt_lightning.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    DeviceAugmentation,
    normalize,
    random_crop_with_padding,
    random_horizontal_flip,
    to_float,
)


def _uint8_batch(b: int = 6, c: int = 3, h: int = 5, w: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (b, c, h, w), generator=g, dtype=torch.uint8)  # no zeros: padding is visible


# ---------------------------------------------------------------------------------------------- random crop
@pytest.mark.parametrize("padding", [1, 2, 4])
def test_crop_equals_pad_then_slice_loop(padding: int) -> None:
    x = _uint8_batch()
    b, _, h, w = x.shape
    out = random_crop_with_padding(x, padding, generator=torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)  # the documented draws: all row offsets, then all column offsets
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    expected = torch.empty_like(x)
    for i in range(b):
        padded = torch.zeros(x.shape[1], h + 2 * padding, w + 2 * padding, dtype=x.dtype)
        padded[:, padding : padding + h, padding : padding + w] = x[i]
        expected[i] = padded[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, expected)


def test_crop_every_sample_is_a_window_of_the_padded_image_and_offsets_cover_the_range() -> None:
    padding, b, h, w = 2, 300, 4, 4
    x = torch.arange(1, b * h * w + 1, dtype=torch.int64).reshape(b, 1, h, w)  # distinct values: windows identifiable
    out = random_crop_with_padding(x, padding, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (padding,) * 4)
    seen_dy, seen_dx = set(), set()
    for i in range(b):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert len(matches) == 1
        seen_dy.add(matches[0][0])
        seen_dx.add(matches[0][1])
    assert seen_dy == seen_dx == set(range(2 * padding + 1))


def test_crop_padding_zero_is_identity_and_bad_input() -> None:
    x = _uint8_batch()
    assert random_crop_with_padding(x, 0) is x
    empty = x[:0]
    assert random_crop_with_padding(empty, 4).shape == empty.shape
    with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
        random_crop_with_padding(x, -1)
    with pytest.raises(ValueError, match=r"x must be a \[B, C, H, W\] batch"):
        random_crop_with_padding(x[0], 4)


def test_crop_follows_global_rng_without_generator() -> None:
    x = _uint8_batch()
    torch.manual_seed(11)
    a = random_crop_with_padding(x, 3)
    torch.manual_seed(11)
    b = random_crop_with_padding(x, 3)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- flip
def test_flip_p0_identity_p1_mirror() -> None:
    x = _uint8_batch()
    assert torch.equal(random_horizontal_flip(x, 0.0), x)
    flipped = random_horizontal_flip(x, 1.0)
    assert torch.equal(flipped[:, :, :, 0], x[:, :, :, -1])
    for i in range(x.shape[0]):
        for j in range(x.shape[3]):
            assert torch.equal(flipped[i, :, :, j], x[i, :, :, x.shape[3] - 1 - j])


def test_flip_half_per_sample_with_generator() -> None:
    x = _uint8_batch(b=40)
    out = random_horizontal_flip(x, 0.5, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(40, generator=torch.Generator().manual_seed(2)) < 0.5
    for i in range(40):
        assert torch.equal(out[i], x[i].flip(-1) if mask[i] else x[i])
    assert 0 < int(mask.sum()) < 40


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_flip_bad_probability(p: float) -> None:
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        random_horizontal_flip(_uint8_batch(), p)


# ---------------------------------------------------------------------------------------------- to_float / normalize
def test_to_float() -> None:
    x = torch.tensor([0, 51, 128, 255], dtype=torch.uint8).reshape(1, 1, 2, 2)
    y = to_float(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 0.2, 128 / 255, 1.0]))
    assert x.dtype == torch.uint8 and int(x[0, 0, 1, 1]) == 255  # input untouched
    f = torch.rand(1, 1, 2, 2)
    assert to_float(f) is f
    with pytest.raises(ValueError, match="dtype torch.int32"):
        to_float(x.to(torch.int32))


def test_normalize_by_hand() -> None:
    x = torch.tensor([[[[0.5, 1.0]], [[0.0, 0.2]]]])  # [1, 2, 1, 2]
    y = normalize(x, mean=(0.25, 0.1), std=(0.5, 0.2))
    # channel 0: (0.5 - 0.25) / 0.5 = 0.5, (1.0 - 0.25) / 0.5 = 1.5 ; channel 1: (0 - 0.1) / 0.2 = -0.5, 0.5
    assert torch.allclose(y, torch.tensor([[[[0.5, 1.5]], [[-0.5, 0.5]]]]))
    with pytest.raises(ValueError, match="one entry per channel"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(x, (0.5, 0.5), (0.5, 0.0))


# ---------------------------------------------------------------------------------------------- pipeline
def test_device_augmentation_eval_is_only_normalisation() -> None:
    x = _uint8_batch(c=3)
    aug = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=4, flip=True)
    mean = torch.tensor(CIFAR_MEAN)[None, :, None, None]
    std = torch.tensor(CIFAR_STD)[None, :, None, None]
    expected = (x.float() / 255.0 - mean) / std
    assert torch.allclose(aug(x), expected, atol=1e-6)
    assert torch.allclose(aug(x, train=False), expected, atol=1e-6)
    assert torch.allclose(aug(x.float() / 255.0), expected, atol=1e-6)  # floats in [0, 1] accepted
    # train with nothing to augment is the same as eval
    plain = DeviceAugmentation(CIFAR_MEAN, CIFAR_STD, padding=0, flip=False)
    assert torch.allclose(plain(x, train=True), expected, atol=1e-6)


def test_device_augmentation_train_is_crop_then_flip_then_normalise() -> None:
    x = _uint8_batch(b=16)
    aug = DeviceAugmentation((0.5,) * 3, (0.25,) * 3, padding=2, flip=True)
    out = aug(x, train=True, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    manual = random_horizontal_flip(random_crop_with_padding(x, 2, g), 0.5, g)
    assert torch.allclose(out, (manual.float() / 255.0 - 0.5) / 0.25)
    assert not torch.allclose(out, aug(x))  # something was augmented
    assert "padding=2" in repr(aug) and "flip=True" in repr(aug)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": (0.5, 0.5), "std": (0.5,)}, "same length"),
        ({"mean": (0.5,), "std": (0.0,)}, "std must be positive"),
        ({"mean": (0.5,), "std": (0.5,), "padding": -1}, "padding must be >= 0"),
    ],
)
def test_device_augmentation_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DeviceAugmentation(**kwargs)
